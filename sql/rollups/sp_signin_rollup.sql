-- The rollup `sp_signin_rollup`: successful service-principal sign-ins per (principal id, app id,
-- principal name, address) and hour or day, its 'hour' rows with their events' times — the prior
-- sign-ins of sp_credential_added_after_signin, whose look-back starts at each change's minute and
-- ends at the change: whole days and hours are read as rows, a row straddling either bound event
-- by event from its times. This is its source: one row per event, with `ts`, `day` and the keys.
-- `src/rollups.rs` says how it is stored and read. Changing this text makes every stored day
-- stale (the fingerprint hashes it).
SELECT ts, day, service_principal_id, app_id, service_principal_name, source_ip
FROM signins
WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
