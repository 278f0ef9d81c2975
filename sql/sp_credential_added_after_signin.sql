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
Both spellings of "Update application – Certificates and secrets management" (en dash and hyphen)
are matched, with or without the trailing space the service writes."""

[params]
signin_lookback_days = 3

[mitre]
tactics = ["TA0003 Persistence"]
techniques = ["T1098.001 Account Manipulation: Additional Cloud Credentials"]
*/
WITH changes AS (
    SELECT ts, id AS audit_id, operation_name, initiated_by_upn, initiated_by_app_name, initiated_by_sp_id,
           source_ip AS change_ip, target_id, target_name, target_type, additional_details
    FROM audit
    WHERE lower(result) = 'success'
      AND (trim(operation_name) IN ('Add service principal credentials', 'Update application',
                                   'Update application – Certificates and secrets management',
                                   'Update application - Certificates and secrets management'))
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
change_app AS (
    SELECT audit_id, min(d['value']) AS target_app_id
    FROM (SELECT audit_id, unnest(additional_details) AS d FROM changes)
    WHERE d['key'] = 'AppId'
    GROUP BY audit_id
),
c AS (
    SELECT changes.*, change_app.target_app_id
    FROM changes LEFT JOIN change_app ON changes.audit_id = change_app.audit_id
),
s AS (
    SELECT ts AS signin_ts, day AS signin_day, service_principal_id, service_principal_name, app_id,
           source_ip AS signin_ip
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND ts >= $window_start - INTERVAL '3 days' AND ts <= $window_end
      AND day >= to_char($window_start - INTERVAL '3 days', '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
-- Each change against the four UTC days its 3-day look-back can touch: joining on the day too
-- keeps a long window from pairing every change with every sign-in of its principal. The day is
-- the sign-ins' `day` partition value (the UTC date of ts), so the join's dynamic filter on the
-- sign-in scan compares a per-file constant instead of truncating every row's timestamp.
cd AS (
    SELECT audit_id, ts, target_id, target_type, target_app_id, target_name,
           unnest(make_array(to_char(ts, '%Y-%m-%d'), to_char(ts - INTERVAL '1 day', '%Y-%m-%d'),
                             to_char(ts - INTERVAL '2 days', '%Y-%m-%d'), to_char(ts - INTERVAL '3 days', '%Y-%m-%d'))) AS d
    FROM c
),
matched AS (
    -- Only the columns the aggregation needs travel through the joins.
    SELECT cd.audit_id, cd.ts, s.signin_ts, s.signin_ip, s.service_principal_id, s.service_principal_name, s.app_id,
           'service_principal_id' AS matched_by
    FROM cd JOIN s ON s.service_principal_id = cd.target_id AND s.signin_day = cd.d
    WHERE cd.target_type = 'ServicePrincipal'
    UNION ALL
    SELECT cd.audit_id, cd.ts, s.signin_ts, s.signin_ip, s.service_principal_id, s.service_principal_name, s.app_id, 'app_id'
    FROM cd JOIN s ON s.app_id = cd.target_app_id AND s.signin_day = cd.d
    WHERE cd.target_type = 'Application'
    UNION ALL
    SELECT cd.audit_id, cd.ts, s.signin_ts, s.signin_ip, s.service_principal_id, s.service_principal_name, s.app_id, 'display_name'
    FROM cd JOIN s ON lower(s.service_principal_name) = lower(cd.target_name) AND s.signin_day = cd.d
    WHERE cd.target_type = 'Application' AND cd.target_app_id IS NULL
),
prior AS (
    -- One row per change: an aggregation (no sort of every matching sign-in).
    SELECT audit_id, max(signin_ts) AS last_signin, count(*) AS prior_signins,
           last_value(signin_ip ORDER BY signin_ts, signin_ip) AS source_ip,
           last_value(service_principal_id ORDER BY signin_ts, signin_ip) AS service_principal_id,
           last_value(service_principal_name ORDER BY signin_ts, signin_ip) AS service_principal_name,
           last_value(app_id ORDER BY signin_ts, signin_ip) AS app_id,
           min(matched_by) AS matched_by
    FROM matched
    WHERE signin_ts < ts AND signin_ts >= ts - INTERVAL '3 days'
    GROUP BY audit_id
)
SELECT c.ts, c.audit_id, trim(c.operation_name) AS operation_name, c.initiated_by_upn, c.initiated_by_app_name,
       c.initiated_by_sp_id, c.change_ip, c.target_id, c.target_name, c.target_type,
       prior.service_principal_id, prior.service_principal_name, prior.app_id, prior.source_ip,
       prior.last_signin, prior.prior_signins, prior.matched_by,
       CAST((CAST(c.ts AS BIGINT) - CAST(prior.last_signin AS BIGINT)) / 60000000 AS BIGINT) AS minutes_since_signin
FROM prior JOIN c ON prior.audit_id = c.audit_id
