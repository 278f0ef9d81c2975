WITH changes AS (
    SELECT ts, id AS audit_id, target_id, target_name, target_type, additional_details
    FROM audit
    WHERE lower(result) = 'success'
      AND trim(operation_name) IN ('Add service principal credentials', 'Update application',
          'Update application – Certificates and secrets management', 'Update application - Certificates and secrets management')
      AND ts >= $window_start AND ts <= $window_end AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
),
change_app AS (
    SELECT audit_id, min(d.value) AS target_app_id FROM (SELECT audit_id, unnest(additional_details) AS d FROM changes) WHERE d.key = 'AppId' GROUP BY audit_id
),
c AS (SELECT changes.*, change_app.target_app_id FROM changes LEFT JOIN change_app USING (audit_id)),
s AS (
    SELECT ts AS signin_ts, service_principal_id, service_principal_name, app_id
    FROM signins WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND ts >= $window_start - INTERVAL 3 DAY AND ts <= $window_end
      AND day >= strftime($window_start - INTERVAL 3 DAY, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
),
matched AS (
    SELECT c.*, s.* FROM c JOIN s ON s.service_principal_id = c.target_id WHERE c.target_type = 'ServicePrincipal'
    UNION ALL SELECT c.*, s.* FROM c JOIN s ON s.app_id = c.target_app_id WHERE c.target_type = 'Application'
    UNION ALL SELECT c.*, s.* FROM c JOIN s ON lower(s.service_principal_name) = lower(c.target_name) WHERE c.target_type = 'Application' AND c.target_app_id IS NULL
)
SELECT DISTINCT audit_id FROM matched WHERE signin_ts < ts AND signin_ts >= ts - INTERVAL 3 DAY
