WITH events AS (
    SELECT ts, source_ip, 'azure.signinlogs' AS dataset, 1 AS signin, 0 AS mail, 0 AS net_alert FROM signins
    WHERE error_code = 0 AND source_ip IS NOT NULL AND ts >= $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'o365.audit', 0, 1, 0 FROM o365_audit
    WHERE operation = 'MailItemsAccessed' AND outcome = 'success' AND source_ip IS NOT NULL AND ts >= $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'network_alerts', 0, 0, 1 FROM network_alerts
    WHERE source_ip IS NOT NULL AND ts >= $window_start AND ts <= $window_end
      AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
)
SELECT source_ip FROM events
WHERE NOT coalesce(is_private_ip(source_ip), false)
GROUP BY source_ip
HAVING max(net_alert) = 1 AND count(DISTINCT dataset) >= 2 AND (max(signin) = 1 OR max(mail) = 1) AND count(*) <= 100
