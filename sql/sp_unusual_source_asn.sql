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
-- A pair alerts when its earliest candidate in [T-10d, T] is after T-65m. One aggregation over
-- the history finds those pairs (no sort of 10 days of sign-ins); only the window's rows of the
-- new pairs are ranked to report each pair's oldest row.
WITH candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id,
           app_display_name, correlation_id, country, city
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code = 0
      AND service_principal_id IS NOT NULL
      AND source_asn IS NOT NULL
      AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
      AND (app_owner_tenant_id IS NULL
           OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
      AND ts >= $history_start AND ts <= $window_end
      AND day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
new_pairs AS (
    SELECT service_principal_id, source_asn, min(ts) AS first_ts
    FROM candidates
    GROUP BY service_principal_id, source_asn
    HAVING min(ts) > $window_start
),
ranked AS (
    -- A new pair's oldest row is at its first time: only the rows at that time are ranked (by
    -- id), not every row of the pair in the window. The new pairs come first: DataFusion plans
    -- this as a semi join hashing its left input (with the candidates there, a 30-day hunt hashed
    -- 10 days of sign-ins: 2.2 GB).
    SELECT c.*, row_number() OVER (PARTITION BY c.service_principal_id, c.source_asn ORDER BY c.id) AS rn
    FROM new_pairs n
    JOIN candidates c ON c.service_principal_id = n.service_principal_id AND c.source_asn = n.source_asn
                     AND c.ts = n.first_ts
    WHERE c.ts > $window_start
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
WITH candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id,
           app_display_name, correlation_id, country, city
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code = 0
      AND service_principal_id IS NOT NULL
      AND source_asn IS NOT NULL
      AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
      AND (app_owner_tenant_id IS NULL
           OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
      AND ts >= $range_start - $history - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $history - $lookback, '%Y-%m-%d')
      AND day <= to_char($range_end, '%Y-%m-%d')
),
buckets AS (
    SELECT service_principal_id, source_asn, date_trunc('hour', ts) AS hour, min(ts) AS first_ts, max(ts) AS last_ts
    FROM candidates
    GROUP BY service_principal_id, source_asn, date_trunc('hour', ts)
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
    -- The alerting bucket's first row (ties in time: the smallest id, as ORDER BY ts, id).
    SELECT c.*, a.run_end_us, row_number() OVER (PARTITION BY c.service_principal_id, c.source_asn, c.ts ORDER BY c.id) AS rn
    FROM candidates c
    JOIN alerting a ON c.service_principal_id = a.service_principal_id AND c.source_asn = a.source_asn AND c.ts = a.first_ts
)
SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city, run_end_us
FROM firsts
WHERE rn = 1

-- @terms
-- First-seen state: the pairs (and their times) of the candidate sign-ins with
-- $range_start < ts <= $range_end. wisp keeps each pair's first and last sighting.
SELECT service_principal_id, source_asn, ts
FROM signins
WHERE category = 'ServicePrincipalSignInLogs'
  AND error_code = 0
  AND service_principal_id IS NOT NULL
  AND source_asn IS NOT NULL
  AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
  AND (app_owner_tenant_id IS NULL
       OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
  AND ts > $range_start AND ts <= $range_end
  AND day >= to_char($range_start, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')

-- @stateful
-- One run with the state: terms_state covers every candidate up to $window_start, so a pair is
-- new when the state does not have it or last saw it before $history_start. Only the window is read.
WITH candidates AS (
    SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn,
           source_as_org, resource_display_name, credential_key_id,
           app_display_name, correlation_id, country, city
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code = 0
      AND service_principal_id IS NOT NULL
      AND source_asn IS NOT NULL
      AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
      AND (app_owner_tenant_id IS NULL
           OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
      AND ts > $window_start AND ts <= $window_end
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
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code = 0
      AND service_principal_id IS NOT NULL
      AND source_asn IS NOT NULL
      AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
      AND (app_owner_tenant_id IS NULL
           OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
      AND ts > $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
sightings AS (
    SELECT service_principal_id, source_asn, ts FROM candidates
    UNION ALL
    SELECT service_principal_id, source_asn, last_seen AS ts FROM terms_state
),
buckets AS (
    SELECT service_principal_id, source_asn, date_trunc('hour', ts) AS hour, min(ts) AS first_ts, max(ts) AS last_ts
    FROM sightings
    GROUP BY service_principal_id, source_asn, date_trunc('hour', ts)
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
    FROM candidates c
    JOIN alerting a ON c.service_principal_id = a.service_principal_id AND c.source_asn = a.source_asn AND c.ts = a.first_ts
)
SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city, run_end_us
FROM firsts
WHERE rn = 1
