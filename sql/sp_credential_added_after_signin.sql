/*
id = "sp_credential_added_after_signin"
name = "Credential generated for a service principal that was already signing in"
description = """
A secret or certificate was added to a service principal (or its application) that had signed in
successfully in the three days before: an attacker with access to an app adding a credential of
their own for persistence. Reproduces the Sentinel rule, and matches principals by id, not name."""
type = "correlation"
severity = "medium"
risk_score = 47
interval = "1d"
lookback = "1d"
tables = ["audit", "signins"]
alert_key = ["audit_id"]
false_positives = ["Planned secret rotation by the app's owners (check initiated_by against the owners)."]
references = ["https://github.com/Azure/Azure-Sentinel/blob/master/Detections/MultipleDataSources/CredentialAddedAfterAdminConsent.yaml"]
note = """
The published rule matched the audit target to sign-ins by display name only, so renaming the
principal (or two apps sharing a name) blinded or confused it. Here a ServicePrincipal target is
matched by service_principal_id, an Application target by its AppId (from additionalDetails) or,
failing that, by display name case-insensitively. One alert per credential change, with the latest
prior successful sign-in, the number of prior sign-ins and the minutes between.
Credential changes are "Add service principal credentials" and "Update application – Certificates
and secrets management" (both spellings, en dash and hyphen, with or without the trailing space the
service writes); a bare "Update application" counts only when its modified properties hold a
KeyDescription (a key change, not a redirect URI or permission). The alert names the keys added:
their KeyIdentifier, KeyType and DisplayName, those in the new KeyDescription and not in the old.
The look-back for prior sign-ins is the signin_lookback parameter (3 days, as published), counted
as the KQL's datetime_diff counts it: from the start of the change's minute. A prior sign-in is a
successful one (ResultType 0) in the service principal sign-in log, strictly before the change. As
published, the change's result is not filtered: a refused attempt alerts too, and `result` says which."""

[params]
signin_lookback = { duration = "3d" }

[settings]
# Each join's build side is the one written first (the changes, then their rows): the planner
# would build on the rollup's rows, whose file statistics look small beside the estimates of the
# joins above them.
"datafusion.optimizer.join_reordering" = false
# Each join builds one hash table for all partitions (the changes' side is small): partitioned
# joins make every scan's pushed key set hash each row twice (its partition, then its key).
"datafusion.optimizer.repartition_joins" = false

[mitre]
tactics = ["TA0003 Persistence"]
techniques = ["T1098.001 Account Manipulation: Additional Cloud Credentials"]
*/
WITH changes AS (
    -- The credential changes of the window, with the AppId of their additionalDetails (the least
    -- when several) and the KeyDescription modified properties of their targets, both taken
    -- from the lists in place (`list_where`). DataFusion plans a CTE again at each use: the
    -- entries unnested and joined back by id read the day's audit once more for each, and a
    -- use that does not name one of these columns does not read its list (`ct` reads no targets,
    -- `c` no additionalDetails). As published, whatever the result: a refused attempt on a
    -- principal that signs in is worth a look.
    SELECT ts, id AS audit_id, operation_name, result, initiated_by_upn, initiated_by_app_name, initiated_by_sp_id,
           source_ip AS change_ip, target_id, target_name, target_type,
           array_min(list_field(list_where(additional_details, 'key', 'AppId'), 'value')) AS target_app_id,
           list_where(flatten(list_field(targets, 'modified_properties')), 'name', 'KeyDescription') AS key_props
    FROM audit
    WHERE (trim(operation_name) IN ('Add service principal credentials', 'Update application',
                                   'Update application – Certificates and secrets management',
                                   'Update application - Certificates and secrets management'))
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
c AS (
    -- Each credential change with the keys it added: each key of a KeyDescription's new value
    -- whose KeyIdentifier its old value does not hold (null when none). A bare "Update
    -- application" is a credential change only when a key changed: when its targets have a
    -- KeyDescription. The properties and their keys
    -- are unnested with a NULL appended at both levels, so every change keeps a row, and
    -- regrouped by the change's number. The added keys as one list of structs, sorted once (by
    -- id, then type and name); the result takes each field from it (list_field): three
    -- array_agg(… ORDER BY key_id) cost a sort per change in every batch, one unordered
    -- array_agg is vectorized.
    SELECT change_no, ts, audit_id, operation_name, result, initiated_by_upn, initiated_by_app_name, initiated_by_sp_id,
           change_ip, target_id, target_name, target_type,
           array_sort(array_agg(named_struct('id', key_id, 'type', key_type, 'name', key_name)) FILTER (WHERE is_added)) AS added_keys
    FROM (SELECT *, split_part(k, ',', 1) AS key_id,
                 regexp_match(k, 'KeyType=([^,\]"]*)')[1] AS key_type,
                 regexp_match(k, 'DisplayName=([^\]"]*)')[1] AS key_name,
                 k LIKE '%KeyType=%' AND strpos(old_keys, 'KeyIdentifier=' || split_part(k, ',', 1)) = 0 AS is_added
          FROM (SELECT *, coalesce(kp['old_value'], '') AS old_keys,
                       unnest(array_append(string_to_array(coalesce(kp['new_value'], ''), 'KeyIdentifier='), NULL)) AS k
                FROM (SELECT *, unnest(array_append(key_props, NULL)) AS kp
                      FROM (SELECT *, row_number() OVER () AS change_no FROM changes
                            WHERE trim(operation_name) <> 'Update application' OR cardinality(key_props) > 0))))
    GROUP BY change_no, ts, audit_id, operation_name, result, initiated_by_upn, initiated_by_app_name, initiated_by_sp_id,
             change_ip, target_id, target_name, target_type
),
ct AS (
    -- What matching a change to sign-ins needs: its time, the way its target is matched (1: a
    -- ServicePrincipal by its id; 2: an Application by its AppId; 3: an Application without one
    -- by its display name, case-insensitively) and the key it is matched by. Not `c`: that reads
    -- every change's targets (the key lists) for the bare-"Update application" test, applied
    -- once, where the aggregated prior sign-ins meet `c` (a change it drops only costs its pairs).
    SELECT ts, audit_id, way,
           CASE way WHEN 1 THEN target_id WHEN 2 THEN target_app_id WHEN 3 THEN lower(target_name) END AS k
    FROM (SELECT ts, audit_id, target_id, target_name, target_app_id,
                 CASE WHEN target_type = 'ServicePrincipal' THEN 1
                      WHEN target_type = 'Application' AND target_app_id IS NOT NULL THEN 2
                      WHEN target_type = 'Application' THEN 3 END AS way
          FROM changes)
),
s AS (
    -- The prior sign-ins as rows of `sp_signin_rollup` (src/rollups.rs; its source is the
    -- successful service-principal sign-ins, its keys the columns this rule reports): per key and
    -- hour ('hour') or whole day ('day'), or one per event ('event': days without a current
    -- summary). Not the 'times' rows (the events' times of each 'hour' row): see signins_before.
    SELECT grain, day AS signin_day, bucket, service_principal_id, service_principal_name, app_id,
           source_ip AS signin_ip, n, first_ts, last_ts
    FROM sp_signin_rollup
    WHERE grain <> 'times' AND last_ts >= date_trunc('minute', $window_start) - $signin_lookback AND first_ts <= $window_end
      AND day >= to_char(date_trunc('minute', $window_start) - $signin_lookback, '%Y-%m-%d')
      AND day <= to_char($window_end, '%Y-%m-%d')
      -- A change reads 'hour' rows only of the day its look-back starts in (from the hour of its
      -- start) and of its own day (see cd): the hours of the days between are whole days, read
      -- as 'day' rows. Over a short window the 'hour' rows of the days in the middle of the
      -- look-back are skipped by their row groups' statistics (sorted by grain, then bucket).
      AND (grain <> 'hour'
           OR (bucket >= date_trunc('hour', date_trunc('minute', $window_start) - $signin_lookback)
               AND bucket < date_trunc('day', date_trunc('minute', $window_end) - $signin_lookback) + INTERVAL '1 day')
           OR bucket >= date_trunc('day', $window_start))
),
-- Each change against the UTC days its look-back can touch, and the grains to read each at: the
-- 'day' rows of the days wholly inside the look-back, the 'hour' rows of the others, and the
-- 'event' rows of any (a day has either a current summary or its events, never both). Joining on the day and grain too keeps a long window
-- from pairing every change with every row of its principal; the day is the rollup's `day`
-- partition value, so the join's dynamic filter compares a per-file constant.
cd AS (
    -- lo_us: the earliest sign-in time the change's look-back counts (see prior), in µs since the
    -- epoch, computed once per change rather than for each of its pairs.
    SELECT audit_id, ts, way, k, lo_us, d,
           unnest(CASE WHEN d_us >= lo_us AND d_us + 86400000000 <= CAST(ts AS BIGINT) THEN make_array('day', 'event')
                       ELSE make_array('hour', 'event') END) AS g
    FROM (SELECT audit_id, ts, way, k, lo_us, to_char(to_timestamp_micros(d_us), '%Y-%m-%d') AS d, d_us
          FROM (SELECT *, lo_us - lo_us % 86400000000
                            + 86400000000 * unnest(generate_series(0, CAST(($signin_lookback_us + 86399999999) / 86400000000 AS BIGINT))) AS d_us
                FROM (SELECT ct.*, CAST(date_trunc('minute', ts) AS BIGINT) - $signin_lookback_us AS lo_us FROM ct WHERE k IS NOT NULL))
          WHERE d_us <= CAST(ts AS BIGINT))
),
matched AS (
    -- The three ways as one join: the rows of `s` once per way, keyed by that way's column. Only
    -- the columns the aggregation needs travel through it. The join's key set reaches each way's
    -- scan, and its bounds on `way` skip the scan of a way outside the range of those the changes
    -- use: the display name's (3) when no change needs it, as is the rule.
    SELECT cd.audit_id, cd.ts, cd.lo_us, s.signin_day, s.bucket, s.n, s.first_ts, s.last_ts, s.signin_ip, s.service_principal_id,
           s.service_principal_name, s.app_id, s.matched_by
    FROM cd JOIN (SELECT 1 AS way, 'service_principal_id' AS matched_by, service_principal_id AS k, * FROM s
                  UNION ALL SELECT 2 AS way, 'app_id' AS matched_by, app_id AS k, * FROM s
                  UNION ALL SELECT 3 AS way, 'display_name' AS matched_by, lower(service_principal_name) AS k, * FROM s) AS s
      ON s.k = cd.k AND s.way = cd.way AND s.signin_day = cd.d AND s.grain = cd.g
),
signins_before AS (
    -- The sign-ins in each change's look-back: a row wholly inside it counts as its n sign-ins at
    -- its last time (all a row's sign-ins share its key, so the last by time and address is its
    -- last); a row straddling a bound (only an 'hour' row can: a 'day' row is read only for whole
    -- days, an 'event' row is one instant) is taken event by event from the times of its 'times'
    -- row, joined on its key and hour (only straddling rows have an hour to join on).
    SELECT audit_id, signin_ip, service_principal_id, service_principal_name, app_id, matched_by, signin_ts,
           CASE WHEN whole THEN n ELSE 1 END AS n
    FROM (SELECT m.audit_id, m.ts, m.lo_us, m.n, m.whole, m.signin_ip, m.service_principal_id, m.service_principal_name,
                 m.app_id, m.matched_by,
                 unnest(CASE WHEN m.whole THEN make_array(m.last_ts) ELSE t.times END) AS signin_ts
          FROM (SELECT *, CASE WHEN NOT whole THEN bucket END AS straddling_hour
                FROM (SELECT *, CAST(first_ts AS BIGINT) >= lo_us AND last_ts < ts AS whole
                      FROM matched
                      WHERE CAST(last_ts AS BIGINT) >= lo_us AND first_ts < ts)) AS m
          LEFT JOIN (SELECT day, bucket, service_principal_id, service_principal_name, app_id, source_ip, times
                     FROM sp_signin_rollup
                     WHERE grain = 'times' AND day >= to_char(date_trunc('minute', $window_start) - $signin_lookback, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
                       -- Only the hours a look-back starts in and the hours of the changes
                       -- can straddle a bound: the rows of the hours between are never joined.
                       AND ((bucket >= date_trunc('hour', date_trunc('minute', $window_start) - $signin_lookback)
                             AND bucket <= date_trunc('hour', date_trunc('minute', $window_end) - $signin_lookback))
                            OR (bucket >= date_trunc('hour', $window_start) AND bucket <= date_trunc('hour', $window_end)))) AS t
            -- The hour, day and principal are the hash join's keys (IS NOT DISTINCT FROM: keys
            -- may be null; a row that does not straddle has no hour and matches nothing). The
            -- name, app and address are its filter, inside a CASE so that the planner does not
            -- make them keys too: the join's key set is tested on every 'times' row of the range
            -- at the scan, and hashing six keys (four strings) there cost half the scan's time,
            -- where the few rows of one principal's hour that share the first three are cheap.
            ON (t.bucket IS NOT DISTINCT FROM m.straddling_hour) AND (t.day IS NOT DISTINCT FROM m.signin_day)
           AND (t.service_principal_id IS NOT DISTINCT FROM m.service_principal_id)
           AND CASE WHEN (t.service_principal_name IS NOT DISTINCT FROM m.service_principal_name)
                     AND (t.app_id IS NOT DISTINCT FROM m.app_id) AND (t.source_ip IS NOT DISTINCT FROM m.signin_ip)
                    THEN true ELSE false END)
    -- The KQL's datetime_diff('minute', SignInTime, ModifiedCredTime) >= -4320 counts minute
    -- boundaries: a sign-in qualifies from the start of the change's minute, three days back.
    WHERE signin_ts < ts AND CAST(signin_ts AS BIGINT) >= lo_us
),
prior AS (
    -- One row per change: an aggregation (no sort of every matching sign-in). last_by(x, t, ip) is
    -- last_value(x ORDER BY t, ip), vectorized (wisp's aggregate; DataFusion's ordered last_value
    -- costs O(groups) per batch).
    SELECT audit_id, max(signin_ts) AS last_signin, sum(n) AS prior_signins,
           last_by(signin_ip, signin_ts, signin_ip) AS source_ip,
           last_by(service_principal_id, signin_ts, signin_ip) AS service_principal_id,
           last_by(service_principal_name, signin_ts, signin_ip) AS service_principal_name,
           last_by(app_id, signin_ts, signin_ip) AS app_id,
           min(matched_by) AS matched_by
    FROM signins_before
    GROUP BY audit_id
)
SELECT c.ts, c.audit_id, trim(c.operation_name) AS operation_name, c.result, c.initiated_by_upn, c.initiated_by_app_name,
       c.initiated_by_sp_id, c.change_ip, c.target_id, c.target_name, c.target_type,
       prior.service_principal_id, prior.service_principal_name, prior.app_id, prior.source_ip,
       prior.last_signin, prior.prior_signins, prior.matched_by,
       list_field(c.added_keys, 'id') AS added_key_ids, list_field(c.added_keys, 'type') AS added_key_types,
       list_field(c.added_keys, 'name') AS added_key_names,
       CAST((CAST(c.ts AS BIGINT) - CAST(prior.last_signin AS BIGINT)) / 60000000 AS BIGINT) AS minutes_since_signin
FROM prior JOIN c ON prior.audit_id = c.audit_id

-- @backtest
-- Every daily run in [$range_start, $range_end] in one pass. Whether a change alerts, and with
-- what, depends only on the change and the sign-ins in the look-back before it (counted from the
-- change's minute), never on the run's window: every run that holds a change reports the same
-- alert. So each change is judged once, for the first run that holds it (the first on the
-- interval grid at or after it, not before the range's first run, provided that run's window
-- [T - lookback, T] reaches back to it), and the sign-ins are read once for the whole range.
WITH changes_all AS (
    -- The credential changes, with their AppId and KeyDescription properties as in the main query.
    SELECT ts, id AS audit_id, operation_name, result, initiated_by_upn, initiated_by_app_name, initiated_by_sp_id,
           source_ip AS change_ip, target_id, target_name, target_type,
           array_min(list_field(list_where(additional_details, 'key', 'AppId'), 'value')) AS target_app_id,
           list_where(flatten(list_field(targets, 'modified_properties')), 'name', 'KeyDescription') AS key_props,
           -- The first run that holds the change: the first on the interval grid at or after it,
           -- and not before the range's first run.
           greatest(((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us,
                    ((CAST($range_start AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us) AS run_end_us
    FROM audit
    -- As published, whatever the result: a refused attempt on a principal that signs in is worth a look.
    WHERE (trim(operation_name) IN ('Add service principal credentials', 'Update application',
                                   'Update application – Certificates and secrets management',
                                   'Update application - Certificates and secrets management'))
      AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
changes AS (
    -- Each change with a run in the range that holds it (T - lookback <= ts <= T).
    SELECT * FROM changes_all
    WHERE run_end_us <= CAST($range_end AS BIGINT) AND CAST(ts AS BIGINT) >= run_end_us - $lookback_us
),
c AS (
    -- Each credential change with the keys it added, as in the main query.
    SELECT change_no, run_end_us, ts, audit_id, operation_name, result, initiated_by_upn, initiated_by_app_name,
           initiated_by_sp_id, change_ip, target_id, target_name, target_type,
           array_sort(array_agg(named_struct('id', key_id, 'type', key_type, 'name', key_name)) FILTER (WHERE is_added)) AS added_keys
    FROM (SELECT *, split_part(k, ',', 1) AS key_id,
                 regexp_match(k, 'KeyType=([^,\]"]*)')[1] AS key_type,
                 regexp_match(k, 'DisplayName=([^\]"]*)')[1] AS key_name,
                 k LIKE '%KeyType=%' AND strpos(old_keys, 'KeyIdentifier=' || split_part(k, ',', 1)) = 0 AS is_added
          FROM (SELECT *, coalesce(kp['old_value'], '') AS old_keys,
                       unnest(array_append(string_to_array(coalesce(kp['new_value'], ''), 'KeyIdentifier='), NULL)) AS k
                FROM (SELECT *, unnest(array_append(key_props, NULL)) AS kp
                      FROM (SELECT *, row_number() OVER () AS change_no FROM changes
                            WHERE trim(operation_name) <> 'Update application' OR cardinality(key_props) > 0))))
    GROUP BY change_no, run_end_us, ts, audit_id, operation_name, result, initiated_by_upn, initiated_by_app_name,
             initiated_by_sp_id, change_ip, target_id, target_name, target_type
),
ct AS (
    -- What matching a change to sign-ins needs, as in the main query.
    SELECT ts, audit_id, way,
           CASE way WHEN 1 THEN target_id WHEN 2 THEN target_app_id WHEN 3 THEN lower(target_name) END AS k
    FROM (SELECT ts, audit_id, target_id, target_name, target_app_id,
                 CASE WHEN target_type = 'ServicePrincipal' THEN 1
                      WHEN target_type = 'Application' AND target_app_id IS NOT NULL THEN 2
                      WHEN target_type = 'Application' THEN 3 END AS way
          FROM changes)
),
s AS (
    -- The prior sign-ins as rows of `sp_signin_rollup`, as in the main query.
    SELECT grain, day AS signin_day, bucket, service_principal_id, service_principal_name, app_id,
           source_ip AS signin_ip, n, first_ts, last_ts
    FROM sp_signin_rollup
    -- From a minute before the earliest change's look-back (the exact bound is in prior).
    WHERE grain <> 'times' AND last_ts >= $range_start - $lookback - $signin_lookback - INTERVAL '1 minute' AND first_ts <= $range_end
      AND day >= to_char($range_start - $lookback - $signin_lookback - INTERVAL '1 minute', '%Y-%m-%d')
      AND day <= to_char($range_end, '%Y-%m-%d')
),
-- Each change against the UTC days its look-back can touch, and the grains to read each at: the
-- 'day' rows of the days wholly inside the look-back, the 'hour' rows of the others, and the
-- 'event' rows of any (a day has either a current summary or its events, never both). Joining on the day and grain too keeps a long window
-- from pairing every change with every row of its principal; the day is the rollup's `day`
-- partition value, so the join's dynamic filter compares a per-file constant.
cd AS (
    -- lo_us: the earliest sign-in time the change's look-back counts (see prior), in µs since the
    -- epoch, computed once per change rather than for each of its pairs.
    SELECT audit_id, ts, way, k, lo_us, d,
           unnest(CASE WHEN d_us >= lo_us AND d_us + 86400000000 <= CAST(ts AS BIGINT) THEN make_array('day', 'event')
                       ELSE make_array('hour', 'event') END) AS g
    FROM (SELECT audit_id, ts, way, k, lo_us, to_char(to_timestamp_micros(d_us), '%Y-%m-%d') AS d, d_us
          FROM (SELECT *, lo_us - lo_us % 86400000000
                            + 86400000000 * unnest(generate_series(0, CAST(($signin_lookback_us + 86399999999) / 86400000000 AS BIGINT))) AS d_us
                FROM (SELECT ct.*, CAST(date_trunc('minute', ts) AS BIGINT) - $signin_lookback_us AS lo_us FROM ct WHERE k IS NOT NULL))
          WHERE d_us <= CAST(ts AS BIGINT))
),
matched AS (
    -- The three ways as one join: the rows of `s` once per way, keyed by that way's column. Only
    -- the columns the aggregation needs travel through it. The join's key set reaches each way's
    -- scan, and its bounds on `way` skip the scan of a way outside the range of those the changes
    -- use: the display name's (3) when no change needs it, as is the rule.
    SELECT cd.audit_id, cd.ts, cd.lo_us, s.signin_day, s.bucket, s.n, s.first_ts, s.last_ts, s.signin_ip, s.service_principal_id,
           s.service_principal_name, s.app_id, s.matched_by
    FROM cd JOIN (SELECT 1 AS way, 'service_principal_id' AS matched_by, service_principal_id AS k, * FROM s
                  UNION ALL SELECT 2 AS way, 'app_id' AS matched_by, app_id AS k, * FROM s
                  UNION ALL SELECT 3 AS way, 'display_name' AS matched_by, lower(service_principal_name) AS k, * FROM s) AS s
      ON s.k = cd.k AND s.way = cd.way AND s.signin_day = cd.d AND s.grain = cd.g
),
signins_before AS (
    -- The sign-ins in each change's look-back: a row wholly inside it counts as its n sign-ins at
    -- its last time (all a row's sign-ins share its key, so the last by time and address is its
    -- last); a row straddling a bound (only an 'hour' row can: a 'day' row is read only for whole
    -- days, an 'event' row is one instant) is taken event by event from the times of its 'times'
    -- row, joined on its key and hour (only straddling rows have an hour to join on).
    SELECT audit_id, signin_ip, service_principal_id, service_principal_name, app_id, matched_by, signin_ts,
           CASE WHEN whole THEN n ELSE 1 END AS n
    FROM (SELECT m.audit_id, m.ts, m.lo_us, m.n, m.whole, m.signin_ip, m.service_principal_id, m.service_principal_name,
                 m.app_id, m.matched_by,
                 unnest(CASE WHEN m.whole THEN make_array(m.last_ts) ELSE t.times END) AS signin_ts
          FROM (SELECT *, CASE WHEN NOT whole THEN bucket END AS straddling_hour
                FROM (SELECT *, CAST(first_ts AS BIGINT) >= lo_us AND last_ts < ts AS whole
                      FROM matched
                      WHERE CAST(last_ts AS BIGINT) >= lo_us AND first_ts < ts)) AS m
          LEFT JOIN (SELECT day, bucket, service_principal_id, service_principal_name, app_id, source_ip, times
                     FROM sp_signin_rollup
                     WHERE grain = 'times' AND day >= to_char($range_start - $lookback - $signin_lookback - INTERVAL '1 minute', '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')) AS t
            -- The hour, day and principal are the hash join's keys (IS NOT DISTINCT FROM: keys
            -- may be null; a row that does not straddle has no hour and matches nothing). The
            -- name, app and address are its filter, inside a CASE so that the planner does not
            -- make them keys too: the join's key set is tested on every 'times' row of the range
            -- at the scan, and hashing six keys (four strings) there cost half the scan's time,
            -- where the few rows of one principal's hour that share the first three are cheap.
            ON (t.bucket IS NOT DISTINCT FROM m.straddling_hour) AND (t.day IS NOT DISTINCT FROM m.signin_day)
           AND (t.service_principal_id IS NOT DISTINCT FROM m.service_principal_id)
           AND CASE WHEN (t.service_principal_name IS NOT DISTINCT FROM m.service_principal_name)
                     AND (t.app_id IS NOT DISTINCT FROM m.app_id) AND (t.source_ip IS NOT DISTINCT FROM m.signin_ip)
                    THEN true ELSE false END)
    -- The KQL's datetime_diff('minute', SignInTime, ModifiedCredTime) >= -4320 counts minute
    -- boundaries: a sign-in qualifies from the start of the change's minute, three days back.
    WHERE signin_ts < ts AND CAST(signin_ts AS BIGINT) >= lo_us
),
prior AS (
    -- One row per change: an aggregation (no sort of every matching sign-in). last_by(x, t, ip) is
    -- last_value(x ORDER BY t, ip), vectorized (wisp's aggregate; DataFusion's ordered last_value
    -- costs O(groups) per batch).
    SELECT audit_id, max(signin_ts) AS last_signin, sum(n) AS prior_signins,
           last_by(signin_ip, signin_ts, signin_ip) AS source_ip,
           last_by(service_principal_id, signin_ts, signin_ip) AS service_principal_id,
           last_by(service_principal_name, signin_ts, signin_ip) AS service_principal_name,
           last_by(app_id, signin_ts, signin_ip) AS app_id,
           min(matched_by) AS matched_by
    FROM signins_before
    GROUP BY audit_id
)
SELECT c.ts, c.audit_id, trim(c.operation_name) AS operation_name, c.result, c.initiated_by_upn, c.initiated_by_app_name,
       c.initiated_by_sp_id, c.change_ip, c.target_id, c.target_name, c.target_type,
       prior.service_principal_id, prior.service_principal_name, prior.app_id, prior.source_ip,
       prior.last_signin, prior.prior_signins, prior.matched_by,
       list_field(c.added_keys, 'id') AS added_key_ids, list_field(c.added_keys, 'type') AS added_key_types,
       list_field(c.added_keys, 'name') AS added_key_names,
       CAST((CAST(c.ts AS BIGINT) - CAST(prior.last_signin AS BIGINT)) / 60000000 AS BIGINT) AS minutes_since_signin,
       c.run_end_us
FROM prior JOIN c ON prior.audit_id = c.audit_id
