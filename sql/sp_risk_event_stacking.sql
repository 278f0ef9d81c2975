/*
id = "sp_risk_event_stacking"
name = "SP Risk Event Stacking"
description = """
Several Identity Protection risk detections on one service principal in an hour (or one of the
high-severity kinds), joined with that principal's sign-ins from outside the NetworkAllowlist
watchlist in the same window. Reproduces the KQL "SP Risk Event Stacking" and its severity ladder."""
type = "correlation"
severity = "high"
risk_score = 73
interval = "1h"
lookback = "1h"
tables = ["sp_risk_events", "signins"]
alert_key = ["service_principal_id", "first_detection", "last_detection"]
false_positives = ["Risk detections re-evaluated in bulk by Microsoft (check risk_state)."]
references = ["https://learn.microsoft.com/en-us/entra/id-protection/concept-workload-identity-risk"]
note = """
Uses the newest version of each risk detection (sp_risk_events_latest). The window is the KQL's
`> ago(1h)`: (T-1h, T], so hourly runs never count a detection or sign-in twice. High-severity types, as
the KQL lists them: investigationsThreatIntelligence, anomalousToken, maliciousIPAddress,
suspiciousAPITraffic. Sign-ins whose IP is in the
NetworkAllowlist watchlist (CIDRs, single IPs and a-b ranges; --watchlist NetworkAllowlist=FILE.csv
or <lake>/_watchlists/NetworkAllowlist.csv) are not counted; with no watchlist loaded every
sign-in counts. Severity ladder: Critical = a high-severity type and active sign-ins; High = a
high-severity type; High = 3+ distinct types; High = 2+ types with active sign-ins; else Medium."""

[mitre]
tactics = ["TA0006 Credential Access", "TA0003 Persistence"]
techniques = ["T1078.004 Valid Accounts: Cloud Accounts", "T1550.001 Use Alternate Authentication Material: Application Access Token"]
*/
-- The latest version of each risk event (as the view sp_risk_events_latest), ranked only for
-- the events with a version in the window: an event's latest version can be in the window only
-- if some version is, and every version of those events is ranked, so the result is the view's.
WITH in_window AS (
    SELECT DISTINCT id, service_principal_id
    FROM sp_risk_events
    WHERE ts > $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
version_days AS (
    -- The days holding a version of each of them (the view sp_risk_event_days, src/version_days.rs:
    -- an index of the lake's (key_hash(id), day) pairs written at compaction, and the table's own
    -- rows of the days it does not cover; a hash shared with another id only adds a day), so that
    -- the join below opens only those days' files: it hands the days' bounds to the scan with the
    -- ids, and files of other days are not opened. A (detection, day) listed twice (the table's
    -- rows list a day once per version) only repeats versions to last_by, which takes the same one.
    SELECT w.id, w.service_principal_id, d.day
    FROM in_window w JOIN sp_risk_event_days d ON d.h = key_hash(w.id)
),
latest AS (
    -- The version ranked first by last_updated DESC NULLS LAST, ts DESC: last_by(x, k, ts) is
    -- last_value(x ORDER BY k, ts), vectorized (wisp's aggregate), k the last_updated with a null
    -- one below every time the lake holds (1900 and after). All the row's columns come from
    -- the same version: the aggregate's accumulators see the rows in the same order.
    SELECT last_by(r.ts, r.k, r.ts) AS ts,
           r.service_principal_id,
           last_by(r.service_principal_name, r.k, r.ts) AS service_principal_name,
           last_by(r.app_id, r.k, r.ts) AS app_id,
           last_by(r.risk_event_type, r.k, r.ts) AS risk_event_type,
           last_by(r.risk_level, r.k, r.ts) AS risk_level
    FROM (SELECT r.*, coalesce(CAST(r.last_updated AS BIGINT), -9223372036854775807) AS k
          FROM sp_risk_events r
          JOIN version_days w ON r.id = w.id AND r.day = w.day
                                 AND (r.service_principal_id IS NOT DISTINCT FROM w.service_principal_id)) r
    GROUP BY r.id, r.service_principal_id
),
risk AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, risk_event_type, risk_level
    FROM latest
    WHERE ts > $window_start AND ts <= $window_end
      AND (lower(risk_level) IN ('high', 'medium')
           OR risk_event_type IN ('anomalousToken', 'investigationsThreatIntelligence', 'maliciousIPAddress', 'suspiciousAPITraffic'))
),
per_sp AS (
    SELECT service_principal_id, max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
           count(*) AS risk_event_count,
           count(DISTINCT risk_event_type) AS distinct_types,
           array_sort(array_agg(DISTINCT risk_event_type)) AS risk_types,
           sum(CASE WHEN risk_event_type IN ('investigationsThreatIntelligence', 'maliciousIPAddress', 'anomalousToken', 'suspiciousAPITraffic') THEN 1 ELSE 0 END) AS high_severity_type_count,
           sum(CASE WHEN lower(risk_level) = 'high' THEN 1 ELSE 0 END) AS high_level_count,
           min(ts) AS first_detection, max(ts) AS last_detection
    FROM risk
    GROUP BY service_principal_id
),
stacked AS (
    SELECT * FROM per_sp WHERE distinct_types >= 2 OR high_severity_type_count >= 1
),
si_pre AS (
    -- A plain aggregation per (principal, address, country, resource) first; the distinct lists
    -- are built from its far fewer rows. The allowlist is looked up per group, not per sign-in.
    -- Only the stacked principals' groups reach the result: the left join below hands its keys
    -- down to the scans (a dynamic filter through both aggregations), so the risk chain is
    -- planned once, not again in an IN list. The two arms sit here, not in CTEs of their own, so
    -- that the arm a window rules out (the rollup's, for an hourly run: no whole hour after its
    -- start) is dropped before planning (src/rules/arms.rs).
    SELECT service_principal_id, source_ip, country, resource_display_name,
           coalesce(in_watchlist(source_ip, 'NetworkAllowlist'), false) AS allowlisted, sum(n) AS n,
           coalesce(sum(n) FILTER (WHERE succeeded), 0) AS ok
    FROM (
        -- The window's sign-ins outside its whole hours (src/rollups.rs): from its start to the first
        -- hour boundary after it, and from the last boundary at or before its end — for an hourly
        -- run, all of them. `sp_signin_outcome_rollup_events` is the rollup's source (sql/rollups/):
        -- the service-principal sign-ins, with `succeeded`.
        SELECT service_principal_id, source_ip, country, resource_display_name, succeeded, CAST(1 AS BIGINT) AS n
        FROM sp_signin_outcome_rollup_events
        WHERE ts > $window_start AND ts <= $window_end
          AND (ts < date_trunc('hour', $window_start) + INTERVAL '1 hour' OR ts >= $window_whole_hours_end)
          AND (day = to_char($window_start, '%Y-%m-%d') OR day = to_char($window_end, '%Y-%m-%d'))
        UNION ALL
        -- The whole hours after the window's start, [the first boundary after it, the last at or
        -- before its end), from `sp_signin_outcome_rollup` (its keys: principal, address, country,
        -- resource and outcome): the 'day' rows of whole UTC days after the start, the 'hour' rows of
        -- the other hours, 'event' rows (days without a current summary) of any of them. Each sign-in
        -- counts once; sums of n are the sign-ins'. Bounds on `bucket` itself, so row-group
        -- statistics skip the hour rows of whole days.
        SELECT service_principal_id, source_ip, country, resource_display_name, succeeded, n
        FROM sp_signin_outcome_rollup
        WHERE day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
          -- (Implied by the buckets; on 'event' rows it is the events' own ts bound, which prunes.)
          AND first_ts > $window_start AND first_ts <= $window_end
          -- (A constant: a window without a whole hour after its start, as an hourly run's, plans
          -- no read of the rollup.)
          AND date_trunc('hour', $window_start) + INTERVAL '1 hour' < $window_whole_hours_end
          AND bucket >= date_trunc('hour', $window_start) + INTERVAL '1 hour' AND bucket < $window_whole_hours_end
          AND ((grain = 'day' AND bucket >= date_trunc('day', $window_start) + INTERVAL '1 day'
                              AND bucket < $window_whole_days_end)
               OR (grain = 'hour' AND (bucket < date_trunc('day', $window_start) + INTERVAL '1 day'
                                       OR bucket >= $window_whole_days_end))
               OR grain = 'event')
    ) AS s
    GROUP BY service_principal_id, source_ip, country, resource_display_name,
             coalesce(in_watchlist(source_ip, 'NetworkAllowlist'), false)
),
si AS (
    SELECT service_principal_id, sum(n) FILTER (WHERE NOT allowlisted) AS signin_count,
           sum(ok) FILTER (WHERE NOT allowlisted) AS successful_signins,
           count(DISTINCT source_ip) FILTER (WHERE NOT allowlisted) AS distinct_ips,
           array_sort(array_agg(DISTINCT source_ip) FILTER (WHERE source_ip IS NOT NULL AND NOT allowlisted)) AS source_ips,
           array_sort(array_agg(DISTINCT country) FILTER (WHERE country IS NOT NULL AND NOT allowlisted)) AS countries,
           array_sort(array_agg(DISTINCT resource_display_name) FILTER (WHERE resource_display_name IS NOT NULL AND NOT allowlisted)) AS resources
    FROM si_pre
    GROUP BY service_principal_id
)
SELECT first_detection AS ts, stacked.*,
       coalesce(si.signin_count, 0) AS signin_count, coalesce(si.successful_signins, 0) AS successful_signins,
       coalesce(si.distinct_ips, 0) AS distinct_ips, si.source_ips, si.countries, si.resources,
       CASE
           WHEN high_severity_type_count >= 1 AND coalesce(si.signin_count, 0) > 0 THEN 'Critical'
           WHEN high_severity_type_count >= 1 THEN 'High'
           WHEN distinct_types >= 3 THEN 'High'
           WHEN distinct_types >= 2 AND coalesce(si.signin_count, 0) > 0 THEN 'High'
           ELSE 'Medium'
       END AS severity
FROM stacked LEFT JOIN si ON stacked.service_principal_id = si.service_principal_id
ORDER BY first_detection

-- @backtest
-- Every hourly run in [$range_start, $range_end] in one pass. With the look-back equal to the
-- interval (as this rule has it), the latest version of a risk event belongs to exactly one run T:
-- the one with T-1h < ts <= T, and so does each sign-in; the runs' alerts are the same
-- aggregations grouped by run as well. As in a single run, an event's latest version is ranked
-- over all its versions, whenever they arrived.
WITH in_range AS (
    SELECT DISTINCT id, service_principal_id
    FROM sp_risk_events
    WHERE ts > $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
latest AS (
    -- The version ranked first by last_updated DESC NULLS LAST, ts DESC: last_by(x, k, ts) is
    -- last_value(x ORDER BY k, ts), vectorized (wisp's aggregate), k the last_updated with a null
    -- one below every time the lake holds (1900 and after). All the row's columns come from
    -- the same version: the aggregate's accumulators see the rows in the same order.
    SELECT last_by(r.ts, r.k, r.ts) AS ts,
           r.service_principal_id,
           last_by(r.service_principal_name, r.k, r.ts) AS service_principal_name,
           last_by(r.app_id, r.k, r.ts) AS app_id,
           last_by(r.risk_event_type, r.k, r.ts) AS risk_event_type,
           last_by(r.risk_level, r.k, r.ts) AS risk_level
    FROM (SELECT r.*, coalesce(CAST(r.last_updated AS BIGINT), -9223372036854775807) AS k
          FROM sp_risk_events r
          JOIN in_range w ON r.id = w.id AND r.service_principal_id IS NOT DISTINCT FROM w.service_principal_id) r
    GROUP BY r.id, r.service_principal_id
),
risk AS (
    SELECT * FROM (
        SELECT ts, service_principal_id, service_principal_name, app_id, risk_event_type, risk_level,
               ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us
        FROM latest
        WHERE lower(risk_level) IN ('high', 'medium')
           OR risk_event_type IN ('anomalousToken', 'investigationsThreatIntelligence', 'maliciousIPAddress', 'suspiciousAPITraffic'))
    WHERE run_end_us >= CAST($range_start AS BIGINT) AND run_end_us <= CAST($range_end AS BIGINT)
),
per_sp AS (
    SELECT service_principal_id, run_end_us, max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
           count(*) AS risk_event_count,
           count(DISTINCT risk_event_type) AS distinct_types,
           array_sort(array_agg(DISTINCT risk_event_type)) AS risk_types,
           sum(CASE WHEN risk_event_type IN ('investigationsThreatIntelligence', 'maliciousIPAddress', 'anomalousToken', 'suspiciousAPITraffic') THEN 1 ELSE 0 END) AS high_severity_type_count,
           sum(CASE WHEN lower(risk_level) = 'high' THEN 1 ELSE 0 END) AS high_level_count,
           min(ts) AS first_detection, max(ts) AS last_detection
    FROM risk
    GROUP BY service_principal_id, run_end_us
),
stacked AS (
    SELECT * FROM per_sp WHERE distinct_types >= 2 OR high_severity_type_count >= 1
),
si_pre AS (
    SELECT service_principal_id, ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us,
           source_ip, country, resource_display_name,
           coalesce(in_watchlist(source_ip, 'NetworkAllowlist'), false) AS allowlisted, count(*) AS n,
           sum(CASE WHEN error_code = 0 THEN 1 ELSE 0 END) AS ok
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
      AND service_principal_id IN (SELECT DISTINCT service_principal_id FROM stacked)
    GROUP BY service_principal_id, ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us,
             source_ip, country, resource_display_name, coalesce(in_watchlist(source_ip, 'NetworkAllowlist'), false)
),
si AS (
    SELECT service_principal_id, run_end_us, sum(n) FILTER (WHERE NOT allowlisted) AS signin_count,
           sum(ok) FILTER (WHERE NOT allowlisted) AS successful_signins,
           count(DISTINCT source_ip) FILTER (WHERE NOT allowlisted) AS distinct_ips,
           array_sort(array_agg(DISTINCT source_ip) FILTER (WHERE source_ip IS NOT NULL AND NOT allowlisted)) AS source_ips,
           array_sort(array_agg(DISTINCT country) FILTER (WHERE country IS NOT NULL AND NOT allowlisted)) AS countries,
           array_sort(array_agg(DISTINCT resource_display_name) FILTER (WHERE resource_display_name IS NOT NULL AND NOT allowlisted)) AS resources
    FROM si_pre
    GROUP BY service_principal_id, run_end_us
)
SELECT first_detection AS ts, stacked.service_principal_id, stacked.service_principal_name, stacked.app_id,
       stacked.risk_event_count, stacked.distinct_types, stacked.risk_types, stacked.high_severity_type_count,
       stacked.high_level_count, stacked.first_detection, stacked.last_detection,
       coalesce(si.signin_count, 0) AS signin_count, coalesce(si.successful_signins, 0) AS successful_signins,
       coalesce(si.distinct_ips, 0) AS distinct_ips, si.source_ips, si.countries, si.resources,
       CASE
           WHEN high_severity_type_count >= 1 AND coalesce(si.signin_count, 0) > 0 THEN 'Critical'
           WHEN high_severity_type_count >= 1 THEN 'High'
           WHEN distinct_types >= 3 THEN 'High'
           WHEN distinct_types >= 2 AND coalesce(si.signin_count, 0) > 0 THEN 'High'
           ELSE 'Medium'
       END AS severity,
       stacked.run_end_us
FROM stacked LEFT JOIN si ON stacked.service_principal_id = si.service_principal_id AND stacked.run_end_us = si.run_end_us
ORDER BY first_detection
