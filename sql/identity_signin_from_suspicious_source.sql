/*
id = "identity_signin_from_suspicious_source"
name = "M365 or Entra ID Identity Sign-in from a Suspicious Source"
description = """
A public source IP that raised a network security alert and, within the window, also signed in to
Entra ID successfully or accessed mail, across at least two data sources. Reproduces Elastic's rule;
private and reserved ranges (is_private_ip: the rule's 26 ranges) are excluded."""
type = "correlation"
severity = "high"
risk_score = 73
interval = "1h"
lookback = "8h"
suppress_by = ["source_ip"]
suppress_for = "8h"
tables = ["signins", "o365_audit", "network_alerts"]
alert_key = ["source_ip", "ts"]
false_positives = ["Shared egress (a corporate proxy or VPN) that also trips an IDS signature."]
references = ["https://www.elastic.co/guide/en/security/current/m365-or-entra-id-identity-sign-in-from-a-suspicious-source.html"]
note = """
The published rule re-alerts every hour for 8 hours on the same IP (its 8-hour window slides);
wisp suppresses repeats by source_ip for 8 hours. IPs with more than 100 events are left out, as
published (busy shared addresses)."""

[params]
max_events = 100

[mitre]
tactics = ["TA0001 Initial Access"]
techniques = ["T1078 Valid Accounts"]
*/
-- Only addresses with a network alert in the window can qualify (max(net_alert) = 1), so the
-- sign-ins and mail events are first restricted to those addresses: the aggregation sees a few
-- thousand addresses instead of every address of the window.
WITH alerted AS (
    SELECT DISTINCT source_ip
    FROM network_alerts
    WHERE source_ip IS NOT NULL
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
events AS (
    SELECT ts, source_ip, 'azure.signinlogs' AS dataset, 1 AS signin, 0 AS mail, 0 AS net_alert,
           coalesce(user_principal_name, service_principal_name) AS identity
    FROM signins
    WHERE error_code = 0 AND source_ip IS NOT NULL
      AND source_ip IN (SELECT source_ip FROM alerted)
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'o365.audit', 0, 1, 0, user_id
    FROM o365_audit
    WHERE operation = 'MailItemsAccessed' AND outcome = 'success' AND source_ip IS NOT NULL
      AND source_ip IN (SELECT source_ip FROM alerted)
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'network_alerts', 0, 0, 1, rule_name
    FROM network_alerts
    WHERE source_ip IS NOT NULL
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
)
SELECT min(ts) AS ts, source_ip, count(*) AS event_count,
       count(DISTINCT dataset) AS dataset_count,
       array_sort(array_agg(DISTINCT dataset)) AS datasets,
       max(net_alert) = 1 AS has_network_alert, max(signin) = 1 AS has_signin, max(mail) = 1 AS has_mail_access,
       array_sort(array_agg(DISTINCT identity)) AS identities
FROM events
WHERE NOT coalesce(is_private_ip(source_ip), false)
GROUP BY source_ip
HAVING max(net_alert) = 1 AND count(DISTINCT dataset) >= 2 AND (max(signin) = 1 OR max(mail) = 1)
   AND count(*) <= $max_events
