/*
id = "sp_credential_failures_from_new_source"
name = "Service principal credential failures from a source it never signed in from"
description = """
A service principal failed to sign in with a credential error (an invalid or expired secret or
certificate, an assertion outside its validity, the wrong tenant, a federated credential that does not
match, no credential at all) from an address it never signed in from successfully in the last 10
days. Someone is trying a stolen, stale or guessed credential from their own infrastructure. The
detection a SOC keeps switched on for seed 002's failed sign-ins (sp_failed_signins keeps the
published query as a hunt): failures from the principal's own addresses (an expired secret in its
automation) do not alert, and each principal gives one alert per run, with the addresses, ASNs and
error codes as lists."""
type = "correlation"
severity = "medium"
risk_score = 47
interval = "1h"
lookback = "1h"
history_window = "10d"
tables = ["signins"]
alert_key = ["service_principal_id", "run_end"]
false_positives = ["An automation moved to new infrastructure before its secret was rotated."]
references = ["https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes"]
note = """
Severity high when a failing address is in an ASN the principal never signed in from successfully
(not only a new address in a known network). Credential error codes: 7000215, 7000222 (invalid or
expired secret), 700027 (certificate signature), 700024 (assertion time), 7000012 and 700016
(wrong tenant), 7000218 (no credential), 700211, 700212, 700213 (federated credential mismatch).
Triage: the key tried (credential_key_ids), whether a success from the same address follows
(sp_unusual_source_asn), and recent credential changes (sp_credential_added_after_signin)."""

[mitre]
tactics = ["TA0006 Credential Access", "TA0001 Initial Access"]
techniques = ["T1110 Brute Force", "T1078.004 Valid Accounts: Cloud Accounts"]
*/
WITH failures AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, source_ip, source_asn, error_code,
           credential_key_id
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND error_code IN (7000215, 7000222, 700027, 700024, 7000012, 700016, 7000218, 700211, 700212, 700213)
      AND service_principal_id IS NOT NULL AND source_ip IS NOT NULL
      AND ts > $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
known AS (
    -- Where each failing principal signed in successfully in its history window.
    SELECT service_principal_id, source_ip, source_asn
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs' AND error_code = 0
      AND service_principal_id IN (SELECT service_principal_id FROM failures)
      AND ts >= $history_start AND ts <= $window_end
      AND day >= to_char($history_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
    GROUP BY service_principal_id, source_ip, source_asn
),
known_ip AS (SELECT DISTINCT service_principal_id, source_ip FROM known),
known_asn AS (SELECT DISTINCT service_principal_id, source_asn FROM known WHERE source_asn IS NOT NULL),
novel AS (
    SELECT f.*, (f.source_asn IS NOT NULL AND ka.source_asn IS NULL) AS new_asn
    FROM failures f
    LEFT JOIN known_ip ki ON ki.service_principal_id = f.service_principal_id AND ki.source_ip = f.source_ip
    LEFT JOIN known_asn ka ON ka.service_principal_id = f.service_principal_id AND ka.source_asn = f.source_asn
    WHERE ki.source_ip IS NULL
)
SELECT min(ts) AS ts, max(ts) AS last_failure, $window_end AS run_end, service_principal_id,
       max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
       min(source_ip) AS source_ip,
       count(*) AS failures,
       count(DISTINCT source_ip) AS distinct_ips,
       array_sort(array_agg(DISTINCT source_ip)) AS source_ips,
       array_sort(array_agg(DISTINCT source_asn) FILTER (WHERE source_asn IS NOT NULL)) AS source_asns,
       array_sort(array_agg(DISTINCT error_code)) AS error_codes,
       array_sort(array_agg(DISTINCT credential_key_id) FILTER (WHERE credential_key_id IS NOT NULL)) AS credential_key_ids,
       bool_or(new_asn) AS from_new_asn,
       CASE WHEN bool_or(new_asn) THEN 'high' ELSE 'medium' END AS severity
FROM novel
GROUP BY service_principal_id
