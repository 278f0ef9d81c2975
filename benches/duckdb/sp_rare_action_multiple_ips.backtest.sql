-- DuckDB twin of the one-pass backtest of sql/sp_rare_action_multiple_ips.sql: every daily run of
-- the range (windows [T - lookback, T], both ends), each event in the runs that hold it.
WITH activity AS (
    SELECT ts, day, 'azure.signinlogs' AS dataset, coalesce(operation_name, 'Sign-in activity') AS action,
           coalesce(service_principal_name, app_display_name, service_principal_id) AS service_principal_name, service_principal_id, source_ip
    FROM signins WHERE service_principal_name IS NOT NULL AND source_ip IS NOT NULL
      AND ts >= $range_start - $lookback AND ts <= $range_end AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, day, 'azure.auditlogs', operation_name, coalesce(initiated_by_app_name, initiated_by_sp_name, initiated_by_sp_id), initiated_by_sp_id, source_ip
    FROM audit WHERE initiated_by_sp_id IS NOT NULL AND source_ip IS NOT NULL
      AND ts >= $range_start - $lookback AND ts <= $range_end AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
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
      AND ts >= $range_start - $lookback AND ts <= $range_end AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, day, 'o365.audit', operation, coalesce(user_id, app_id), app_id, source_ip
    FROM o365_audit WHERE extended_audit_event_category = 'ServicePrincipal' AND source_ip IS NOT NULL
      AND ts >= $range_start - $lookback AND ts <= $range_end AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
per_source_b AS (
    SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id, b, extra_runs, count(*) AS n, min(ts) AS first_ts
    FROM (SELECT *, (epoch_us(ts) + $lookback_us - b) // $interval_us AS extra_runs
          FROM (SELECT *, ((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us AS b FROM activity))
    GROUP BY ALL
),
per_source AS (
    SELECT * FROM (SELECT * EXCLUDE (b, extra_runs), unnest(generate_series(b, b + extra_runs * $interval_us, $interval_us)) AS run_end_us
                   FROM per_source_b)
    WHERE run_end_us >= ((epoch_us($range_start) + $interval_us - 1) // $interval_us) * $interval_us AND run_end_us <= epoch_us($range_end)
),
per_ip AS (
    SELECT action, service_principal_name, day AS event_day, source_ip, run_end_us, sum(n) AS n, min(first_ts) AS first_ts,
           list(dataset) AS datasets, list(service_principal_id) AS sp_ids
    FROM per_source GROUP BY action, service_principal_name, day, source_ip, run_end_us
)
SELECT min(first_ts) AS ts, action, service_principal_name, CAST(event_day AS DATE) AS event_day, sum(n) AS event_count,
       count(*) AS ip_count, list_sort(list(source_ip)) AS source_ips, list_sort(list_distinct(flatten(list(datasets)))) AS datasets,
       list_sort(list_distinct(flatten(list(sp_ids)))) AS service_principal_ids, run_end_us
FROM per_ip GROUP BY action, service_principal_name, event_day, run_end_us
HAVING sum(n) <= 5 AND count(*) >= 2
-- Each alert (action, principal, day) once, from the first run that reports it.
QUALIFY row_number() OVER (PARTITION BY action, service_principal_name, event_day ORDER BY run_end_us) = 1
