-- DuckDB twin of sql/sp_unusual_source_asn.sql (one scheduled run ending at $window_end).
WITH candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IS NOT NULL AND source_asn IS NOT NULL
      AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
      AND (app_owner_tenant_id IS NULL OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
      AND ts >= $history_start AND ts <= $window_end
      AND day >= strftime($history_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
),
ranked AS (
    SELECT *, min(ts) OVER (PARTITION BY service_principal_id, source_asn) AS first_seen,
           row_number() OVER (PARTITION BY service_principal_id, source_asn ORDER BY ts, id) AS rn
    FROM candidates
)
SELECT service_principal_id, source_asn, id FROM ranked WHERE rn = 1 AND first_seen > $window_start
