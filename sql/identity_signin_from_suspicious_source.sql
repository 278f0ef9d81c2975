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
wisp suppresses repeats by source_ip for 8 hours. As published, event_count counts every event of
the address in the window — every sign-in (failed ones too), every Microsoft 365 audit record and
its network alerts — and addresses with more than max_events (100) are left out (busy shared
addresses). The alert lists the network alerts' rule ids and signatures, the event categories,
the datasets and the users apart."""

[params]
max_events = 100

[mitre]
tactics = ["TA0001 Initial Access"]
techniques = ["T1078 Valid Accounts"]
*/
-- As the ES|QL: the events of an address are every Entra sign-in (any result), every Microsoft 365
-- audit record and its network alerts in the window; it alerts when it has a network alert, a
-- successful sign-in or successful mail access, events in at least two datasets, and at most
-- $max_events events in all. Only addresses with a network alert in the window can qualify, so the
-- sign-ins and O365 records are first restricted to those addresses: the aggregation sees a few
-- thousand addresses instead of every address of the window (same result).
WITH alerted AS (
    SELECT DISTINCT source_ip
    FROM network_alerts
    WHERE source_ip IS NOT NULL
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
events AS (
    SELECT ts, source_ip, 'azure.signinlogs' AS dataset,
           CASE WHEN error_code = 0 THEN 1 ELSE 0 END AS signin_ok, 0 AS mail_ok, 0 AS net_alert,
           CAST(NULL AS VARCHAR) AS alert_rule_id, CAST(NULL AS VARCHAR) AS alert_rule_name,
           'authentication' AS event_category,
           coalesce(user_principal_name, service_principal_name, service_principal_id) AS user_name
    FROM signins
    WHERE source_ip IN (SELECT source_ip FROM alerted)
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'o365.audit',
           0, CASE WHEN operation = 'MailItemsAccessed' AND outcome = 'success' THEN 1 ELSE 0 END, 0,
           NULL, NULL,
           CASE WHEN operation = 'MailItemsAccessed' THEN 'email' END,
           user_id
    FROM o365_audit
    WHERE source_ip IN (SELECT source_ip FROM alerted)
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'network_alerts', 0, 0, 1, rule_id, rule_name, category, NULL
    FROM network_alerts
    WHERE source_ip IS NOT NULL
      AND ts >= $window_start AND ts <= $window_end
      AND day >= to_char($window_start, '%Y-%m-%d') AND day <= to_char($window_end, '%Y-%m-%d')
),
-- The alert conditions first, as window aggregates per address: a long hunt window holds tens of
-- thousands of alerted addresses and per-address lists for all of them cost seconds; the lists
-- are built for the few that alert. Two datasets: a network alert plus a sign-in or an O365 record.
judged AS (
    SELECT * FROM (
        SELECT *,
               max(net_alert) OVER (PARTITION BY source_ip) AS any_alert,
               max(CASE WHEN dataset = 'network_alerts' THEN 0 ELSE 1 END) OVER (PARTITION BY source_ip) AS any_identity,
               max(signin_ok) OVER (PARTITION BY source_ip) AS any_signin,
               max(mail_ok) OVER (PARTITION BY source_ip) AS any_mail,
               count(*) OVER (PARTITION BY source_ip) AS n
        FROM events
        WHERE NOT coalesce(is_private_ip(source_ip), false))
    WHERE any_alert = 1 AND any_identity = 1 AND (any_signin = 1 OR any_mail = 1) AND n <= $max_events
)
SELECT min(ts) AS ts, source_ip, count(*) AS event_count,
       count(DISTINCT dataset) AS dataset_count,
       array_sort(array_agg(DISTINCT dataset)) AS datasets,
       max(net_alert) = 1 AS has_network_alert, max(signin_ok) = 1 AS has_signin, max(mail_ok) = 1 AS has_mail_access,
       sum(net_alert) AS network_alert_count, sum(signin_ok) AS successful_signins, sum(mail_ok) AS mail_accesses,
       array_sort(array_agg(DISTINCT alert_rule_id) FILTER (WHERE alert_rule_id IS NOT NULL)) AS alert_rule_ids,
       array_sort(array_agg(DISTINCT alert_rule_name) FILTER (WHERE alert_rule_name IS NOT NULL)) AS alert_rule_names,
       array_sort(array_agg(DISTINCT event_category) FILTER (WHERE event_category IS NOT NULL)) AS event_categories,
       array_sort(array_agg(DISTINCT user_name) FILTER (WHERE user_name IS NOT NULL)) AS users
FROM judged
GROUP BY source_ip

-- @backtest
-- Every hourly run T in [$range_start, $range_end] in one pass. Run T's window is
-- [T - $lookback, T], both ends included, so an event at ts belongs to the runs on the interval
-- grid from ceil(ts) to floor(ts + $lookback): each event is expanded to those runs (eight or
-- nine of them) and the window's aggregation is grouped by run as well. The address filter is
-- the union over the range (a superset of each run's); the HAVING keeps only a run's addresses
-- with a network alert in that run's window, as the single run does.
WITH alerted AS (
    SELECT DISTINCT source_ip
    FROM network_alerts
    WHERE source_ip IS NOT NULL
      AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
events AS (
    SELECT ts, source_ip, 'azure.signinlogs' AS dataset,
           CASE WHEN error_code = 0 THEN 1 ELSE 0 END AS signin_ok, 0 AS mail_ok, 0 AS net_alert,
           CAST(NULL AS VARCHAR) AS alert_rule_id, CAST(NULL AS VARCHAR) AS alert_rule_name,
           'authentication' AS event_category,
           coalesce(user_principal_name, service_principal_name, service_principal_id) AS user_name
    FROM signins
    WHERE source_ip IN (SELECT source_ip FROM alerted)
      AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'o365.audit',
           0, CASE WHEN operation = 'MailItemsAccessed' AND outcome = 'success' THEN 1 ELSE 0 END, 0,
           NULL, NULL,
           CASE WHEN operation = 'MailItemsAccessed' THEN 'email' END,
           user_id
    FROM o365_audit
    WHERE source_ip IN (SELECT source_ip FROM alerted)
      AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'network_alerts', 0, 0, 1, rule_id, rule_name, category, NULL
    FROM network_alerts
    WHERE source_ip IS NOT NULL
      AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= to_char($range_start - $lookback, '%Y-%m-%d') AND day <= to_char($range_end, '%Y-%m-%d')
),
by_run AS (
    SELECT *, unnest(generate_series(
               ((CAST(ts AS BIGINT) + $interval_us - 1) / $interval_us) * $interval_us,
               ((CAST(ts AS BIGINT) + $lookback_us) / $interval_us) * $interval_us,
               $interval_us)) AS run_end_us
    FROM events
    WHERE NOT coalesce(is_private_ip(source_ip), false)
),
-- The alert conditions first, without per-group lists: a 20-day range makes hundreds of thousands
-- of (address, run) groups, of which a handful alert, and lists for all of them cost seconds and
-- gigabytes. As window aggregates, so the events are read once. Two datasets: a network alert
-- plus a sign-in or an O365 record.
judged AS (
    SELECT * FROM (
        SELECT *,
               max(net_alert) OVER (PARTITION BY source_ip, run_end_us) AS any_alert,
               max(CASE WHEN dataset = 'network_alerts' THEN 0 ELSE 1 END) OVER (PARTITION BY source_ip, run_end_us) AS any_identity,
               max(signin_ok) OVER (PARTITION BY source_ip, run_end_us) AS any_signin,
               max(mail_ok) OVER (PARTITION BY source_ip, run_end_us) AS any_mail,
               count(*) OVER (PARTITION BY source_ip, run_end_us) AS n
        FROM by_run
        WHERE run_end_us >= CAST($range_start AS BIGINT) AND run_end_us <= CAST($range_end AS BIGINT))
    WHERE any_alert = 1 AND any_identity = 1 AND (any_signin = 1 OR any_mail = 1) AND n <= $max_events
)
SELECT min(ts) AS ts, source_ip, count(*) AS event_count,
       count(DISTINCT dataset) AS dataset_count,
       array_sort(array_agg(DISTINCT dataset)) AS datasets,
       max(net_alert) = 1 AS has_network_alert, max(signin_ok) = 1 AS has_signin, max(mail_ok) = 1 AS has_mail_access,
       sum(net_alert) AS network_alert_count, sum(signin_ok) AS successful_signins, sum(mail_ok) AS mail_accesses,
       array_sort(array_agg(DISTINCT alert_rule_id) FILTER (WHERE alert_rule_id IS NOT NULL)) AS alert_rule_ids,
       array_sort(array_agg(DISTINCT alert_rule_name) FILTER (WHERE alert_rule_name IS NOT NULL)) AS alert_rule_names,
       array_sort(array_agg(DISTINCT event_category) FILTER (WHERE event_category IS NOT NULL)) AS event_categories,
       array_sort(array_agg(DISTINCT user_name) FILTER (WHERE user_name IS NOT NULL)) AS users,
       run_end_us
FROM judged
GROUP BY source_ip, run_end_us
