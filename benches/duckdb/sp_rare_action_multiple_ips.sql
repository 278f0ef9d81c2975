WITH activity AS (
    SELECT ts, day, 'azure.signinlogs' AS dataset, coalesce(operation_name, 'Sign-in activity') AS action,
           coalesce(service_principal_name, app_display_name, service_principal_id) AS service_principal_name, service_principal_id, source_ip
    FROM signins WHERE service_principal_name IS NOT NULL AND source_ip IS NOT NULL
      AND ts >= $window_start AND ts <= $window_end AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, day, 'azure.auditlogs', operation_name, coalesce(initiated_by_app_name, initiated_by_sp_name, initiated_by_sp_id), initiated_by_sp_id, source_ip
    FROM audit WHERE initiated_by_sp_id IS NOT NULL AND source_ip IS NOT NULL
      AND ts >= $window_start AND ts <= $window_end AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, day, 'azure.graphactivitylogs',
           request_method || ' ' || regexp_replace(regexp_replace(regexp_replace(regexp_replace(
               regexp_replace(regexp_replace(request_uri, '^[a-zA-Z]+://[^/]+', ''), '[?#].*$', ''),
               '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '{id}', 'g'),
               '[^/(''=]*@[^/)'']*', '{id}', 'g'),
               '/(?:[A-Za-z_=+-]*[0-9]){2}[A-Za-z0-9_=+-]{6,}', '/{id}', 'g'),
               '/[0-9]+(/|$)', '/{id}\1', 'g'),
           coalesce(service_principal_id, app_id), service_principal_id, source_ip
    FROM graph_activity WHERE service_principal_id IS NOT NULL AND source_ip IS NOT NULL
      AND ts >= $window_start AND ts <= $window_end AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, day, 'o365.audit', operation, coalesce(user_id, app_id), app_id, source_ip
    FROM o365_audit WHERE extended_audit_event_category = 'ServicePrincipal' AND source_ip IS NOT NULL
      AND ts >= $window_start AND ts <= $window_end AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
),
per_source AS (
    SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id, count(*) AS n, min(ts) AS first_ts
    FROM activity GROUP BY action, service_principal_name, day, source_ip, dataset, service_principal_id
),
per_ip AS (
    SELECT action, service_principal_name, day AS event_day, source_ip, sum(n) AS n, min(first_ts) AS first_ts,
           list(dataset) AS datasets, list(service_principal_id) AS sp_ids
    FROM per_source GROUP BY action, service_principal_name, day, source_ip
)
-- The same formulation and outputs as wisp's rule (first time, the sorted IPs, datasets and principal ids).
SELECT min(first_ts) AS ts, action, service_principal_name, CAST(event_day AS DATE) AS event_day, sum(n) AS event_count,
       count(*) AS ip_count, list_sort(list(source_ip)) AS source_ips, list_sort(list_distinct(flatten(list(datasets)))) AS datasets,
       list_sort(list_distinct(flatten(list(sp_ids)))) AS service_principal_ids
FROM per_ip GROUP BY action, service_principal_name, event_day
HAVING sum(n) <= 5 AND count(*) >= 2
