/*
id = "sp_risk_event_stacking"
name = "SP Risk Event Stacking"
description = """
Several Identity Protection risk detections on one service principal in an hour (or one of the
high-severity kinds), joined with that principal's sign-ins from outside the NetworkAllowlist
watchlist in the same window. Reproduces the KQL "SP Risk Event Stacking" and its severity ladder."""
type = "correlation"
severity = "high"
risk_score = 73
interval = "1h"
lookback = "1h"
tables = ["sp_risk_events_latest", "signins"]
alert_key = ["service_principal_id", "first_detection", "last_detection"]
false_positives = ["Risk detections re-evaluated in bulk by Microsoft (check risk_state)."]
references = ["https://learn.microsoft.com/en-us/entra/id-protection/concept-workload-identity-risk"]
note = """
Uses the newest version of each risk detection (sp_risk_events_latest). High-severity types:
investigationsThreatIntelligence, maliciousIPAddress, anomalousToken. Sign-ins whose IP is in the
NetworkAllowlist watchlist (CIDRs, single IPs and a-b ranges; --watchlist NetworkAllowlist=FILE.csv
or <lake>/_watchlists/NetworkAllowlist.csv) are not counted; with no watchlist loaded every
sign-in counts. Severity ladder: Critical = a high-severity type and active sign-ins; High = a
high-severity type; High = 3+ distinct types; High = 2+ types with active sign-ins; else Medium."""

[mitre]
tactics = ["TA0001 Initial Access", "TA0006 Credential Access"]
techniques = ["T1078.004 Valid Accounts: Cloud Accounts", "T1528 Steal Application Access Token"]
*/
WITH risk AS (
    SELECT ts, service_principal_id, service_principal_name, app_id, risk_event_type, risk_level
    FROM sp_risk_events_latest
    WHERE ts >= $window_start AND ts <= $window_end
      AND (lower(risk_level) IN ('high', 'medium')
           OR risk_event_type IN ('anomalousToken', 'investigationsThreatIntelligence', 'maliciousIPAddress', 'suspiciousAPITraffic'))
),
per_sp AS (
    SELECT service_principal_id, max(service_principal_name) AS service_principal_name, max(app_id) AS app_id,
           count(*) AS risk_event_count,
           count(DISTINCT risk_event_type) AS distinct_types,
           array_sort(array_agg(DISTINCT risk_event_type)) AS risk_types,
           sum(CASE WHEN risk_event_type IN ('investigationsThreatIntelligence', 'maliciousIPAddress', 'anomalousToken') THEN 1 ELSE 0 END) AS high_severity_type_count,
           sum(CASE WHEN lower(risk_level) = 'high' THEN 1 ELSE 0 END) AS high_level_count,
           min(ts) AS first_detection, max(ts) AS last_detection
    FROM risk
    GROUP BY service_principal_id
),
stacked AS (
    SELECT * FROM per_sp WHERE distinct_types >= 2 OR high_severity_type_count >= 1
),
si_pre AS (
    -- A plain aggregation per (principal, address, country, resource) first; the distinct lists
    -- are built from its far fewer rows.
    SELECT service_principal_id, source_ip, country, resource_display_name, count(*) AS n,
           sum(CASE WHEN error_code = 0 THEN 1 ELSE 0 END) AS ok
    FROM signins
    WHERE category = 'ServicePrincipalSignInLogs'
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
      AND service_principal_id IN (SELECT service_principal_id FROM stacked)
      AND NOT coalesce(in_watchlist(source_ip, 'NetworkAllowlist'), false)
    GROUP BY service_principal_id, source_ip, country, resource_display_name
),
si AS (
    SELECT service_principal_id, sum(n) AS signin_count,
           sum(ok) AS successful_signins,
           count(DISTINCT source_ip) AS distinct_ips,
           array_sort(array_agg(DISTINCT source_ip) FILTER (WHERE source_ip IS NOT NULL)) AS source_ips,
           array_sort(array_agg(DISTINCT country) FILTER (WHERE country IS NOT NULL)) AS countries,
           array_sort(array_agg(DISTINCT resource_display_name) FILTER (WHERE resource_display_name IS NOT NULL)) AS resources
    FROM si_pre
    GROUP BY service_principal_id
)
SELECT first_detection AS ts, stacked.*,
       coalesce(si.signin_count, 0) AS signin_count, coalesce(si.successful_signins, 0) AS successful_signins,
       coalesce(si.distinct_ips, 0) AS distinct_ips, si.source_ips, si.countries, si.resources,
       CASE
           WHEN high_severity_type_count >= 1 AND coalesce(si.signin_count, 0) > 0 THEN 'Critical'
           WHEN high_severity_type_count >= 1 THEN 'High'
           WHEN distinct_types >= 3 THEN 'High'
           WHEN distinct_types >= 2 AND coalesce(si.signin_count, 0) > 0 THEN 'High'
           ELSE 'Medium'
       END AS severity
FROM stacked LEFT JOIN si ON stacked.service_principal_id = si.service_principal_id
ORDER BY first_detection
