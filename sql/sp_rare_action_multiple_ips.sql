/*
id = "sp_rare_action_multiple_ips"
name = "Rare Service Principal Activity from Multiple IPs"
description = """
Service principal actions that are rare (few events in a UTC day) yet come from several source IPs:
a stolen credential used by an attacker next to the legitimate automation. Reproduces Elastic's hunt
over sign-ins, audit events initiated by an app, Graph activity and O365 ServicePrincipal events."""
type = "hunt"
severity = "low"
risk_score = 21
interval = "1d"
lookback = "1d"
tables = ["signins", "audit", "graph_activity", "o365_audit"]
alert_key = ["action", "service_principal_name", "event_day"]
false_positives = ["Automation that moved between regions or NAT gateways during the day."]
references = ["https://github.com/elastic/detection-rules/tree/main/hunting/azure"]
note = """
Run as a hunt over 30 days (`wisp hunt sp_rare_action_multiple_ips --last 30d`) or as a daily rule
over the last full day. As published: every sign-in with a service principal name (managed
identities included; those without a source IP are left out, as rows without an address are), audit
events initiated by an app (named by the app's display name), Graph activity and O365
ServicePrincipal events. Where wisp goes further: Graph activity is named by its principal (the
published hunt leaves its name empty, merging every principal's Graph calls into one row), and its
action is the request's method and path with ids as {id} (GUIDs, UPNs, base64 keys, numbers) so one
action groups across objects. Thresholds are parameters: max_events (default 5) and min_ips
(default 2)."""

[params]
max_events = 5
min_ips = 2

[mitre]
tactics = ["TA0003 Persistence"]
techniques = ["T1098.001 Account Manipulation: Additional Cloud Credentials"]
*/
WITH activity AS (
    -- The events of the partial hours at the window's edges (before its first whole hour, from
    -- the hour its end falls in), so only on the window's first and last day; the whole hours
    -- come from the rollup (`rolled`). `sp_activity_rollup_events` is the rollup's source
    -- (sql/rollups/sp_activity_rollup.sql: the hunt's four datasets, as published, and how
    -- wisp names Graph actions), so edges and whole hours are the same events by construction.
    SELECT ts, day, dataset, action, service_principal_name, service_principal_id, source_ip
    FROM sp_activity_rollup_events
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
    -- The window's whole hours from `sp_activity_rollup` (src/rollups.rs; its source is this
    -- rule's activity): the 'day' rows of whole UTC days, the 'hour' rows of the other whole
    -- hours, and 'event' rows (days whose stored summary is stale or missing, one row per event)
    -- of any whole hour. Each event counts once; sums of n and minima of first_ts are the events'.
    SELECT grain, action, service_principal_name, day, source_ip, dataset, service_principal_id, n, first_ts
    FROM sp_activity_rollup
    WHERE day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
      -- (Implied by the buckets; on 'event' rows it is the events' own ts bound, which prunes.)
      AND first_ts >= $window_start AND first_ts <= $window_end
      AND bucket >= $window_whole_hours_start AND bucket < $window_whole_hours_end
      AND ((grain = 'day' AND bucket >= $window_whole_days_start AND bucket < $window_whole_days_end)
           OR (grain = 'hour' AND (bucket < $window_whole_days_start OR bucket >= $window_whole_days_end))
           OR grain = 'event')
),
per_source AS (
    -- First a plain aggregation (no per-group lists) down to one row per source: the lists are
    -- built from its far fewer rows. `day` (the partition value) is the UTC date of ts, so
    -- grouping on it needs no per-row truncation.
    -- A 'day' row is one already: a day of the window either is whole, and gives only its 'day'
    -- rows (or its events, when its summary is stale), or is not, and gives none.
    SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id, n, first_ts
    FROM rolled WHERE grain = 'day'
    UNION ALL
    SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id,
           sum(n) AS n, min(first_ts) AS first_ts
    FROM (SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id,
                 CAST(1 AS BIGINT) AS n, ts AS first_ts
          FROM activity
          UNION ALL
          SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id, n, first_ts
          FROM rolled WHERE grain <> 'day')
    GROUP BY action, service_principal_name, day, source_ip, dataset, service_principal_id
),
per_ip AS (
    -- Two-level aggregation: distinct IPs counted as rows, which the memory pool bounds.
    SELECT action, service_principal_name, day AS event_day, source_ip,
           sum(n) AS n, min(first_ts) AS first_ts,
           array_agg(dataset) AS datasets, array_agg(service_principal_id) AS sp_ids
    FROM per_source
    GROUP BY action, service_principal_name, day, source_ip
)
SELECT min(first_ts) AS ts, action, service_principal_name, CAST(event_day AS DATE) AS event_day,
       sum(n) AS event_count, count(*) AS ip_count,
       array_sort(array_agg(source_ip)) AS source_ips,
       array_sort(array_distinct(flatten(array_agg(datasets)))) AS datasets,
       array_sort(array_distinct(flatten(array_agg(sp_ids)))) AS service_principal_ids
FROM per_ip
GROUP BY action, service_principal_name, event_day
HAVING sum(n) <= $max_events AND count(*) >= $min_ips
ORDER BY event_count ASC, action, service_principal_name, event_day

-- @backtest
-- Every daily run in [$range_start, $range_end] in one pass. A run ending T reads [T - lookback, T]
-- (both ends), so an event at ts is in the runs on the interval grid from b, the first at or after
-- ts, through the last at or before ts + lookback: (ts + lookback - b) / interval + 1 of them (two
-- for an event exactly at midnight, which the run ending that midnight counts in a day of its
-- own). The first aggregation is grouped by b and that count too, each of its rows is repeated
-- for every run that holds it (and is in the range), and the rest is the single run's query
-- grouped by run as well.
-- On the rule's own grid (interval and look-back one day) every run's window is a whole UTC day
-- and its end, and the first aggregation of a summarized day comes from the rollup
-- `sp_activity_rollup` (src/rollups.rs) instead of the events: day D's 'day' rows are all its
-- events, in the run ending at D + 1d; its events exactly at midnight are in the run ending at D
-- too (their day alone), and are read from the events — only they are (`ts = to_timestamp(day)`:
-- row-group statistics skip the rest), and only on the days whose day rows show one. Days without
-- a current summary give their events as 'event' rows, which go through the grid as events do.
WITH activity AS (
    -- Off the daily grid, the hunt's events of the range (the rollup's source,
    -- sql/rollups/sp_activity_rollup.sql); on it, the 'event' rows of days without a summary.
    SELECT ts, day, dataset, action, service_principal_name, service_principal_id, source_ip
    FROM sp_activity_rollup_events
    WHERE ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
      AND ($interval_us <> 86400000000 OR $lookback_us <> 86400000000)
    UNION ALL
    SELECT first_ts, day, dataset, action, service_principal_name, service_principal_id, source_ip
    FROM sp_activity_rollup
    WHERE grain = 'event' AND first_ts >= $range_start - $lookback AND first_ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
      AND $interval_us = 86400000000 AND $lookback_us = 86400000000
),
summarized AS (
    -- On the daily grid, the 'day' rows of the range's summarized days.
    SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id, bucket, n, first_ts
    FROM sp_activity_rollup
    WHERE grain = 'day'
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
      AND $interval_us = 86400000000 AND $lookback_us = 86400000000
),
per_source_b AS (
    SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id, b, extra_runs,
           count(*) AS n, min(ts) AS first_ts
    FROM (SELECT *, (CAST(ts AS BIGINT) + $lookback_us - b) / $interval_us AS extra_runs
          FROM (SELECT *, ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS b FROM activity))
    GROUP BY action, service_principal_name, day, source_ip, dataset, service_principal_id, b, extra_runs
    UNION ALL
    -- A summarized day, in the run ending at the next midnight.
    SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id,
           CAST(bucket AS BIGINT) + $interval_us AS b, CAST(0 AS BIGINT) AS extra_runs, n, first_ts
    FROM summarized
    UNION ALL
    -- Its events exactly at its midnight, also in the run ending then (a day with one has a day
    -- row starting then).
    SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id,
           CAST(ts AS BIGINT) AS b, CAST(0 AS BIGINT) AS extra_runs, count(*) AS n, min(ts) AS first_ts
    FROM sp_activity_rollup_events
    WHERE ts = to_timestamp(day)
      AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
      AND day IN (SELECT day FROM summarized WHERE first_ts = to_timestamp(day))
    GROUP BY action, service_principal_name, day, source_ip, dataset, service_principal_id, ts
),
per_source AS (
    SELECT * FROM (
        SELECT action, service_principal_name, day, source_ip, dataset, service_principal_id, n, first_ts,
               unnest(generate_series(b, b + extra_runs * $interval_us, $interval_us)) AS run_end_us
        FROM per_source_b)
    WHERE run_end_us >= ((CAST($range_start AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us
      AND run_end_us <= CAST($range_end AS BIGINT)
),
per_ip AS (
    SELECT action, service_principal_name, day AS event_day, source_ip, run_end_us,
           sum(n) AS n, min(first_ts) AS first_ts,
           array_agg(dataset) AS datasets, array_agg(service_principal_id) AS sp_ids
    FROM per_source
    GROUP BY action, service_principal_name, day, source_ip, run_end_us
)
SELECT min(first_ts) AS ts, action, service_principal_name, CAST(event_day AS DATE) AS event_day,
       sum(n) AS event_count, count(*) AS ip_count,
       array_sort(array_agg(source_ip)) AS source_ips,
       array_sort(array_distinct(flatten(array_agg(datasets)))) AS datasets,
       array_sort(array_distinct(flatten(array_agg(sp_ids)))) AS service_principal_ids,
       run_end_us
FROM per_ip
GROUP BY action, service_principal_name, event_day, run_end_us
HAVING sum(n) <= $max_events AND count(*) >= $min_ips
