/*
id = "sp_credential_failures_from_new_source"
name = "Service principal credential failures from a source it never signed in from"
description = """
A service principal failed to sign in with a credential error (an invalid or expired secret or
certificate, an assertion outside its validity, the wrong tenant, a federated credential that does not
match, no credential at all) from an address it never signed in from successfully in the last 10
days. Someone is trying a stolen, stale or guessed credential from their own infrastructure. The
detection a SOC keeps switched on for seed 002's failed sign-ins (sp_failed_signins keeps the
published query as a hunt): failures from the principal's own addresses (an expired secret in its
automation) do not alert, and each principal gives one alert per run, with the addresses, ASNs and
error codes as lists."""
type = "correlation"
severity = "medium"
risk_score = 47
interval = "1h"
lookback = "1h"
history_window = "10d"
new_terms_fields = ["service_principal_id", "term"]
requires = ["asn"]  # severity high needs the addresses' ASNs
tables = ["signins"]
alert_key = ["service_principal_id", "run_end"]
false_positives = ["An automation moved to new infrastructure before its secret was rotated."]
references = ["https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes"]
note = """
Severity high when a failing address is in an ASN the principal never signed in from successfully
(not only a new address in a known network). Credential error codes: 7000215, 7000222 (invalid or
expired secret), 700027 (certificate signature), 700024 (assertion time), 7000012 and 700016
(wrong tenant), 7000218 (no credential), 700211, 700212, 700213 (federated credential mismatch).
Triage: the key tried (credential_key_ids), whether a success from the same address follows
(sp_unusual_source_asn), and recent credential changes (sp_credential_added_after_signin)."""

[mitre]
tactics = ["TA0006 Credential Access", "TA0001 Initial Access"]
techniques = ["T1110 Brute Force", "T1078.004 Valid Accounts: Cloud Accounts"]
*/
WITH failures AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code,
           credential_key_id
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code IN (7000215, 7000222, 700027, 700024, 7000012, 700016, 7000218, 700211, 700212, 700213)
      AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
      AND ts > $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
known AS (
    -- Where the principals signed in successfully in [$history_start, $window_end]: every
    -- principal's sources, not only the failing principals' — a join with the failing principals
    -- is hashed on the wrong side whenever the planner's estimates favour the successes (a 30-day
    -- hunt on large hashed 19.6 M successes: 1.7 GB), and the grouping is small either way.
    -- From the rollup `sp_signin_source_rollup` (src/rollups.rs; its source is exactly these
    -- successes, its keys these three columns), so the ten days of sign-ins are not read. A row
    -- holds a success in the range when its first is at or before the range's end and its last
    -- at or after its start — exact for a row inside the range and for one reaching past a single
    -- end of it. So: when the range spans a midnight, the 'day' rows of every day it touches (the
    -- first day ends before the range does and the last begins after it starts: no day row
    -- reaches past both ends); within one day, that day's 'hour' rows (one reaches past both ends
    -- only in a range shorter than an hour, which reads the events instead); and the 'event' rows
    -- of days without a current summary.
    SELECT service_principal_id, source_ip, source_asn
    FROM (
        SELECT service_principal_id, source_ip, source_asn
        FROM sp_signin_source_rollup
        WHERE day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
          AND first_ts <= $window_end AND last_ts >= $history_start
          AND CAST($window_end AS BIGINT) - CAST($history_start AS BIGINT) >= 3600000000
          -- The grains are chosen by constants and bounded on `bucket` itself, so row-group
          -- statistics skip the other grain's rows, not decoded and tested.
          AND ((grain = 'day' AND date_trunc('day', $history_start) < date_trunc('day', $window_end)
                AND bucket >= date_trunc('day', $history_start) AND bucket <= $window_end)
               OR (grain = 'hour' AND date_trunc('day', $history_start) = date_trunc('day', $window_end))
               OR grain = 'event')
        UNION ALL
        SELECT service_principal_id, source_ip, source_asn
        FROM sp_signin_source_rollup_events
        WHERE ts >= $history_start AND ts <= $window_end
          AND day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
          AND CAST($window_end AS BIGINT) - CAST($history_start AS BIGINT) < 3600000000
    ) AS sources
    GROUP BY service_principal_id, source_ip, source_asn
),
-- The failures and the known sources side by side, a source known to a failure when its
-- partition (principal and address, or principal and ASN) holds a success: the history is read
-- once (two joins read it twice — DataFusion inlines a CTE at every use).
side_by_side AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code,
           credential_key_id, 0 AS success
    FROM failures
    UNION ALL
    SELECT NULL, service_principal_id, NULL, NULL, source_ip, source_asn, NULL, NULL, 1
    FROM known
),
judged AS (
    SELECT *,
           max(success) OVER (PARTITION BY service_principal_id, source_ip) AS ip_known,
           max(success) OVER (PARTITION BY service_principal_id, source_asn) AS asn_known
    FROM side_by_side
),
novel AS (
    SELECT *, (source_asn IS NOT NULL AND asn_known = 0) AS new_asn
    FROM judged
    WHERE success = 0 AND ip_known = 0
)
SELECT min(ts) AS ts, max(ts) AS last_failure, $window_end AS run_end, service_principal_id,
       max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
       min(source_ip) AS source_ip,
       count(*) AS failures,
       count(DISTINCT source_ip) AS distinct_ips,
       array_sort(array_agg(DISTINCT source_ip)) AS source_ips,
       array_sort(array_agg(DISTINCT source_asn) FILTER (WHERE source_asn IS NOT NULL)) AS source_asns,
       array_sort(array_agg(DISTINCT error_code)) AS error_codes,
       array_sort(array_agg(DISTINCT credential_key_id) FILTER (WHERE credential_key_id IS NOT NULL)) AS credential_key_ids,
       bool_or(new_asn) AS from_new_asn,
       CASE WHEN bool_or(new_asn) THEN 'high' ELSE 'medium' END AS severity
FROM novel
GROUP BY service_principal_id

-- @backtest
-- Every hourly run in [$range_start, $range_end] in one pass. With the look-back equal to the
-- interval (as this rule has it), a failure belongs to exactly one run T: the one with
-- T-1h < ts <= T. An address (or ASN) is known to run T when a success from it falls in
-- [T-10d, T]. Successes are bucketed by the run that holds them (each bucket's latest time) and
-- put beside the failures, each at its run T: the running maximum of the buckets' latest
-- success up to T (the buckets of T itself ordered before its failures), per principal and
-- address (and per principal and ASN), is the latest success at or before T, and the source is
-- known when it is at or after T-10d. Each table is read once
-- (a join of every failure with every success bucket of its address, and the failures read
-- again for each use, cost twice as much on 20 days of medium).
WITH in_range AS (
    SELECT * FROM (
        SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code,
               credential_key_id,
               ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us
        FROM signins
        WHERE category = 'ServicePrincipalSignInLogs'
          AND error_code IN (7000215, 7000222, 700027, 700024, 7000012, 700016, 7000218, 700211, 700212, 700213)
          AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
          AND ts > $range_start - $lookback AND ts <= $range_end
          AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d'))
    WHERE run_end_us >= CAST($range_start AS BIGINT) AND run_end_us <= CAST($range_end AS BIGINT)
),
success_buckets AS (
    -- Each run's bucket of successes per source and its latest success (a bucket may come in more
    -- than one row: the running maximum takes the largest), from the rollup
    -- `sp_signin_source_rollup` (src/rollups.rs; its source is exactly these successes). A row of
    -- the clock hour [H, H+1h) goes to the bucket of its first success's run, with its last
    -- success: run H+1h's when its first is after H (all its successes are that run's), run H's
    -- when its first is exactly H. In the latter case its successes after H (run H+1h's) count from
    -- run H on, which changes no run's decision: run H knows the source by the success at H
    -- already, and every later run sees both buckets. 'event' rows (days without a current
    -- summary) are single successes, each in its run's bucket. A row reaching past the range's
    -- start holds earlier successes too, which only lower a maximum that is too old for every run
    -- either way; one reaching past its end goes to a bucket after every run. Exact when the
    -- interval is the rollup's hour; any other interval reads the events.
    SELECT service_principal_id, source_ip, source_asn,
           ((CAST(first_ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS bucket_us,
           CAST(last_ts AS BIGINT) AS last_us
    FROM sp_signin_source_rollup
    WHERE grain IN ('hour', 'event') AND $interval_us = 3600000000
      AND first_ts <= $range_end AND last_ts >= $range_start - $lookback - $history
      AND day >= to_char($range_start - $lookback - $history, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT service_principal_id, source_ip, source_asn,
           ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us, CAST(ts AS BIGINT)
    FROM sp_signin_source_rollup_events
    WHERE $interval_us <> 3600000000
      AND ts >= $range_start - $lookback - $history AND ts <= $range_end
      AND day >= to_char($range_start - $lookback - $history, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
side_by_side AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code,
           credential_key_id, run_end_us, CAST(NULL AS BIGINT) AS last_us, true AS failure
    FROM in_range
    UNION ALL
    SELECT NULL, service_principal_id, NULL, NULL, source_ip, source_asn, NULL, NULL, bucket_us, last_us, false
    FROM success_buckets
),
judged AS (
    SELECT *,
           max(last_us) OVER (PARTITION BY service_principal_id, source_ip ORDER BY run_end_us, failure
                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ip_last_us
    FROM side_by_side
),
novel AS (
    -- The failures from an address unknown to their run, numbered (to count each once below).
    SELECT *, row_number() OVER () AS failure_no
    FROM judged
    WHERE failure AND (ip_last_us IS NULL OR ip_last_us < run_end_us - $history_us)
),
asn_judged AS (
    -- Whether a novel failure's ASN is new to its run T: no success of the principal from that ASN
    -- in [T-10d, T] — what a running maximum over the buckets up to T tests, asked here of the few
    -- novel failures only (a second window over every bucket, partitioned by ASN, sorted two
    -- million rows for 30 days of medium). Read from the rollup's 'day' rows ('event' rows for
    -- days without a current summary), not its hours: a row holds a success in the range when its
    -- first is at or before T and its last at or after T-10d — exact, as the range is longer than
    -- a day, so no row reaches past both of its ends. A failure joined to k such rows comes k
    -- times: the aggregation counts failures by number. The rows' times are made nullable
    -- (`nullif` with a time none has, which the optimizer cannot drop as it drops a CASE): a
    -- sort-merge join (Ballista plans one) pads the unmatched failures' columns with nulls before
    -- its filter, and a column declared non-nullable fails the job.
    SELECT n.*, (n.source_asn IS NOT NULL AND s.last_us IS NULL) AS new_asn
    FROM novel n
    LEFT JOIN (SELECT service_principal_id, source_asn, nullif(CAST(first_ts AS BIGINT), -1) AS first_us,
                      nullif(CAST(last_ts AS BIGINT), -1) AS last_us
               FROM sp_signin_source_rollup
               WHERE grain IN ('day', 'event') AND source_asn IS NOT NULL
                 AND first_ts <= $range_end AND last_ts >= $range_start - $lookback - $history
                 AND day >= to_char($range_start - $lookback - $history, '%Y-%m-%d')
                 AND day <= to_char($range_end, '%Y-%m-%d')) s
      ON s.service_principal_id = n.service_principal_id AND s.source_asn = n.source_asn
     AND s.first_us <= n.run_end_us AND s.last_us >= n.run_end_us - $history_us
)
SELECT min(ts) AS ts, max(ts) AS last_failure,
       arrow_cast(run_end_us, 'Timestamp(Microsecond, Some("UTC"))') AS run_end, service_principal_id,
       max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
       min(source_ip) AS source_ip,
       count(DISTINCT failure_no) AS failures,
       count(DISTINCT source_ip) AS distinct_ips,
       array_sort(array_agg(DISTINCT source_ip)) AS source_ips,
       array_sort(array_agg(DISTINCT source_asn) FILTER (WHERE source_asn IS NOT NULL)) AS source_asns,
       array_sort(array_agg(DISTINCT error_code)) AS error_codes,
       array_sort(array_agg(DISTINCT credential_key_id) FILTER (WHERE credential_key_id IS NOT NULL)) AS credential_key_ids,
       bool_or(new_asn) AS from_new_asn,
       CASE WHEN bool_or(new_asn) THEN 'high' ELSE 'medium' END AS severity,
       run_end_us
FROM asn_judged
GROUP BY service_principal_id, run_end_us

-- @terms
-- First-seen state: where each principal signed in successfully, as terms 'ip:<address>' and
-- 'asn:<number>', from the successes with $range_start < ts <= $range_end.
SELECT service_principal_id, 'ip:' || source_ip AS term, ts
FROM signins
WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
  AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
  AND ts > $range_start AND ts <= $range_end
  AND day >= to_char($range_start, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
UNION ALL
SELECT service_principal_id, 'asn:' || CAST(source_asn AS VARCHAR) AS term, ts
FROM signins
WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
  AND service_principal_id IS NOT NULL AND source_asn IS NOT NULL
  AND ts > $range_start AND ts <= $range_end
  AND day >= to_char($range_start, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')

-- @stateful
-- One run with the state: terms_state holds the successes up to $window_start; those last seen
-- at or after $history_start, with the window's own successes, are what the principal knows.
WITH failures AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code,
           credential_key_id
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code IN (7000215, 7000222, 700027, 700024, 7000012, 700016, 7000218, 700211, 700212, 700213)
      AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
      AND ts > $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
window_known AS (
    SELECT service_principal_id, source_ip, source_asn
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IN (SELECT DISTINCT service_principal_id FROM failures)
      AND ts > $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
    GROUP BY service_principal_id, source_ip, source_asn
),
state_known AS (
    SELECT service_principal_id, term FROM terms_state
    WHERE last_seen >= $history_start AND service_principal_id IN (SELECT DISTINCT service_principal_id FROM failures)
),
known_ip AS (
    SELECT DISTINCT service_principal_id, source_ip FROM window_known
    UNION
    SELECT service_principal_id, substr(term, 4) FROM state_known WHERE starts_with(term, 'ip:')
),
known_asn AS (
    SELECT DISTINCT service_principal_id, source_asn FROM window_known WHERE source_asn IS NOT NULL
    UNION
    SELECT service_principal_id, CAST(substr(term, 5) AS BIGINT) FROM state_known WHERE starts_with(term, 'asn:')
),
novel AS (
    SELECT f.*, (f.source_asn IS NOT NULL AND ka.source_asn IS NULL) AS new_asn
    FROM failures f
    LEFT JOIN known_ip ki ON ki.service_principal_id = f.service_principal_id AND ki.source_ip = f.source_ip
    LEFT JOIN known_asn ka ON ka.service_principal_id = f.service_principal_id AND ka.source_asn = f.source_asn
    WHERE ki.source_ip IS NULL
)
SELECT min(ts) AS ts, max(ts) AS last_failure, $window_end AS run_end, service_principal_id,
       max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
       min(source_ip) AS source_ip,
       count(*) AS failures,
       count(DISTINCT source_ip) AS distinct_ips,
       array_sort(array_agg(DISTINCT source_ip)) AS source_ips,
       array_sort(array_agg(DISTINCT source_asn) FILTER (WHERE source_asn IS NOT NULL)) AS source_asns,
       array_sort(array_agg(DISTINCT error_code)) AS error_codes,
       array_sort(array_agg(DISTINCT credential_key_id) FILTER (WHERE credential_key_id IS NOT NULL)) AS credential_key_ids,
       bool_or(new_asn) AS from_new_asn,
       CASE WHEN bool_or(new_asn) THEN 'high' ELSE 'medium' END AS severity
FROM novel
GROUP BY service_principal_id

-- @stateful_backtest
-- Every hourly run in [$range_start, $range_end] in one pass with the state (a catch-up):
-- terms_state holds each principal's addresses and ASNs with their latest success up to
-- $range_start - $lookback, the first run's window start. The one-pass backtest's form, reading
-- only the range: the success buckets are the range's own and the state's terms (as buckets
-- before every run), and a source is known to run T when the latest success of the buckets up to
-- T is at or after T-10d.
WITH in_range AS (
    SELECT * FROM (
        SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code,
               credential_key_id,
               ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us
        FROM signins
        WHERE category = 'ServicePrincipalSignInLogs'
          AND error_code IN (7000215, 7000222, 700027, 700024, 7000012, 700016, 7000218, 700211, 700212, 700213)
          AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
          AND ts > $range_start - $lookback AND ts <= $range_end
          AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d'))
    WHERE run_end_us >= CAST($range_start AS BIGINT) AND run_end_us <= CAST($range_end AS BIGINT)
),
success_buckets AS (
    SELECT service_principal_id, source_ip, source_asn,
           ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS bucket_us,
           max(CAST(ts AS BIGINT)) AS last_us
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IS NOT NULL
      AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
    GROUP BY service_principal_id, source_ip, source_asn,
             ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us
),
state_buckets AS (
    -- The state's terms, as buckets before every run of the range (their latest success is at or
    -- before the first run's window start).
    SELECT service_principal_id,
           CASE WHEN starts_with(term, 'ip:') THEN substr(term, 4) END AS source_ip,
           CASE WHEN starts_with(term, 'asn:') THEN CAST(substr(term, 5) AS BIGINT) END AS source_asn,
           CAST(0 AS BIGINT) AS bucket_us, CAST(last_seen AS BIGINT) AS last_us
    FROM terms_state
),
side_by_side AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code,
           credential_key_id, run_end_us, CAST(NULL AS BIGINT) AS last_us, true AS failure
    FROM in_range
    UNION ALL
    SELECT NULL, service_principal_id, NULL, NULL, source_ip, source_asn, NULL, NULL, bucket_us, last_us, false
    FROM success_buckets
    UNION ALL
    SELECT NULL, service_principal_id, NULL, NULL, source_ip, source_asn, NULL, NULL, bucket_us, last_us, false
    FROM state_buckets
),
judged AS (
    SELECT *,
           max(last_us) OVER (PARTITION BY service_principal_id, source_ip ORDER BY run_end_us, failure
                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS ip_last_us,
           max(last_us) OVER (PARTITION BY service_principal_id, source_asn ORDER BY run_end_us, failure
                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS asn_last_us
    FROM side_by_side
),
novel AS (
    SELECT *, (source_asn IS NOT NULL AND (asn_last_us IS NULL OR asn_last_us < run_end_us - $history_us)) AS new_asn
    FROM judged
    WHERE failure AND (ip_last_us IS NULL OR ip_last_us < run_end_us - $history_us)
)
SELECT min(ts) AS ts, max(ts) AS last_failure,
       arrow_cast(run_end_us, 'Timestamp(Microsecond, Some("UTC"))') AS run_end, service_principal_id,
       max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
       min(source_ip) AS source_ip,
       count(*) AS failures,
       count(DISTINCT source_ip) AS distinct_ips,
       array_sort(array_agg(DISTINCT source_ip)) AS source_ips,
       array_sort(array_agg(DISTINCT source_asn) FILTER (WHERE source_asn IS NOT NULL)) AS source_asns,
       array_sort(array_agg(DISTINCT error_code)) AS error_codes,
       array_sort(array_agg(DISTINCT credential_key_id) FILTER (WHERE credential_key_id IS NOT NULL)) AS credential_key_ids,
       bool_or(new_asn) AS from_new_asn,
       CASE WHEN bool_or(new_asn) THEN 'high' ELSE 'medium' END AS severity,
       run_end_us
FROM novel
GROUP BY service_principal_id, run_end_us
