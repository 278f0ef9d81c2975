-- DuckDB twin of sql/sp_failed_signins.sql (same formulation and outputs).
WITH per_resource AS (
    SELECT service_principal_name, source_ip, error_code, resource_display_name, min(ts) AS first_ts, max(ts) AS last_ts,
           count(*) AS n, min(service_principal_id) AS service_principal_id, min(app_id) AS app_id, min(failure_reason) AS failure_reason
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code <> 0
      AND ts >= $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    GROUP BY service_principal_name, source_ip, error_code, resource_display_name
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
       array_to_string(list_sort(list_distinct(list(resource_display_name))), ', ') AS resources
FROM per_resource
GROUP BY service_principal_name, source_ip, error_code
HAVING sum(n) >= 1
