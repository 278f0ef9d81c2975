-- The rollup `sp_keyvault_read_rollup`: the Key Vault reads of sp_keyvault_read_from_new_source
-- (secrets, keys and certificates read by an identified caller from an address) per (caller object
-- id, vault, address, ASN) and hour or day — the rule's history (was the caller's address, or its
-- ASN, seen reading the vault in the ten days before its window) and its backtest's spans of reads
-- per day. This is its source: one row per read, with `ts`, `day`, the keys and the columns the
-- rule reports: the rule reads the reads it reports from it (`sp_keyvault_read_rollup_events`), so
-- the summaries and the rows reported are one definition. `src/rollups.rs` says how it is stored
-- and read. Changing this text makes every stored day stale (the fingerprint hashes it).
SELECT ts, day, caller_object_id, lower(resource_id) AS vault, caller_ip, source_asn, id, caller_app_id, caller_upn,
       source_as_org, resource_name, operation_name, status_code
FROM resource_logs
WHERE lower(resource_provider) = 'microsoft.keyvault'
  AND operation_name IN ('SecretGet', 'SecretList', 'SecretListVersions', 'SecretBackup', 'KeyGet', 'KeyList',
                         'KeyListVersions', 'KeyDecrypt', 'KeyUnwrap', 'KeySign', 'KeyBackup', 'CertificateGet',
                         'CertificateList', 'CertificateListVersions', 'CertificateBackup')
  AND caller_object_id IS NOT NULL AND caller_ip IS NOT NULL
