-- DuckDB twin of the one-pass backtest of sp_unusual_source_asn over [$range_start, $range_end].
WITH candidates AS (
    SELECT ts, id, service_principal_id, source_asn
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IS NOT NULL AND source_asn IS NOT NULL
      AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
      AND (app_owner_tenant_id IS NULL OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
      AND ts >= $range_start - INTERVAL 10 DAY - INTERVAL 65 MINUTE AND ts <= $range_end
      AND day >= strftime($range_start - INTERVAL 10 DAY - INTERVAL 65 MINUTE, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
lagged AS (
    SELECT *, epoch_us(ts) AS ts_us,
           epoch_us(lag(ts) OVER (PARTITION BY service_principal_id, source_asn ORDER BY ts, id)) AS prev_us
    FROM candidates
),
bounds AS (
    SELECT *, greatest(ts_us, coalesce(prev_us + $history_us + 1, ts_us), epoch_us($range_start)) AS lo_us,
              least(ts_us + $lookback_us - 1, epoch_us($range_end)) AS hi_us
    FROM lagged
)
SELECT service_principal_id, source_asn, id FROM (
    SELECT *, ((lo_us + $interval_us - 1) // $interval_us) * $interval_us AS run_end_us FROM bounds
) WHERE run_end_us <= hi_us
