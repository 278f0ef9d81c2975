/*
id = "sp_keyvault_read_from_new_source"
name = "Workload identity reads Key Vault secrets, keys or certificates from a new address"
description = """
A managed identity or service principal (the object id in the token Key Vault logs) read secrets,
keys or certificates of a vault from an address it never used for that vault in the last 10 days.
Seed 002 correlates a VM's managed identity with the vault's AuditEvent log by the token's object-id
claim; a stolen token or credential used from elsewhere shows up as a new address for the vault."""
type = "new_terms"
severity = "medium"
risk_score = 47
interval = "1h"
lookback = "1h"
history_window = "10d"
new_terms_fields = ["caller_object_id", "vault", "caller_ip"]
requires = ["asn"]  # severity high needs the addresses' ASNs
tables = ["resource_logs"]
alert_key = ["caller_object_id", "vault", "caller_ip", "ts"]
false_positives = ["A workload moved to a new host, subnet or region; a new private endpoint for the vault."]
references = ["https://learn.microsoft.com/en-us/azure/key-vault/general/logging"]
note = """
High when the address's ASN is new too for that principal and vault. Reads: SecretGet, SecretList,
SecretListVersions, SecretBackup, KeyGet, KeyList, KeyListVersions, KeyDecrypt, KeyUnwrap, KeySign,
KeyBackup, CertificateGet, CertificateList, CertificateListVersions, CertificateBackup; failed
requests (HTTP 4xx/5xx) count too (a probe with a stolen token fails as often as it succeeds).
An address that comes back after more than 10 days unused is new again and alerts again (the
alert key holds the first read's time). Triage: pivot on the principal (wisp pivot sp <object id>): its sign-ins around the read, from
which address, and what else the token touched."""

[mitre]
tactics = ["TA0006 Credential Access"]
techniques = ["T1555.006 Credentials from Password Stores: Cloud Secrets Management Stores"]
*/
WITH reads AS (
    SELECT ts, id, caller_object_id, caller_app_id, caller_upn, caller_ip, source_asn, source_as_org,
           lower(resource_id) AS vault, resource_name, operation_name, status_code, result_type
    FROM resource_logs
    WHERE lower(resource_provider) = 'microsoft.keyvault'
      AND operation_name IN ('SecretGet', 'SecretList', 'SecretListVersions', 'SecretBackup', 'KeyGet', 'KeyList',
                             'KeyListVersions', 'KeyDecrypt', 'KeyUnwrap', 'KeySign', 'KeyBackup', 'CertificateGet',
                             'CertificateList', 'CertificateListVersions', 'CertificateBackup')
      AND caller_object_id IS NOT NULL AND caller_ip IS NOT NULL
      AND ts >= $history_start AND ts <= $window_end
      AND day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
new_terms AS (
    SELECT caller_object_id, vault, caller_ip
    FROM reads
    GROUP BY caller_object_id, vault, caller_ip
    HAVING min(ts) > $window_start
),
known_asn AS (
    SELECT DISTINCT caller_object_id, vault, source_asn FROM reads WHERE ts <= $window_start AND source_asn IS NOT NULL
),
in_window AS (
    -- The new keys first: DataFusion then hashes the few new keys and streams the reads past them
    -- (with the reads first it planned a semi join hashing every read of the history).
    SELECT r.*
    FROM new_terms n JOIN reads r
      ON r.caller_object_id = n.caller_object_id AND r.vault = n.vault AND r.caller_ip = n.caller_ip
    WHERE r.ts > $window_start
)
SELECT min(w.ts) AS ts, w.caller_object_id, w.caller_object_id AS service_principal_id, max(w.caller_app_id) AS app_id,
       max(w.caller_upn) AS caller_upn,
       w.vault, max(w.resource_name) AS vault_name, w.caller_ip AS source_ip, w.caller_ip,
       max(w.source_asn) AS source_asn, max(w.source_as_org) AS source_as_org,
       count(*) AS reads, array_sort(array_agg(DISTINCT w.operation_name)) AS operations,
       array_sort(array_agg(DISTINCT w.id)) AS objects,
       sum(CASE WHEN coalesce(w.status_code, 200) >= 400 THEN 1 ELSE 0 END) AS failed_reads,
       max(w.source_asn) IS NOT NULL AND max(k.source_asn) IS NULL AS new_asn,
       CASE WHEN max(w.source_asn) IS NOT NULL AND max(k.source_asn) IS NULL THEN 'high' ELSE 'medium' END AS severity
FROM in_window w
LEFT JOIN known_asn k ON k.caller_object_id = w.caller_object_id AND k.vault = w.vault AND k.source_asn = w.source_asn
GROUP BY w.caller_object_id, w.vault, w.caller_ip

-- @backtest
-- Every hourly run in [$range_start, $range_end] in one pass. With the look-back equal to the
-- interval (as this rule has it), a read belongs to exactly one run T: the one with
-- T-1h < ts <= T. Its (principal, vault, address) is new to run T when the key's latest read in
-- an earlier run's bucket is older than T-10d (or there is none); likewise the ASN is known when
-- its latest earlier read is at or after T-10d.
WITH reads AS (
    SELECT ts, id, caller_object_id, caller_app_id, caller_upn, caller_ip, source_asn, source_as_org,
           lower(resource_id) AS vault, resource_name, operation_name, status_code,
           ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us
    FROM resource_logs
    WHERE lower(resource_provider) = 'microsoft.keyvault'
      AND operation_name IN ('SecretGet', 'SecretList', 'SecretListVersions', 'SecretBackup', 'KeyGet', 'KeyList',
                             'KeyListVersions', 'KeyDecrypt', 'KeyUnwrap', 'KeySign', 'KeyBackup', 'CertificateGet',
                             'CertificateList', 'CertificateListVersions', 'CertificateBackup')
      AND caller_object_id IS NOT NULL AND caller_ip IS NOT NULL
      AND ts >= $range_start - $lookback - $history AND ts <= $range_end
      AND day >= to_char($range_start - $lookback - $history, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
new_runs AS (
    -- A run's first read of a key is the one whose previous read (in read order) is in an earlier
    -- run's bucket; that previous read is the key's latest before the run. Any other read of the
    -- run has its previous read within the hour, never older than the history. So the lag runs
    -- over the reads themselves: one sort, no aggregation into (key, run) buckets first (on the
    -- large profile nearly one bucket per read, and the aggregation spilled).
    SELECT DISTINCT caller_object_id, vault, caller_ip, run_end_us
    FROM (SELECT caller_object_id, vault, caller_ip, run_end_us,
                 lag(CAST(ts AS BIGINT)) OVER (PARTITION BY caller_object_id, vault, caller_ip ORDER BY ts) AS prev_us
          FROM reads)
    WHERE (prev_us IS NULL OR prev_us < run_end_us - $history_us)
      AND run_end_us >= CAST($range_start AS BIGINT) AND run_end_us <= CAST($range_end AS BIGINT)
),
asn_runs AS (
    -- One row per (principal, vault, ASN) and run with reads: its first read, whose previous read
    -- is in an earlier bucket (at or before the run's start, T - 1h) or absent.
    SELECT caller_object_id, vault, source_asn, run_end_us, prev_us
    FROM (SELECT caller_object_id, vault, source_asn, run_end_us,
                 lag(CAST(ts AS BIGINT)) OVER (PARTITION BY caller_object_id, vault, source_asn ORDER BY ts) AS prev_us
          FROM reads WHERE source_asn IS NOT NULL)
    WHERE prev_us IS NULL OR prev_us <= run_end_us - $interval_us
),
in_window AS (
    SELECT r.*
    FROM reads r JOIN new_runs n
      ON r.caller_object_id = n.caller_object_id AND r.vault = n.vault AND r.caller_ip = n.caller_ip
     AND r.run_end_us = n.run_end_us
),
judged AS (
    SELECT w.*, CASE WHEN k.prev_us >= w.run_end_us - $history_us THEN k.source_asn END AS known_asn
    FROM in_window w
    LEFT JOIN asn_runs k ON k.caller_object_id = w.caller_object_id AND k.vault = w.vault
     AND k.source_asn = w.source_asn AND k.run_end_us = w.run_end_us
)
SELECT min(ts) AS ts, caller_object_id, caller_object_id AS service_principal_id, max(caller_app_id) AS app_id,
       max(caller_upn) AS caller_upn,
       vault, max(resource_name) AS vault_name, caller_ip AS source_ip, caller_ip,
       max(source_asn) AS source_asn, max(source_as_org) AS source_as_org,
       count(*) AS reads, array_sort(array_agg(DISTINCT operation_name)) AS operations,
       array_sort(array_agg(DISTINCT id)) AS objects,
       sum(CASE WHEN coalesce(status_code, 200) >= 400 THEN 1 ELSE 0 END) AS failed_reads,
       max(source_asn) IS NOT NULL AND max(known_asn) IS NULL AS new_asn,
       CASE WHEN max(source_asn) IS NOT NULL AND max(known_asn) IS NULL THEN 'high' ELSE 'medium' END AS severity,
       run_end_us
FROM judged
GROUP BY caller_object_id, vault, caller_ip, run_end_us
