-- DuckDB twin of the one-pass backtest of sql/sp_failed_signins.sql: every daily run of the range
-- (windows [T - lookback, T], both ends), each failure in the runs that hold it.
WITH failures AS (
    SELECT *, (epoch_us(ts) + $lookback_us - b) // $interval_us AS extra_runs
    FROM (SELECT service_principal_name, source_ip, error_code, resource_display_name, ts, service_principal_id, app_id, failure_reason,
                 ((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us AS b
          FROM signins
          WHERE category = 'ServicePrincipalSignInLogs' AND error_code <> 0
            AND ts >= $range_start - $lookback AND ts <= $range_end
            AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d'))
),
per_resource_b AS (
    SELECT service_principal_name, source_ip, error_code, resource_display_name, b, extra_runs, min(ts) AS first_ts, max(ts) AS last_ts,
           count(*) AS n, min(service_principal_id) AS service_principal_id, min(app_id) AS app_id, min(failure_reason) AS failure_reason
    FROM failures GROUP BY ALL
),
per_resource AS (
    SELECT * FROM (SELECT * EXCLUDE (b, extra_runs), unnest(generate_series(b, b + extra_runs * $interval_us, $interval_us)) AS run_end_us
                   FROM per_resource_b)
    WHERE run_end_us >= ((epoch_us($range_start) + $interval_us - 1) // $interval_us) * $interval_us AND run_end_us <= epoch_us($range_end)
)
SELECT min(first_ts) AS ts, min(first_ts) AS first_seen, max(last_ts) AS last_seen, service_principal_name,
       min(service_principal_id) AS service_principal_id, min(app_id) AS app_id, source_ip, error_code,
       CASE error_code
           WHEN 7000215 THEN 'Invalid client secret provided'
           WHEN 7000222 THEN 'The provided client secret keys are expired'
           WHEN 700027 THEN 'Client assertion failed signature validation (invalid certificate)'
           WHEN 700016 THEN 'Application not found in the directory'
           WHEN 7000112 THEN 'Application is disabled'
           WHEN 700024 THEN 'Client assertion is not within its valid time range'
           WHEN 7000012 THEN 'The grant was obtained for a different tenant'
           WHEN 7000218 THEN 'The request has no client_assertion or client_secret (no credential presented)'
           WHEN 700211 THEN 'No matching federated identity record for the assertion issuer'
           WHEN 700212 THEN 'No matching federated identity record for the assertion audience'
           WHEN 700213 THEN 'No matching federated identity record for the assertion subject'
           WHEN 50053 THEN 'Account is locked'
           WHEN 53003 THEN 'Access blocked by Conditional Access'
           WHEN 700082 THEN 'The refresh token has expired due to inactivity'
           ELSE coalesce(min(failure_reason), 'Unknown error')
       END AS error_meaning,
       sum(n) AS attempts,
       array_to_string(list_sort(list_distinct(list(resource_display_name))), ', ') AS resources, run_end_us
FROM per_resource
GROUP BY service_principal_name, source_ip, error_code, run_end_us
HAVING sum(n) >= 1
-- Each alert (its key and first_seen) once, from the first run that reports it.
QUALIFY row_number() OVER (PARTITION BY service_principal_name, source_ip, error_code, first_seen ORDER BY run_end_us) = 1
