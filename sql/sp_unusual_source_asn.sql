/*
id = "sp_unusual_source_asn"
name = "Entra ID Service Principal with Unusual Source ASN"
description = """
A service principal signed in successfully from an autonomous system it has not used in the last
10 days. Stolen client secrets and certificates are typically used from attacker infrastructure
(VPS, hosting, residential proxies) rather than the CI or cloud networks the app normally uses.
Reproduces Elastic's new_terms rule exactly: a (service_principal_id, source_asn) pair is new when
its earliest occurrence in [T-10d, T] is strictly later than T-65m."""
type = "new_terms"
severity = "medium"
risk_score = 47
interval = "1h"
lookback = "65m"
history_window = "10d"
new_terms_fields = ["service_principal_id", "source_asn"]
max_alerts = 100
tables = ["signins"]
requires = ["asn"]
alert_key = ["service_principal_id", "source_asn", "id"]
false_positives = [
  "A new CI/CD runner, cloud region or egress NAT for an existing automation.",
  "Principals that run from developer workstations.",
]
references = ["https://www.elastic.co/guide/en/security/current/entra-id-service-principal-with-unusual-source-asn.html"]
note = """
The alert carries what the triage guide works from: the address, its ASN and organization, its
country and city, the application's display name, the sign-in's correlation id and the credential
used. Triage: look at the principal's other sign-ins from the new ASN (wisp pivot sp <id>), the credential
used (credential_key_id: a newly added key is a strong signal), and what it did afterwards (Graph
calls, mailbox access). Microsoft-owned apps and Microsoft ASNs are excluded, as in the published
rule; a NULL AS organization is not excluded."""

[mitre]
tactics = ["TA0001 Initial Access", "TA0005 Defense Evasion"]
techniques = ["T1078.004 Valid Accounts: Cloud Accounts"]
*/
-- A pair alerts when its earliest candidate in [T-10d, T] is after T-65m: it has a candidate in
-- the window and none in [T-10d, T-65m]. The history comes from the rollup `sp_asn_rollup`
-- (src/rollups.rs; its source is exactly these candidates, its keys the pair), so the ten days of
-- sign-ins are not read; only the window's candidates are, the new pairs' first ones ranked to
-- report each pair's oldest row.
WITH history AS (
    -- The pairs with a candidate in [$history_start, $window_start]. A row has a candidate in the
    -- range when its first is at or before the range's end and its last at or after its start —
    -- exact for a row inside the range and for one reaching past a single end of it. So: when the
    -- range spans a midnight, the 'day' rows of every day it touches (the first day ends before
    -- the range does and the last begins after it starts: no day row reaches past both ends);
    -- within one day, that day's 'hour' rows (one reaches past both ends only in a range shorter
    -- than an hour — a window longer than the history less an hour —, which reads the events
    -- instead); and the 'event' rows of days without a current summary.
    -- Each key once: the anti join below hashes the window's rows, many per key, and every
    -- history row probing a key walks all of them; ungrouped, the 'event' rows of days without a
    -- summary (today's, in every scheduled run) probed them millions of times (17 s for one
    -- window of medium with every day raw).
    SELECT service_principal_id, source_asn
    FROM (
        SELECT service_principal_id, source_asn
        FROM sp_asn_rollup
        WHERE day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_start, '%Y-%m-%d')
          AND first_ts <= $window_start AND last_ts >= $history_start
          AND CAST($window_start AS BIGINT) - CAST($history_start AS BIGINT) >= 3600000000
          -- The grains are chosen by constants and bounded on `bucket` itself, so row-group
          -- statistics skip the other grain's rows, not decoded and tested.
          AND ((grain = 'day' AND date_trunc('day', $history_start) < date_trunc('day', $window_start)
                AND bucket >= date_trunc('day', $history_start) AND bucket <= $window_start)
               OR (grain = 'hour' AND date_trunc('day', $history_start) = date_trunc('day', $window_start))
               OR grain = 'event')
        UNION ALL
        -- `sp_asn_rollup_events` is the rollup's source (sql/rollups/): these candidates, by event.
        SELECT service_principal_id, source_asn
        FROM sp_asn_rollup_events
        WHERE ts >= $history_start AND ts <= $window_start
          AND day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_start, '%Y-%m-%d')
          AND CAST($window_start AS BIGINT) - CAST($history_start AS BIGINT) < 3600000000
    ) AS h
    GROUP BY service_principal_id, source_asn
),
candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id,
           app_display_name, correlation_id, country, city
    -- The rollup's source (sql/rollups/sp_asn_rollup.sql): the candidates, one definition for the
    -- history and the rows reported.
    FROM sp_asn_rollup_events
    WHERE ts > $window_start AND ts >= $history_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
new_pairs AS (
    -- The new pairs and their first time in the window: a hash aggregate of the candidates' keys
    -- and times. Ranking every candidate instead sorted them all (a 30-day hunt of large: 18.8 M
    -- rows, 38 s and 2.4 GB).
    SELECT service_principal_id, source_asn, min(ts) AS first_ts
    FROM candidates c
    WHERE NOT EXISTS (SELECT 1 FROM history h
                      WHERE h.service_principal_id = c.service_principal_id AND h.source_asn = c.source_asn)
    GROUP BY service_principal_id, source_asn
),
ranked AS (
    -- The oldest row of each new pair: of its candidates at its first time, the least id. The
    -- pairs are the join's build side (first), so their keys reach the candidates' scan and the
    -- other candidates' columns are not decoded. The times are compared as integers, which every
    -- join compares (a join that runs out of memory runs again sort-merge, whose semi and anti
    -- forms cannot compare times with a zone in DataFusion 55).
    SELECT c.*, row_number() OVER (PARTITION BY c.service_principal_id, c.source_asn ORDER BY c.ts, c.id) AS rn
    FROM new_pairs n
    JOIN candidates c
      ON c.service_principal_id = n.service_principal_id AND c.source_asn = n.source_asn
     AND CAST(c.ts AS BIGINT) = CAST(n.first_ts AS BIGINT)
)
SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city
FROM ranked
WHERE rn = 1

-- @backtest
-- Every hourly run in [$range_start, $range_end] in one pass (no replay of each run). A row alerts
-- in run T (on the interval grid) when T-65m < ts <= T and the pair's previous occurrence is older
-- than T-10d (or there is none): then it is the oldest row of a pair first seen after T-65m. The
-- first such run is the one that reports it, exactly as replaying the runs one by one would.
-- Only the first row of a pair in each clock hour can alert (any later row's previous occurrence
-- is less than an hour old, and the history window exceeds an hour plus the look-back), so the pairs
-- are aggregated per hour first and the previous occurrence is the previous hour-bucket's last
-- sighting: the ordered window runs over buckets, not over every sign-in.
WITH in_range AS (
    -- The rollup's rows with a candidate in [the first run's history start, the range's end].
    -- (DataFusion plans a CTE again at each use, so both branches below scan with these bounds.)
    SELECT grain, bucket, service_principal_id, source_asn, first_ts, last_ts
    FROM sp_asn_rollup
    WHERE first_ts <= $range_end AND last_ts >= $range_start - $history - $lookback
      AND day >= to_char($range_start - $history - $lookback, '%Y-%m-%d')
      AND day <= to_char($range_end, '%Y-%m-%d')
),
buckets AS (
    -- The pairs' candidates per clock hour from the rollup `sp_asn_rollup` (src/rollups.rs; its
    -- source is exactly these candidates): its 'hour' rows, and the 'event' rows of days without a
    -- current summary grouped by hour. An hour row reaching past the range's start holds earlier
    -- candidates too, which change only its first time, and that bucket cannot alert (its hour is
    -- more than the history before every run's window); one reaching past the range's end has a
    -- later last time, which is the previous occurrence only of buckets after the range, and those
    -- do not alert either. So the alerts are those of the candidates in the range. The rollup's
    -- keys are the pair, so an 'hour' row is its pair's only row of that hour (a day has 'hour'
    -- rows or 'event' rows, never both): only the 'event' rows are grouped (grouping the 'hour'
    -- rows too, each a group of one, was a third of the backtest's CPU over 30 days of medium),
    -- and an 'hour' row's hour is its `bucket` (`date_trunc` of 1.5 M times cost 0.3 s of CPU).
    -- An event's hour is `date_bin`'s, integer arithmetic: `date_trunc` converts each value of a
    -- UTC timestamp through the time zone (five times the CPU; the same hours).
    SELECT service_principal_id, source_asn, bucket AS hour, first_ts, last_ts
    FROM in_range
    WHERE grain = 'hour'
    UNION ALL
    SELECT service_principal_id, source_asn, arrow_cast(date_bin(INTERVAL '1 hour', first_ts), 'Timestamp(µs, "UTC")') AS hour, min(first_ts) AS first_ts,
           max(last_ts) AS last_ts
    FROM in_range
    WHERE grain = 'event'
    GROUP BY service_principal_id, source_asn, arrow_cast(date_bin(INTERVAL '1 hour', first_ts), 'Timestamp(µs, "UTC")')
),
candidates AS (
    -- The sign-ins themselves, only for the alerting buckets' first rows: those are after the
    -- first run's window start (a bucket alerts in a run whose window holds its first time).
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id,
           app_display_name, correlation_id, country, city
    FROM sp_asn_rollup_events
    WHERE ts > $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d')
      AND day <= to_char($range_end, '%Y-%m-%d')
),
lagged AS (
    SELECT *, CAST(first_ts AS BIGINT) AS ts_us,
           CAST(lag(last_ts) OVER (PARTITION BY service_principal_id, source_asn ORDER BY hour) AS BIGINT) AS prev_us
    FROM buckets
),
bounds AS (
    SELECT *,
           greatest(ts_us, coalesce(prev_us + $history_us + 1, ts_us), CAST($range_start AS BIGINT)) AS lo_us,
           least(ts_us + $lookback_us - 1, CAST($range_end AS BIGINT)) AS hi_us
    FROM lagged
),
runs AS (
    SELECT service_principal_id, source_asn, first_ts,
           ((lo_us + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us, hi_us
    FROM bounds
),
alerting AS (
    SELECT service_principal_id, source_asn, first_ts, run_end_us FROM runs WHERE run_end_us <= hi_us
),
firsts AS (
    -- The alerting bucket's first row (ties in time: the smallest id, as ORDER BY ts, id). The
    -- alerting buckets are the join's build side, their times compared as integers, as in the
    -- single run's `ranked`.
    SELECT c.*, a.run_end_us, row_number() OVER (PARTITION BY c.service_principal_id, c.source_asn, c.ts ORDER BY c.id) AS rn
    FROM alerting a
    JOIN candidates c
      ON c.service_principal_id = a.service_principal_id AND c.source_asn = a.source_asn
     AND CAST(c.ts AS BIGINT) = CAST(a.first_ts AS BIGINT)
)
SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city, run_end_us
FROM firsts
WHERE rn = 1

-- @terms
-- First-seen state: the pairs (and their times) of the candidate sign-ins with
-- $range_start < ts <= $range_end (through the rollup's source, sql/rollups/sp_asn_rollup.sql: one
-- definition of the candidates for every section). wisp keeps each pair's first and last sighting.
SELECT service_principal_id, source_asn, ts
FROM sp_asn_rollup_events
WHERE ts > $range_start AND ts <= $range_end
  AND day >= to_char($range_start, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')

-- @stateful
-- One run with the state: terms_state covers every candidate up to $window_start, so a pair is
-- new when the state does not have it or last saw it before $history_start. Only the window is read.
WITH candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id,
           app_display_name, correlation_id, country, city
    FROM sp_asn_rollup_events
    WHERE ts > $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY service_principal_id, source_asn ORDER BY ts, id) AS rn
    FROM candidates
)
SELECT r.ts, r.id, r.service_principal_id, r.service_principal_name, r.app_id, r.source_ip, r.source_asn,
       r.source_as_org, r.resource_display_name, r.credential_key_id, r.app_display_name, r.correlation_id, r.country, r.city
FROM ranked r
LEFT JOIN terms_state s ON s.service_principal_id = r.service_principal_id AND s.source_asn = r.source_asn
WHERE r.rn = 1 AND (s.last_seen IS NULL OR s.last_seen < $history_start)

-- @stateful_backtest
-- Every hourly run in [$range_start, $range_end] in one pass with the state (a catch-up):
-- terms_state holds each pair's latest sighting up to $range_start - $lookback, the first run's
-- window start. That sighting stands in for the history @backtest reads: it is the only earlier
-- one that can be a bucket's previous occurrence, and a bucket holding it cannot alert (its first
-- time is before every run's window). Pairs last seen before the first run's history are not in
-- the state; they are unseen to every later run as well. Only the range's sign-ins are read.
WITH candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id,
           app_display_name, correlation_id, country, city
    FROM sp_asn_rollup_events
    WHERE ts > $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
sightings AS (
    SELECT service_principal_id, source_asn, ts FROM candidates
    UNION ALL
    SELECT service_principal_id, source_asn, last_seen AS ts FROM terms_state
),
buckets AS (
    SELECT service_principal_id, source_asn, arrow_cast(date_bin(INTERVAL '1 hour', ts), 'Timestamp(µs, "UTC")') AS hour, min(ts) AS first_ts, max(ts) AS last_ts
    FROM sightings
    GROUP BY service_principal_id, source_asn, arrow_cast(date_bin(INTERVAL '1 hour', ts), 'Timestamp(µs, "UTC")')
),
lagged AS (
    SELECT *, CAST(first_ts AS BIGINT) AS ts_us,
           CAST(lag(last_ts) OVER (PARTITION BY service_principal_id, source_asn ORDER BY hour) AS BIGINT) AS prev_us
    FROM buckets
),
bounds AS (
    SELECT *,
           greatest(ts_us, coalesce(prev_us + $history_us + 1, ts_us), CAST($range_start AS BIGINT)) AS lo_us,
           least(ts_us + $lookback_us - 1, CAST($range_end AS BIGINT)) AS hi_us
    FROM lagged
),
runs AS (
    SELECT service_principal_id, source_asn, first_ts,
           ((lo_us + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us, hi_us
    FROM bounds
),
alerting AS (
    SELECT service_principal_id, source_asn, first_ts, run_end_us FROM runs WHERE run_end_us <= hi_us
),
firsts AS (
    SELECT c.*, a.run_end_us, row_number() OVER (PARTITION BY c.service_principal_id, c.source_asn, c.ts ORDER BY c.id) AS rn
    FROM alerting a
    JOIN candidates c
      ON c.service_principal_id = a.service_principal_id AND c.source_asn = a.source_asn
     AND CAST(c.ts AS BIGINT) = CAST(a.first_ts AS BIGINT)
)
SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city, run_end_us
FROM firsts
WHERE rn = 1
