-- The rollup `sp_activity_rollup`: service-principal activity per (dataset, action, principal
-- name, principal id, source address) and hour or day — the first aggregation of
-- sp_rare_action_multiple_ips. This is its source: one row per event, with `ts`, `day` and the
-- keys. The rule reads its window's partial hours through the view `sp_activity_rollup_events`
-- (this query), so both come from one definition. `src/rollups.rs` says how it is stored and
-- read. Changing this text makes every stored day stale (the fingerprint hashes it).
-- As the hunt: every sign-in with a service principal name (managed identities have one).
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
SELECT ts, day, 'azure.graphactivitylogs',
       -- The path without host and query, its ids as {id}: GUIDs, UPNs and addresses
       -- (users/alice@contoso.com, users('bob@x.org')), opaque base64 keys (message ids: a segment
       -- with two digits or more), and numbers. graph_path_template is exactly this chain of
       -- regexp_replace, in one pass (its documentation gives the chain):
       --   '^[a-zA-Z]+://[^/]+' → '', '[?#].*$' → '', GUIDs → '{id}' (g),
       --   '[^/(''=]*@[^/)'']*' → '{id}' (g), '/(?:[A-Za-z_=+-]*[0-9]){2}[A-Za-z0-9_=+-]{6,}'
       --   → '/{id}' (g), '/[0-9]+(/|$)' → '/{id}${1}' (g).
       request_method || ' ' || graph_path_template(request_uri),
       coalesce(service_principal_id, app_id), service_principal_id, source_ip
FROM graph_activity
WHERE service_principal_id IS NOT NULL AND source_ip IS NOT NULL
UNION ALL
SELECT ts, day, 'o365.audit', operation, coalesce(user_id, app_id), app_id, source_ip
FROM o365_audit
WHERE extended_audit_event_category = 'ServicePrincipal' AND source_ip IS NOT NULL
