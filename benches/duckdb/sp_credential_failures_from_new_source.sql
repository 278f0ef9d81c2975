-- DuckDB twin of sql/sp_credential_failures_from_new_source.sql (one run): the same formulation and outputs.
WITH failures AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code, credential_key_id
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code IN (7000215, 7000222, 700027, 700024, 7000012, 700016, 7000218, 700211, 700212, 700213)
      AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
      AND ts > $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
),
known AS (
    SELECT service_principal_id, source_ip, source_asn
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IN (SELECT service_principal_id FROM failures)
      AND ts >= $history_start AND ts <= $window_end
      AND day >= strftime($history_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    GROUP BY service_principal_id, source_ip, source_asn
),
known_ip AS (SELECT DISTINCT service_principal_id, source_ip FROM known),
known_asn AS (SELECT DISTINCT service_principal_id, source_asn FROM known WHERE source_asn IS NOT NULL),
novel AS (
    SELECT f.*, (f.source_asn IS NOT NULL AND ka.source_asn IS NULL) AS new_asn
    FROM failures f
    LEFT JOIN known_ip ki ON ki.service_principal_id = f.service_principal_id AND ki.source_ip = f.source_ip
    LEFT JOIN known_asn ka ON ka.service_principal_id = f.service_principal_id AND ka.source_asn = f.source_asn
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
       CASE WHEN bool_or(new_asn) THEN 'high' ELSE 'medium' END AS severity
FROM novel
GROUP BY service_principal_id
