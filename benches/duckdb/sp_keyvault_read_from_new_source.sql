-- DuckDB twin of sql/sp_keyvault_read_from_new_source.sql (one run): the same formulation and outputs.
WITH reads AS (
    SELECT ts, id, caller_object_id, caller_app_id, caller_upn, caller_ip, source_asn, source_as_org,
           lower(resource_id) AS vault, resource_name, operation_name, status_code
    FROM resource_logs
    WHERE lower(resource_provider) = 'microsoft.keyvault'
      AND operation_name IN ('SecretGet', 'SecretList', 'SecretListVersions', 'SecretBackup', 'KeyGet', 'KeyList',
                             'KeyListVersions', 'KeyDecrypt', 'KeyUnwrap', 'KeySign', 'KeyBackup', 'CertificateGet',
                             'CertificateList', 'CertificateListVersions', 'CertificateBackup')
      AND caller_object_id IS NOT NULL AND caller_ip IS NOT NULL
      AND ts >= $history_start AND ts <= $window_end
      AND day >= strftime($history_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
),
new_terms AS (
    SELECT caller_object_id, vault, caller_ip FROM reads GROUP BY ALL HAVING min(ts) > $window_start
),
known_asn AS (
    SELECT DISTINCT caller_object_id, vault, source_asn FROM reads WHERE ts <= $window_start AND source_asn IS NOT NULL
),
in_window AS (
    SELECT r.* FROM new_terms n JOIN reads r USING (caller_object_id, vault, caller_ip) WHERE r.ts > $window_start
)
SELECT min(w.ts) AS ts, w.caller_object_id, w.caller_object_id AS service_principal_id, max(w.caller_app_id) AS app_id,
       max(w.caller_upn) AS caller_upn, w.vault, max(w.resource_name) AS vault_name, w.caller_ip AS source_ip, w.caller_ip,
       max(w.source_asn) AS source_asn, max(w.source_as_org) AS source_as_org,
       count(*) AS reads, list_sort(list(DISTINCT w.operation_name)) AS operations, list_sort(list(DISTINCT w.id)) AS objects,
       sum(CASE WHEN coalesce(w.status_code, 200) >= 400 THEN 1 ELSE 0 END) AS failed_reads,
       max(w.source_asn) IS NOT NULL AND max(k.source_asn) IS NULL AS new_asn,
       CASE WHEN max(w.source_asn) IS NOT NULL AND max(k.source_asn) IS NULL THEN 'high' ELSE 'medium' END AS severity
FROM in_window w
LEFT JOIN known_asn k ON k.caller_object_id = w.caller_object_id AND k.vault = w.vault AND k.source_asn = w.source_asn
GROUP BY w.caller_object_id, w.vault, w.caller_ip
