-- The rollup `sp_signin_address_rollup`: successful service-principal and managed-identity
-- sign-ins with an address, per (principal id, address, app id) and hour or day — the sign-ins
-- sp_token_replay_from_unseen_address compares each call with (which addresses a principal
-- signed in from within hours of the call, and its app). This is its source: one row per event,
-- with `ts`, `day` and the keys. `src/rollups.rs` says how it is stored and read. Changing this
-- text makes every stored day stale (the fingerprint hashes it).
SELECT ts, day, service_principal_id, source_ip, app_id
FROM signins
WHERE error_code = 0 AND category IN ('ServicePrincipalSignInLogs', 'ManagedIdentitySignInLogs')
  AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
