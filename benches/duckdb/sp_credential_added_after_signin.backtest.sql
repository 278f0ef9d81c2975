-- DuckDB twin of the one-pass backtest of sql/sp_credential_added_after_signin.sql: every daily run
-- of the range; a change alerts the same in every run that holds it, so it is judged once, for the
-- first run that holds it.
WITH changes AS (
    SELECT * FROM (
        SELECT ts, id AS audit_id, operation_name, result, initiated_by_upn, initiated_by_app_name, initiated_by_sp_id,
               source_ip AS change_ip, target_id, target_name, target_type, additional_details, targets,
               greatest(((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us,
                        ((epoch_us($range_start) + $interval_us - 1) // $interval_us) * $interval_us) AS run_end_us
        FROM audit
        WHERE trim(operation_name) IN ('Add service principal credentials', 'Update application',
              'Update application – Certificates and secrets management', 'Update application - Certificates and secrets management')
          AND ts >= $range_start - $lookback AND ts <= $range_end
          AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d'))
    WHERE run_end_us <= epoch_us($range_end) AND epoch_us(ts) >= run_end_us - $lookback_us
),
change_app AS (
    SELECT audit_id, min(d.value) AS target_app_id FROM (SELECT audit_id, unnest(additional_details) AS d FROM changes) WHERE d.key = 'AppId' GROUP BY audit_id
),
key_props AS (
    SELECT audit_id, coalesce(mp.old_value, '') AS old_keys, coalesce(mp.new_value, '') AS new_keys
    FROM (SELECT audit_id, unnest(t.modified_properties) AS mp FROM (SELECT audit_id, unnest(targets) AS t FROM changes))
    WHERE mp.name = 'KeyDescription'
),
added AS (
    SELECT audit_id, split_part(k, ',', 1) AS key_id,
           regexp_extract(k, 'KeyType=([^,\]"]*)', 1) AS key_type,
           regexp_extract(k, 'DisplayName=([^\]"]*)', 1) AS key_name
    FROM (SELECT audit_id, old_keys, unnest(string_split(new_keys, 'KeyIdentifier=')) AS k FROM key_props)
    WHERE k LIKE '%KeyType=%' AND strpos(old_keys, 'KeyIdentifier=' || split_part(k, ',', 1)) = 0
),
keys AS (
    SELECT audit_id, list(key_id ORDER BY key_id) AS added_key_ids, list(key_type ORDER BY key_id) AS added_key_types,
           list(key_name ORDER BY key_id) AS added_key_names
    FROM added GROUP BY audit_id
),
c AS (
    SELECT changes.* EXCLUDE (additional_details, targets), change_app.target_app_id, keys.added_key_ids, keys.added_key_types, keys.added_key_names
    FROM changes LEFT JOIN change_app USING (audit_id) LEFT JOIN keys USING (audit_id)
    WHERE trim(changes.operation_name) <> 'Update application' OR changes.audit_id IN (SELECT audit_id FROM key_props)
),
s AS (
    SELECT ts AS signin_ts, service_principal_id, service_principal_name, app_id, source_ip AS signin_ip
    FROM signins WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND ts >= date_trunc('minute', $range_start - $lookback) - INTERVAL 3 DAY AND ts <= $range_end
      AND day >= strftime(date_trunc('minute', $range_start - $lookback) - INTERVAL 3 DAY, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
matched AS (
    SELECT c.audit_id, c.ts, s.signin_ts, s.signin_ip, s.service_principal_id, s.service_principal_name, s.app_id, 'service_principal_id' AS matched_by
    FROM c JOIN s ON s.service_principal_id = c.target_id WHERE c.target_type = 'ServicePrincipal'
    UNION ALL
    SELECT c.audit_id, c.ts, s.signin_ts, s.signin_ip, s.service_principal_id, s.service_principal_name, s.app_id, 'app_id'
    FROM c JOIN s ON s.app_id = c.target_app_id WHERE c.target_type = 'Application'
    UNION ALL
    SELECT c.audit_id, c.ts, s.signin_ts, s.signin_ip, s.service_principal_id, s.service_principal_name, s.app_id, 'display_name'
    FROM c JOIN s ON lower(s.service_principal_name) = lower(c.target_name) WHERE c.target_type = 'Application' AND c.target_app_id IS NULL
),
prior AS (
    SELECT audit_id, max(signin_ts) AS last_signin, count(*) AS prior_signins,
           last(signin_ip ORDER BY signin_ts, signin_ip) AS source_ip,
           last(service_principal_id ORDER BY signin_ts, signin_ip) AS service_principal_id,
           last(service_principal_name ORDER BY signin_ts, signin_ip) AS service_principal_name,
           last(app_id ORDER BY signin_ts, signin_ip) AS app_id,
           min(matched_by) AS matched_by
    FROM matched
    WHERE signin_ts < ts AND signin_ts >= date_trunc('minute', ts) - INTERVAL 3 DAY
    GROUP BY audit_id
)
SELECT c.ts, c.audit_id, trim(c.operation_name) AS operation_name, c.result, c.initiated_by_upn, c.initiated_by_app_name,
       c.initiated_by_sp_id, c.change_ip, c.target_id, c.target_name, c.target_type,
       prior.service_principal_id, prior.service_principal_name, prior.app_id, prior.source_ip,
       prior.last_signin, prior.prior_signins, prior.matched_by,
       c.added_key_ids, c.added_key_types, c.added_key_names,
       (epoch_us(c.ts) - epoch_us(prior.last_signin)) // 60000000 AS minutes_since_signin, c.run_end_us
FROM prior JOIN c ON prior.audit_id = c.audit_id
