/*
id = "sp_failed_signins"
name = "Sign-in attempts from service principals with expired or wrong keys"
description = """
Failed service principal sign-ins, summarized per principal, source IP and error code. An attacker
holding an old or guessed secret produces invalid-secret and expired-secret failures, often from an
unusual address. Reproduces the Sentinel rule as written (a hunt: on a real tenant it reports every
failing automation every day); the AADSTS meaning of each code is added. The detection to keep
switched on is sp_credential_failures_from_new_source."""
type = "hunt"
severity = "medium"
risk_score = 47
interval = "1d"
lookback = "1d"
tables = ["signins"]
alert_key = ["service_principal_name", "source_ip", "error_code", "first_seen"]
false_positives = ["An expired secret in a forgotten automation retrying every few minutes."]
references = ["https://github.com/Azure/Azure-Sentinel/blob/master/Detections/AADServicePrincipalSignInLogs/"]
note = """
Triage: 7000215 (invalid secret) from a new IP is someone guessing or using a stale stolen secret;
7000222 (expired secret) from the usual IP is usually hygiene. Check whether a success from the same
IP follows (sp_unusual_source_asn) and whether credentials were added (sp_credential_added_after_signin)."""

[params]
threshold = 1

[mitre]
tactics = ["TA0006 Credential Access"]
techniques = ["T1110 Brute Force", "T1078.004 Valid Accounts: Cloud Accounts"]
*/
WITH edges AS (
    -- The failures of the partial hours at the window's edges (before its first whole hour, from
    -- the hour its end falls in), so only on its first and last day; the whole hours come from
    -- the rollup (`rolled`).
    -- `sp_failed_signin_rollup_events` is the rollup's source (sql/rollups/): the failed
    -- service-principal sign-ins.
    SELECT service_principal_name, source_ip, error_code, resource_display_name, service_principal_id, app_id,
           failure_reason, CAST(1 AS BIGINT) AS n, ts AS first_ts, ts AS last_ts
    FROM sp_failed_signin_rollup_events
    WHERE ts >= $window_start AND ts <= $window_end
      -- Each edge guarded by whether it is empty (a comparison of constants, folded in planning)
      -- and bound to its day: the first lies in the start's day, the last in the end's. A window
      -- starting on the hour has no first edge, so the start's day is not even listed (a day from
      -- hour to hour opened its files to find nothing in them). The days again on their own: a
      -- test of the partition column alone is what selects the folders listed.
      AND (($window_start < $window_whole_hours_start AND ts < $window_whole_hours_start
            AND day = to_char($window_start, '%Y-%m-%d'))
           OR ($window_whole_hours_end <= $window_end AND ts >= $window_whole_hours_end
               AND day = to_char($window_end, '%Y-%m-%d')))
      AND (day = to_char($window_start, '%Y-%m-%d') OR day = to_char($window_end, '%Y-%m-%d'))
),
rolled AS (
    -- The window's whole hours from `sp_failed_signin_rollup` (src/rollups.rs; its source is
    -- the failures this rule reads, its keys the columns grouped on or taken the minimum of): the
    -- 'day' rows of whole UTC days, the 'hour' rows of the other whole hours, and 'event' rows
    -- (days whose stored summary is stale or missing, one row per event) of any whole hour. Each
    -- failure counts once; sums of n, minima and maxima are the failures'.
    SELECT service_principal_name, source_ip, error_code, resource_display_name, service_principal_id, app_id,
           failure_reason, n, first_ts, last_ts
    FROM sp_failed_signin_rollup
    WHERE day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
      -- (Implied by the buckets; on 'event' rows it is the events' own ts bound, which prunes.)
      AND first_ts >= $window_start AND first_ts <= $window_end
      AND bucket >= $window_whole_hours_start AND bucket < $window_whole_hours_end
      AND ((grain = 'day' AND bucket >= $window_whole_days_start AND bucket < $window_whole_days_end)
           OR (grain = 'hour' AND (bucket < $window_whole_days_start OR bucket >= $window_whole_days_end))
           OR grain = 'event')
),
failures AS (SELECT * FROM edges UNION ALL SELECT * FROM rolled)
-- One aggregation: the resources as `array_distinct` of a plain `array_agg`, which DataFusion
-- aggregates vectorized (`array_agg(DISTINCT …)` is planned as two aggregations, one per
-- resource first: 7% slower over a day of medium). The plain list holds a row per rollup row
-- (an hour's or a day's per resource), and one per failure only of the 'event' rows of a day
-- without a current summary. A first aggregation per resource, to build the lists from fewer
-- rows, cost more than it saved: two more hash aggregations over a few thousand rows.
SELECT min(first_ts) AS ts,
       min(first_ts) AS first_seen,
       max(last_ts) AS last_seen,
       service_principal_name,
       min(service_principal_id) AS service_principal_id,
       min(app_id) AS app_id,
       source_ip,
       error_code,
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
       array_to_string(array_sort(array_distinct(array_agg(resource_display_name))), ', ') AS resources
FROM failures
GROUP BY service_principal_name, source_ip, error_code
HAVING sum(n) >= $threshold

-- @backtest
-- Every daily run in [$range_start, $range_end] in one pass. A run ending T reads [T - lookback, T]
-- (both ends), so a failure at ts is in the runs on the interval grid from b, the first at or after
-- ts, through the last at or before ts + lookback: (ts + lookback - b) / interval + 1 of them (two
-- for a failure exactly at midnight). The failures are aggregated per resource, b and that count
-- first, each of those rows is repeated for every run that holds it (and is in the range), and
-- the rest is the single run's aggregation grouped by run. Runs of the same key share an alert
-- only when they share first_seen; the first run reports it.
WITH failures AS (
    SELECT service_principal_name, source_ip, error_code, resource_display_name, ts,
           service_principal_id, app_id, failure_reason,
           ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS b
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code <> 0
      AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
per_resource_b AS (
    SELECT service_principal_name, source_ip, error_code, resource_display_name, b, extra_runs,
           min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS n,
           min(service_principal_id) AS service_principal_id, min(app_id) AS app_id,
           min(failure_reason) AS failure_reason
    FROM (SELECT *, (CAST(ts AS BIGINT) + $lookback_us - b) / $interval_us AS extra_runs FROM failures)
    GROUP BY service_principal_name, source_ip, error_code, resource_display_name, b, extra_runs
),
per_resource AS (
    SELECT * FROM (
        SELECT service_principal_name, source_ip, error_code, resource_display_name,
               first_ts, last_ts, n, service_principal_id, app_id, failure_reason,
               unnest(generate_series(b, b + extra_runs * $interval_us, $interval_us)) AS run_end_us
        FROM per_resource_b)
    WHERE run_end_us >= ((CAST($range_start AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us
      AND run_end_us <= CAST($range_end AS BIGINT)
)
SELECT min(first_ts) AS ts,
       min(first_ts) AS first_seen,
       max(last_ts) AS last_seen,
       service_principal_name,
       min(service_principal_id) AS service_principal_id,
       min(app_id) AS app_id,
       source_ip,
       error_code,
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
       array_to_string(array_sort(array_distinct(array_agg(resource_display_name))), ', ') AS resources,
       run_end_us
FROM per_resource
GROUP BY service_principal_name, source_ip, error_code, run_end_us
HAVING sum(n) >= $threshold
