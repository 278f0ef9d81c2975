-- The rollup `sp_failed_signin_rollup`: failed service-principal sign-ins per (principal name,
-- address, error code, resource, principal id, app id, failure reason) and hour or day — the
-- first aggregation of sp_failed_signins (its min() columns are keys here, so a minimum over the
-- rollup's rows is the minimum over the events). This is its source: one row per event, with
-- `ts`, `day` and the keys. `src/rollups.rs` says how it is stored and read. Changing this text
-- makes every stored day stale (the fingerprint hashes it).
SELECT ts, day, service_principal_name, source_ip, error_code, resource_display_name, service_principal_id, app_id,
       failure_reason
FROM signins
WHERE category = 'ServicePrincipalSignInLogs' AND error_code <> 0
