-- The same formulation as wisp's rule: only addresses with a network alert can qualify.
WITH alerted AS (
    SELECT DISTINCT source_ip FROM network_alerts WHERE source_ip IS NOT NULL AND ts >= $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
),
events AS (
    SELECT ts, source_ip, 'azure.signinlogs' AS dataset, 1 AS signin, 0 AS mail, 0 AS net_alert,
           coalesce(user_principal_name, service_principal_name) AS identity FROM signins
    WHERE error_code = 0 AND source_ip IS NOT NULL AND source_ip IN (SELECT source_ip FROM alerted) AND ts >= $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'o365.audit', 0, 1, 0, user_id FROM o365_audit
    WHERE operation = 'MailItemsAccessed' AND outcome = 'success' AND source_ip IS NOT NULL AND source_ip IN (SELECT source_ip FROM alerted) AND ts >= $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'network_alerts', 0, 0, 1, rule_name FROM network_alerts
    WHERE source_ip IS NOT NULL AND ts >= $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
)
-- The same outputs as wisp's rule.
SELECT min(ts) AS ts, source_ip, count(*) AS event_count, count(DISTINCT dataset) AS dataset_count,
       list_sort(list(DISTINCT dataset)) AS datasets, max(net_alert) = 1 AS has_network_alert, max(signin) = 1 AS has_signin,
       max(mail) = 1 AS has_mail_access, list_sort(list(DISTINCT identity)) AS identities
FROM events
WHERE NOT coalesce(is_private_ip(source_ip), false)
GROUP BY source_ip
HAVING max(net_alert) = 1 AND count(DISTINCT dataset) >= 2 AND (max(signin) = 1 OR max(mail) = 1) AND count(*) <= 100
