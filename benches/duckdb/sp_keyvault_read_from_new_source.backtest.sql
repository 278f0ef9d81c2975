-- DuckDB twin of the one-pass backtest of sql/sp_keyvault_read_from_new_source.sql: each read in
-- the hourly run that holds it, a key new to run T when its latest read of an earlier run is
-- older than T-10d.
WITH reads AS (
    SELECT ts, id, caller_object_id, caller_app_id, caller_upn, caller_ip, source_asn, source_as_org,
           lower(resource_id) AS vault, resource_name, operation_name, status_code,
           ((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us AS run_end_us
    FROM resource_logs
    WHERE lower(resource_provider) = 'microsoft.keyvault'
      AND operation_name IN ('SecretGet', 'SecretList', 'SecretListVersions', 'SecretBackup', 'KeyGet', 'KeyList',
                             'KeyListVersions', 'KeyDecrypt', 'KeyUnwrap', 'KeySign', 'KeyBackup', 'CertificateGet',
                             'CertificateList', 'CertificateListVersions', 'CertificateBackup')
      AND caller_object_id IS NOT NULL AND caller_ip IS NOT NULL
      AND ts >= $range_start - $lookback - $history AND ts <= $range_end
      AND day >= strftime($range_start - $lookback - $history, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
new_runs AS (
    SELECT caller_object_id, vault, caller_ip, run_end_us
    FROM (SELECT *, lag(last_us) OVER (PARTITION BY caller_object_id, vault, caller_ip ORDER BY run_end_us) AS prev_us
          FROM (SELECT caller_object_id, vault, caller_ip, run_end_us, max(epoch_us(ts)) AS last_us FROM reads GROUP BY ALL))
    WHERE (prev_us IS NULL OR prev_us < run_end_us - $history_us)
      AND run_end_us >= epoch_us($range_start) AND run_end_us <= epoch_us($range_end)
),
asn_runs AS (
    SELECT caller_object_id, vault, source_asn, run_end_us,
           lag(last_us) OVER (PARTITION BY caller_object_id, vault, source_asn ORDER BY run_end_us) AS prev_us
    FROM (SELECT caller_object_id, vault, source_asn, run_end_us, max(epoch_us(ts)) AS last_us
          FROM reads WHERE source_asn IS NOT NULL GROUP BY ALL)
),
judged AS (
    SELECT r.*, CASE WHEN k.prev_us >= r.run_end_us - $history_us THEN k.source_asn END AS known_asn
    FROM reads r JOIN new_runs n USING (caller_object_id, vault, caller_ip, run_end_us)
    LEFT JOIN asn_runs k ON k.caller_object_id = r.caller_object_id AND k.vault = r.vault
     AND k.source_asn = r.source_asn AND k.run_end_us = r.run_end_us
)
SELECT min(ts) AS ts, caller_object_id, caller_object_id AS service_principal_id, max(caller_app_id) AS app_id,
       max(caller_upn) AS caller_upn, vault, max(resource_name) AS vault_name, caller_ip AS source_ip, caller_ip,
       max(source_asn) AS source_asn, max(source_as_org) AS source_as_org,
       count(*) AS reads, list_sort(list(DISTINCT operation_name)) AS operations, list_sort(list(DISTINCT id)) AS objects,
       sum(CASE WHEN coalesce(status_code, 200) >= 400 THEN 1 ELSE 0 END) AS failed_reads,
       max(source_asn) IS NOT NULL AND max(known_asn) IS NULL AS new_asn,
       CASE WHEN max(source_asn) IS NOT NULL AND max(known_asn) IS NULL THEN 'high' ELSE 'medium' END AS severity,
       run_end_us
FROM judged
GROUP BY caller_object_id, vault, caller_ip, run_end_us
