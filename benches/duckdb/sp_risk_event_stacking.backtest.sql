-- DuckDB twin of the one-pass backtest of sql/sp_risk_event_stacking.sql: every hourly run of the
-- range; the latest version of each risk event and each sign-in in the one run T with
-- T - 1h < ts <= T (the benchmark's NetworkAllowlist is empty: every sign-in counts).
WITH in_range AS (
    SELECT DISTINCT id, service_principal_id FROM sp_risk_events
    WHERE ts > $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
latest AS (
    SELECT * FROM (
        SELECT r.ts, r.service_principal_id, r.service_principal_name, r.app_id, r.risk_event_type, r.risk_level,
               row_number() OVER (PARTITION BY r.id, r.service_principal_id ORDER BY r.last_updated DESC NULLS LAST, r.ts DESC) AS rn
        FROM sp_risk_events r JOIN in_range w ON r.id = w.id AND r.service_principal_id IS NOT DISTINCT FROM w.service_principal_id)
    WHERE rn = 1
),
risk AS (
    SELECT * FROM (
        SELECT ts, service_principal_id, service_principal_name, app_id, risk_event_type, risk_level,
               ((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us AS run_end_us
        FROM latest
        WHERE lower(risk_level) IN ('high', 'medium')
           OR risk_event_type IN ('anomalousToken', 'investigationsThreatIntelligence', 'maliciousIPAddress', 'suspiciousAPITraffic'))
    WHERE run_end_us >= epoch_us($range_start) AND run_end_us <= epoch_us($range_end)
),
per_sp AS (
    SELECT service_principal_id, run_end_us, max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
           count(*) AS risk_event_count, count(DISTINCT risk_event_type) AS distinct_types,
           list_sort(list(DISTINCT risk_event_type)) AS risk_types,
           sum(CASE WHEN risk_event_type IN ('investigationsThreatIntelligence', 'maliciousIPAddress', 'anomalousToken', 'suspiciousAPITraffic') THEN 1 ELSE 0 END) AS high_sev,
           sum(CASE WHEN lower(risk_level) = 'high' THEN 1 ELSE 0 END) AS high_level_count,
           min(ts) AS first_detection, max(ts) AS last_detection
    FROM risk GROUP BY service_principal_id, run_end_us
),
stacked AS (SELECT * FROM per_sp WHERE distinct_types >= 2 OR high_sev >= 1),
si AS (
    SELECT service_principal_id, ((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us AS run_end_us,
           count(*) AS signin_count, sum(CASE WHEN error_code = 0 THEN 1 ELSE 0 END) AS successful_signins,
           count(DISTINCT source_ip) AS distinct_ips,
           list_sort(list(DISTINCT source_ip) FILTER (WHERE source_ip IS NOT NULL)) AS source_ips,
           list_sort(list(DISTINCT country) FILTER (WHERE country IS NOT NULL)) AS countries,
           list_sort(list(DISTINCT resource_display_name) FILTER (WHERE resource_display_name IS NOT NULL)) AS resources
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
      AND service_principal_id IN (SELECT service_principal_id FROM stacked)
    GROUP BY ALL
)
SELECT first_detection AS ts, stacked.*, coalesce(signin_count, 0) AS signin_count, coalesce(successful_signins, 0) AS successful_signins,
       coalesce(distinct_ips, 0) AS distinct_ips, source_ips, countries, resources,
       CASE WHEN high_sev >= 1 AND coalesce(signin_count, 0) > 0 THEN 'Critical' WHEN high_sev >= 1 THEN 'High'
            WHEN distinct_types >= 3 THEN 'High' WHEN distinct_types >= 2 AND coalesce(signin_count, 0) > 0 THEN 'High' ELSE 'Medium' END AS severity
FROM stacked LEFT JOIN si USING (service_principal_id, run_end_us)
