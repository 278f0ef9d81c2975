-- DuckDB twin of the one-pass backtest of sp_unusual_source_asn over [$range_start, $range_end]:
-- the same formulation (hour buckets) and outputs.
WITH candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id, app_display_name, correlation_id, country, city
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IS NOT NULL AND source_asn IS NOT NULL
      AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
      AND (app_owner_tenant_id IS NULL OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
      AND ts >= $range_start - INTERVAL 10 DAY - INTERVAL 65 MINUTE AND ts <= $range_end
      AND day >= strftime($range_start - INTERVAL 10 DAY - INTERVAL 65 MINUTE, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
buckets AS (
    SELECT service_principal_id, source_asn, date_trunc('hour', ts) AS hour, min(ts) AS first_ts, max(ts) AS last_ts
    FROM candidates GROUP BY service_principal_id, source_asn, date_trunc('hour', ts)
),
lagged AS (
    SELECT *, epoch_us(first_ts) AS ts_us,
           epoch_us(lag(last_ts) OVER (PARTITION BY service_principal_id, source_asn ORDER BY hour)) AS prev_us
    FROM buckets
),
bounds AS (
    SELECT *, greatest(ts_us, coalesce(prev_us + $history_us + 1, ts_us), epoch_us($range_start)) AS lo_us,
              least(ts_us + $lookback_us - 1, epoch_us($range_end)) AS hi_us
    FROM lagged
),
alerting AS (
    SELECT service_principal_id, source_asn, first_ts, run_end_us FROM (
        SELECT *, ((lo_us + $interval_us - 1) // $interval_us) * $interval_us AS run_end_us FROM bounds
    ) WHERE run_end_us <= hi_us
),
firsts AS (
    SELECT c.*, a.run_end_us, row_number() OVER (PARTITION BY c.service_principal_id, c.source_asn, c.ts ORDER BY c.id) AS rn
    FROM candidates c JOIN alerting a ON c.service_principal_id = a.service_principal_id AND c.source_asn = a.source_asn AND c.ts = a.first_ts
)
SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city, run_end_us
FROM firsts WHERE rn = 1
