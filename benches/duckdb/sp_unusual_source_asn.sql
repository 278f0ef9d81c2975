-- DuckDB twin of sql/sp_unusual_source_asn.sql: the same formulation and outputs.
WITH candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id, app_display_name, correlation_id, country, city
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IS NOT NULL AND source_asn IS NOT NULL
      AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
      AND (app_owner_tenant_id IS NULL OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
      AND ts >= $history_start AND ts <= $window_end
      AND day >= strftime($history_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
),
new_pairs AS (
    SELECT service_principal_id, source_asn, min(ts) AS first_ts FROM candidates GROUP BY service_principal_id, source_asn HAVING min(ts) > $window_start
),
ranked AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.service_principal_id, c.source_asn ORDER BY c.id) AS rn
    FROM new_pairs n JOIN candidates c ON c.service_principal_id = n.service_principal_id AND c.source_asn = n.source_asn
                                      AND c.ts = n.first_ts
    WHERE c.ts > $window_start
)
SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city
FROM ranked WHERE rn = 1
