-- DuckDB twin of the one-pass backtest of sql/sp_credential_failures_from_new_source.sql: every
-- hourly run in [$range_start, $range_end], each failure in the run that holds it, successes
-- bucketed by run with their latest time.
WITH failures AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code, credential_key_id,
           ((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us AS run_end_us
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code IN (7000215, 7000222, 700027, 700024, 7000012, 700016, 7000218, 700211, 700212, 700213)
      AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
      AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
in_range AS (
    SELECT * FROM failures WHERE run_end_us >= epoch_us($range_start) AND run_end_us <= epoch_us($range_end)
),
success_buckets AS (
    SELECT service_principal_id, source_ip, source_asn,
           ((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us AS bucket_us, max(epoch_us(ts)) AS last_us
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IN (SELECT service_principal_id FROM in_range)
      AND ts >= $range_start - $lookback - $history AND ts <= $range_end
      AND day >= strftime($range_start - $lookback - $history, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
    GROUP BY ALL
),
asn_buckets AS (
    SELECT service_principal_id, source_asn, bucket_us, max(last_us) AS last_us
    FROM success_buckets WHERE source_asn IS NOT NULL GROUP BY ALL
),
fail_ip AS (SELECT DISTINCT service_principal_id, source_ip, run_end_us FROM in_range),
fail_asn AS (SELECT DISTINCT service_principal_id, source_asn, run_end_us FROM in_range WHERE source_asn IS NOT NULL),
known_ip AS (
    SELECT DISTINCT f.service_principal_id, f.source_ip, f.run_end_us
    FROM fail_ip f JOIN success_buckets s ON s.service_principal_id = f.service_principal_id AND s.source_ip = f.source_ip
    WHERE s.bucket_us <= f.run_end_us AND s.last_us >= f.run_end_us - $history_us
),
known_asn AS (
    SELECT DISTINCT f.service_principal_id, f.source_asn, f.run_end_us
    FROM fail_asn f JOIN asn_buckets s ON s.service_principal_id = f.service_principal_id AND s.source_asn = f.source_asn
    WHERE s.bucket_us <= f.run_end_us AND s.last_us >= f.run_end_us - $history_us
),
novel AS (
    SELECT f.*, (f.source_asn IS NOT NULL AND ka.source_asn IS NULL) AS new_asn
    FROM in_range f
    LEFT JOIN known_ip ki ON ki.service_principal_id = f.service_principal_id AND ki.source_ip = f.source_ip AND ki.run_end_us = f.run_end_us
    LEFT JOIN known_asn ka ON ka.service_principal_id = f.service_principal_id AND ka.source_asn = f.source_asn AND ka.run_end_us = f.run_end_us
    WHERE ki.source_ip IS NULL
)
SELECT min(ts) AS ts, max(ts) AS last_failure, service_principal_id,
       max(service_principal_name) AS service_principal_name, max(app_id) AS app_id, min(source_ip) AS source_ip,
       count(*) AS failures, count(DISTINCT source_ip) AS distinct_ips,
       list_sort(list(DISTINCT source_ip)) AS source_ips,
       list_sort(list(DISTINCT source_asn) FILTER (WHERE source_asn IS NOT NULL)) AS source_asns,
       list_sort(list(DISTINCT error_code)) AS error_codes,
       list_sort(list(DISTINCT credential_key_id) FILTER (WHERE credential_key_id IS NOT NULL)) AS credential_key_ids,
       bool_or(new_asn) AS from_new_asn,
       CASE WHEN bool_or(new_asn) THEN 'high' ELSE 'medium' END AS severity,
       run_end_us
FROM novel
GROUP BY service_principal_id, run_end_us
