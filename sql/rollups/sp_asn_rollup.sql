-- The rollup `sp_asn_rollup`: the candidate sign-ins of sp_unusual_source_asn (successful
-- service-principal sign-ins with an ASN, neither from Microsoft's networks nor of Microsoft's
-- apps) per (principal id, ASN) and hour or day — the rule's history (was the pair seen in the
-- ten days before its window) and its backtest's hourly buckets. This is its source: one row per
-- event, with `ts`, `day`, the keys and the columns the rule reports: every section of the
-- rule reads its candidates from it (`sp_asn_rollup_events`), so the summaries and the rows
-- reported are one definition. `src/rollups.rs` says how it is stored and read. Changing this
-- text makes every stored day stale (the fingerprint hashes it).
SELECT ts, day, service_principal_id, source_asn, id, service_principal_name, app_id, source_ip, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city
FROM signins
WHERE category = 'ServicePrincipalSignInLogs'
  AND error_code = 0
  AND service_principal_id IS NOT NULL
  AND source_asn IS NOT NULL
  AND (source_as_org IS NULL OR (source_as_org NOT LIKE '%MICROSOFT%' AND source_as_org NOT LIKE '%Microsoft%'))
  AND (app_owner_tenant_id IS NULL
       OR app_owner_tenant_id NOT IN ('72f988bf-86f1-41af-91ab-2d7cd011db47', 'f8cdef31-a31e-4b4a-93e4-5f571e91255a'))
