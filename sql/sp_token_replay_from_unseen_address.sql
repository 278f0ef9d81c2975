/*
id = "sp_token_replay_from_unseen_address"
name = "Workload identity token used from an address none of its sign-ins used"
description = """
A service principal or managed identity called Azure Resource Manager (Azure Activity, matched by
Caller as seed 002 does) or Key Vault (matched by the token's object-id claim) from a public
address that none of its sign-ins in the surrounding hours came from. Tokens are issued at sign-in
to the address that signed in; the same token used from elsewhere is the tell of a stolen access
token replayed by someone else."""
type = "correlation"
severity = "high"
risk_score = 73
interval = "1h"
lookback = "1h"
requires = ["asn"]
tables = ["azure_activity", "resource_logs", "signins"]
alert_key = ["service_principal_id", "source_ip", "ts"]
false_positives = [
  "A workload whose outbound address differs between its token requests and its API calls (split NAT, proxies).",
  "Azure services calling on the principal's behalf from Microsoft's own networks (excluded when ASN data is present).",
]
references = ["https://learn.microsoft.com/en-us/entra/identity/monitoring-health/concept-sign-ins"]
note = """
Judged only for principals with a sign-in that has an address within `surrounding` (3 hours) of the
call, before or after (managed identities often sign in without one); private and reserved
addresses are excluded (a private endpoint), as are Microsoft's networks (AS organization containing
Microsoft, filled at ingest with --asn-db). One alert per principal and address per run,
with the operations, the resources and the sign-in addresses it was compared with."""

[params]
surrounding = { duration = "3h" }

[mitre]
tactics = ["TA0005 Defense Evasion", "TA0008 Lateral Movement"]
techniques = ["T1550.001 Use Alternate Authentication Material: Application Access Token"]
*/
WITH calls AS (
    SELECT ts, id, 'azure_activity' AS source, caller AS principal_id, caller_app_id AS app_id, caller_ip,
           operation_name, resource_id, source_as_org AS as_org
    FROM azure_activity
    WHERE caller IS NOT NULL AND caller_ip IS NOT NULL
      AND ts > $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, id, 'keyvault', caller_object_id, caller_app_id, caller_ip, operation_name, resource_id, source_as_org
    FROM resource_logs
    WHERE lower(resource_provider) = 'microsoft.keyvault' AND caller_object_id IS NOT NULL AND caller_ip IS NOT NULL
      AND ts > $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
public_calls AS (
    SELECT * FROM calls
    WHERE NOT coalesce(is_private_ip(caller_ip), false)
      AND coalesce(as_org, '') NOT ILIKE '%microsoft%'
),
si_rows AS (
    -- The successful sign-ins with an address in [$window_start - $surrounding, $window_end +
    -- $surrounding], from the rollup `sp_signin_address_rollup` (src/rollups.rs; its source is
    -- exactly these sign-ins, its keys principal, address and app): the 'hour' rows (and the
    -- 'event' rows of days without a current summary) of the range's whole hours, each with its
    -- first and last sign-in, and the sign-ins themselves in the partial hours at its ends. A
    -- bucket of `si` below is a whole number of hours when `surrounding` is (3 hours unless
    -- changed), so an hour row falls in one bucket and the bucket's first, last and app are the
    -- sign-ins'; any other `surrounding` reads the sign-ins alone. A range's end on the hour
    -- (every scheduled run's) holds of its last hour the sign-ins at that instant only: the
    -- keys whose hour row begins there (`first_ts` at the range's end, as `first_ts <= end`
    -- leaves it), each with that instant as its first and last; and a start on the hour has no
    -- partial hour. Then no sign-in is read: the second arm is dropped before planning
    -- (src/rules/arms.rs; it comes second, as the first arm of a union always stays).
    SELECT service_principal_id, source_ip, app_id, first_ts,
           CASE WHEN bucket = $window_end + $surrounding THEN first_ts ELSE last_ts END AS last_ts
    FROM sp_signin_address_rollup
    WHERE grain IN ('hour', 'event') AND $surrounding_us % 3600000000 = 0
      AND bucket >= date_trunc('hour', $window_start - $surrounding - INTERVAL '1 microsecond') + INTERVAL '1 hour'
      AND (bucket < date_trunc('hour', $window_end + $surrounding) OR bucket = $window_end + $surrounding)
      -- (Implied by the buckets, but for the range's end on the hour, where it keeps the keys with
      -- a sign-in at the end itself; on 'event' rows it is the events' own ts bound, which prunes.)
      AND first_ts >= $window_start - $surrounding AND first_ts <= $window_end + $surrounding
      AND day >= to_char($window_start - $surrounding, '%Y-%m-%d')
      AND day <= to_char($window_end + $surrounding, '%Y-%m-%d')
    UNION ALL
    SELECT service_principal_id, source_ip, app_id, ts AS first_ts, ts AS last_ts
    FROM sp_signin_address_rollup_events
    WHERE ts >= $window_start - $surrounding AND ts <= $window_end + $surrounding
      AND ((ts < date_trunc('hour', $window_start - $surrounding - INTERVAL '1 microsecond') + INTERVAL '1 hour'
            AND $window_start - $surrounding <> date_trunc('hour', $window_start - $surrounding))
           OR (ts >= date_trunc('hour', $window_end + $surrounding)
               AND $window_end + $surrounding <> date_trunc('hour', $window_end + $surrounding))
           OR $surrounding_us % 3600000000 <> 0)
      AND day >= to_char($window_start - $surrounding, '%Y-%m-%d')
      AND day <= to_char($window_end + $surrounding, '%Y-%m-%d')
),
si AS (
    -- The sign-ins per principal, address and `surrounding`-long time bucket, with the first and
    -- last of them: a call at t has a sign-in of a bucket within `surrounding` of it exactly when
    -- last >= t - surrounding and first <= t + surrounding (a bucket is no longer than that
    -- span, so it cannot straddle both its ends), and only the buckets next to the call's can.
    -- Joining on (principal, bucket) keeps a long window from pairing every call with every
    -- sign-in of its principal.
    SELECT service_principal_id, source_ip, max(app_id) AS app_id, min(first_ts) AS first_ts, max(last_ts) AS last_ts,
           CAST(first_ts AS BIGINT) / $surrounding_us AS b
    FROM si_rows
    GROUP BY service_principal_id, source_ip, CAST(first_ts AS BIGINT) / $surrounding_us
),
si_near AS (
    SELECT service_principal_id, source_ip, app_id, first_ts, last_ts, unnest(make_array(b - 1, b, b + 1)) AS nb FROM si
),
judged AS (
    -- Each call against its principal's sign-ins within `surrounding` of it.
    SELECT c.source, c.id, c.ts, c.principal_id, c.caller_ip, c.operation_name, c.resource_id,
           max(s.app_id) AS app_id,
           max(CASE WHEN s.source_ip = c.caller_ip THEN 1 ELSE 0 END) AS seen,
           -- Not DISTINCT: the alert's list is made distinct once; a DISTINCT list per call has
           -- no vectorized accumulator (on large, 2.8 M calls: 27 s → 22 s for the backtest).
           array_agg(s.source_ip) AS signin_ips
    FROM public_calls c
    JOIN si_near s ON s.service_principal_id = c.principal_id AND s.nb = CAST(c.ts AS BIGINT) / $surrounding_us
     -- (In microseconds: the same bounds, as `surrounding` is a whole number of them, tested
     -- with integer arithmetic; an interval added to a UTC timestamp goes through the time zone
     -- for every candidate pair.)
     AND CAST(s.last_ts AS BIGINT) >= CAST(c.ts AS BIGINT) - $surrounding_us
     AND CAST(s.first_ts AS BIGINT) <= CAST(c.ts AS BIGINT) + $surrounding_us
    GROUP BY c.source, c.id, c.ts, c.principal_id, c.caller_ip, c.operation_name, c.resource_id
)
SELECT min(ts) AS ts, principal_id AS service_principal_id, max(app_id) AS app_id, caller_ip AS source_ip,
       count(*) AS calls,
       array_sort(array_agg(DISTINCT source)) AS sources,
       array_sort(array_agg(DISTINCT operation_name)) AS operations,
       array_sort(array_agg(DISTINCT resource_id)) AS resources,
       array_sort(array_distinct(flatten(array_agg(signin_ips)))) AS signin_ips
FROM judged
WHERE seen = 0
GROUP BY principal_id, caller_ip

-- @backtest
-- Every hourly run in [$range_start, $range_end] in one pass. With the look-back equal to the
-- interval (as this rule has it), a call belongs to exactly one run T: the one with
-- T-1h < ts <= T; it is judged against the sign-ins within `surrounding` of it, which do not
-- depend on the run, so the runs' alerts are the calls grouped by run as well.
WITH calls AS (
    SELECT ts, id, 'azure_activity' AS source, caller AS principal_id, caller_app_id AS app_id, caller_ip,
           operation_name, resource_id, source_as_org AS as_org
    FROM azure_activity
    WHERE caller IS NOT NULL AND caller_ip IS NOT NULL
      AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, id, 'keyvault', caller_object_id, caller_app_id, caller_ip, operation_name, resource_id, source_as_org
    FROM resource_logs
    WHERE lower(resource_provider) = 'microsoft.keyvault' AND caller_object_id IS NOT NULL AND caller_ip IS NOT NULL
      AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
public_calls AS (
    SELECT * FROM (
        SELECT *, ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us AS run_end_us FROM calls
        WHERE NOT coalesce(is_private_ip(caller_ip), false)
          AND coalesce(as_org, '') NOT ILIKE '%microsoft%')
    WHERE run_end_us >= CAST($range_start AS BIGINT) AND run_end_us <= CAST($range_end AS BIGINT)
),
si AS (
    -- The sign-ins per principal, address and `surrounding`-long time bucket, with the first and
    -- last of them: a call at t has a sign-in of a bucket within `surrounding` of it exactly when
    -- last >= t - surrounding and first <= t + surrounding (a bucket is no longer than that
    -- span, so it cannot straddle both its ends), and only the buckets next to the call's can.
    -- Joining on (principal, bucket) keeps a long window from pairing every call with every
    -- sign-in of its principal.
    SELECT service_principal_id, source_ip, max(app_id) AS app_id, min(ts) AS first_ts, max(ts) AS last_ts,
           CAST(ts AS BIGINT) / $surrounding_us AS b
    FROM signins
    WHERE service_principal_id IS NOT NULL AND source_ip IS NOT NULL AND error_code = 0
      AND category IN ('ServicePrincipalSignInLogs', 'ManagedIdentitySignInLogs')
      AND ts >= $range_start - $lookback - $surrounding AND ts <= $range_end + $surrounding
      AND day >= to_char($range_start - $lookback - $surrounding, '%Y-%m-%d')
      AND day <= to_char($range_end + $surrounding, '%Y-%m-%d')
    GROUP BY service_principal_id, source_ip, CAST(ts AS BIGINT) / $surrounding_us
),
si_near AS (
    SELECT service_principal_id, source_ip, app_id, first_ts, last_ts, unnest(make_array(b - 1, b, b + 1)) AS nb FROM si
),
judged AS (
    SELECT c.source, c.id, c.ts, c.principal_id, c.caller_ip, c.operation_name, c.resource_id, c.run_end_us,
           max(s.app_id) AS app_id,
           max(CASE WHEN s.source_ip = c.caller_ip THEN 1 ELSE 0 END) AS seen,
           -- Not DISTINCT: the alert's list is made distinct once; a DISTINCT list per call has
           -- no vectorized accumulator (on large, 2.8 M calls: 27 s → 22 s for the backtest).
           array_agg(s.source_ip) AS signin_ips
    FROM public_calls c
    JOIN si_near s ON s.service_principal_id = c.principal_id AND s.nb = CAST(c.ts AS BIGINT) / $surrounding_us
     -- (In microseconds: the same bounds, as `surrounding` is a whole number of them, tested
     -- with integer arithmetic; an interval added to a UTC timestamp goes through the time zone
     -- for every candidate pair.)
     AND CAST(s.last_ts AS BIGINT) >= CAST(c.ts AS BIGINT) - $surrounding_us
     AND CAST(s.first_ts AS BIGINT) <= CAST(c.ts AS BIGINT) + $surrounding_us
    GROUP BY c.source, c.id, c.ts, c.principal_id, c.caller_ip, c.operation_name, c.resource_id, c.run_end_us
)
SELECT min(ts) AS ts, principal_id AS service_principal_id, max(app_id) AS app_id, caller_ip AS source_ip,
       count(*) AS calls,
       array_sort(array_agg(DISTINCT source)) AS sources,
       array_sort(array_agg(DISTINCT operation_name)) AS operations,
       array_sort(array_agg(DISTINCT resource_id)) AS resources,
       array_sort(array_distinct(flatten(array_agg(signin_ips)))) AS signin_ips,
       run_end_us
FROM judged
WHERE seen = 0
GROUP BY principal_id, caller_ip, run_end_us
