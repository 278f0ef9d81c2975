-- The rollup `sp_activity_rollup`: service-principal activity per (dataset, action, principal
-- name, principal id, source address) and hour or day — the first aggregation of
-- sp_rare_action_multiple_ips. This is its source: one row per event, with `ts`, `day` and the
-- keys (the rule's `activity` CTE without the window). `src/rollups.rs` says how it is stored and
-- read. Changing this text makes every stored day stale (the fingerprint hashes it).
SELECT ts, day, 'azure.signinlogs' AS dataset, coalesce(operation_name, 'Sign-in activity') AS action,
       coalesce(service_principal_name, app_display_name, service_principal_id) AS service_principal_name,
       service_principal_id, source_ip
FROM signins
WHERE service_principal_name IS NOT NULL AND source_ip IS NOT NULL
UNION ALL
SELECT ts, day, 'azure.auditlogs', operation_name,
       coalesce(initiated_by_app_name, initiated_by_sp_name, initiated_by_sp_id),
       initiated_by_sp_id, source_ip
FROM audit
WHERE initiated_by_sp_id IS NOT NULL AND source_ip IS NOT NULL
UNION ALL
SELECT ts, day, 'azure.graphactivitylogs', request_method || ' ' || graph_path_template(request_uri),
       coalesce(service_principal_id, app_id), service_principal_id, source_ip
FROM graph_activity
WHERE service_principal_id IS NOT NULL AND source_ip IS NOT NULL
UNION ALL
SELECT ts, day, 'o365.audit', operation, coalesce(user_id, app_id), app_id, source_ip
FROM o365_audit
WHERE extended_audit_event_category = 'ServicePrincipal' AND source_ip IS NOT NULL
