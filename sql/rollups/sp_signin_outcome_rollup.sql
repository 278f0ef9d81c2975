-- The rollup `sp_signin_outcome_rollup`: service-principal sign-ins, successful or not, per
-- (principal id, address, country, resource, outcome) and hour or day — what
-- sp_risk_event_stacking counts of a stacked principal's sign-ins over its window. `succeeded` is
-- `error_code = 0`, false when the code is missing (the rule counts such a sign-in as not
-- successful); written so that its column is nullable in every plan (DataFusion types a
-- `coalesce` as non-null where its physical plan does not, and refuses the difference). This is its source:
-- one row per event, with `ts`, `day` and the keys. `src/rollups.rs` says how it is stored and
-- read. Changing this text makes every stored day stale (the fingerprint hashes it).
SELECT ts, day, service_principal_id, source_ip, country, resource_display_name,
       (error_code = 0 AND error_code IS NOT NULL) AS succeeded
FROM signins
WHERE category = 'ServicePrincipalSignInLogs' AND service_principal_id IS NOT NULL
