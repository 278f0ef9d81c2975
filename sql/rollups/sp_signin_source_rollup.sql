-- The rollup `sp_signin_source_rollup`: successful service-principal sign-ins per (principal id,
-- address, ASN) and hour or day — the sources each principal is known to sign in from, the
-- history of sp_credential_failures_from_new_source (a failing address or ASN is known when a
-- success from it falls in the ten days before the run's end) and its backtest's hourly buckets.
-- This is its source: one row per event, with `ts`, `day` and the keys. `src/rollups.rs` says how
-- it is stored and read. Changing this text makes every stored day stale (the fingerprint hashes
-- it).
SELECT ts, day, service_principal_id, source_ip, source_asn
FROM signins
WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0 AND service_principal_id IS NOT NULL
