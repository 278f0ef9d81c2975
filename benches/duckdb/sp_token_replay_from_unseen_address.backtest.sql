-- DuckDB twin of the one-pass backtest of sql/sp_token_replay_from_unseen_address.sql: each call
-- in the hourly run that holds it, judged against the sign-ins within `surrounding` of it.
WITH calls AS (
    SELECT ts, id, 'azure_activity' AS source, caller AS principal_id, caller_ip, operation_name, resource_id, source_as_org AS as_org
    FROM azure_activity
    WHERE caller IS NOT NULL AND caller_ip IS NOT NULL AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, id, 'keyvault', caller_object_id, caller_ip, operation_name, resource_id, source_as_org
    FROM resource_logs
    WHERE lower(resource_provider) = 'microsoft.keyvault' AND caller_object_id IS NOT NULL AND caller_ip IS NOT NULL
      AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
public_calls AS (
    SELECT * FROM (SELECT *, ((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us AS run_end_us FROM calls)
    WHERE NOT coalesce(is_private_ip(caller_ip), false) AND coalesce(as_org, '') NOT ILIKE '%microsoft%'
      AND run_end_us >= epoch_us($range_start) AND run_end_us <= epoch_us($range_end)
),
si AS (
    SELECT ts AS si_ts, service_principal_id, app_id, source_ip
    FROM signins
    WHERE service_principal_id IS NOT NULL AND source_ip IS NOT NULL AND error_code = 0
      AND category IN ('ServicePrincipalSignInLogs', 'ManagedIdentitySignInLogs')
      AND ts >= $range_start - $lookback - $surrounding AND ts <= $range_end + $surrounding
      AND day >= strftime($range_start - $lookback - $surrounding, '%Y-%m-%d') AND day <= strftime($range_end + $surrounding, '%Y-%m-%d')
),
judged AS (
    SELECT c.source, c.id, c.ts, c.principal_id, c.caller_ip, c.operation_name, c.resource_id, c.run_end_us,
           max(s.app_id) AS app_id, max(CASE WHEN s.source_ip = c.caller_ip THEN 1 ELSE 0 END) AS seen,
           list(DISTINCT s.source_ip) AS signin_ips
    FROM public_calls c
    JOIN si s ON s.service_principal_id = c.principal_id AND s.si_ts >= c.ts - $surrounding AND s.si_ts <= c.ts + $surrounding
    GROUP BY c.source, c.id, c.ts, c.principal_id, c.caller_ip, c.operation_name, c.resource_id, c.run_end_us
)
SELECT min(ts) AS ts, principal_id AS service_principal_id, max(app_id) AS app_id, caller_ip AS source_ip, count(*) AS calls,
       list_sort(list(DISTINCT source)) AS sources, list_sort(list(DISTINCT operation_name)) AS operations,
       list_sort(list(DISTINCT resource_id)) AS resources, list_sort(list_distinct(flatten(list(signin_ips)))) AS signin_ips, run_end_us
FROM judged WHERE seen = 0
GROUP BY principal_id, caller_ip, run_end_us
