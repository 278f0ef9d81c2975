-- DuckDB twin of the one-pass backtest of sql/identity_signin_from_suspicious_source.sql: every
-- hourly run T of the range ([T - 8h, T], both ends), each event in the runs that hold it. The
-- rule's suppression (an address alerts at most once per 8 hours) is applied to the rows by the
-- benchmark script, in run order, as wisp applies it to its runs.
WITH alerted AS (
    SELECT DISTINCT source_ip FROM network_alerts WHERE source_ip IS NOT NULL AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
events AS (
    SELECT ts, source_ip, 'azure.signinlogs' AS dataset, CASE WHEN error_code = 0 THEN 1 ELSE 0 END AS signin_ok, 0 AS mail_ok,
           0 AS net_alert, NULL::VARCHAR AS alert_rule_id, NULL::VARCHAR AS alert_rule_name, 'authentication' AS event_category,
           coalesce(user_principal_name, service_principal_name, service_principal_id) AS user_name FROM signins
    WHERE source_ip IN (SELECT source_ip FROM alerted) AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'o365.audit', 0, CASE WHEN operation = 'MailItemsAccessed' AND outcome = 'success' THEN 1 ELSE 0 END, 0,
           NULL, NULL, CASE WHEN operation = 'MailItemsAccessed' THEN 'email' END, user_id FROM o365_audit
    WHERE source_ip IN (SELECT source_ip FROM alerted) AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
    UNION ALL
    SELECT ts, source_ip, 'network_alerts', 0, 0, 1, rule_id, rule_name, category, NULL FROM network_alerts
    WHERE source_ip IS NOT NULL AND ts >= $range_start - $lookback AND ts <= $range_end
      AND day >= strftime($range_start - $lookback, '%Y-%m-%d') AND day <= strftime($range_end, '%Y-%m-%d')
),
by_run AS (
    SELECT *, unnest(generate_series(((epoch_us(ts) + $interval_us - 1) // $interval_us) * $interval_us,
                                     ((epoch_us(ts) + $lookback_us) // $interval_us) * $interval_us, $interval_us)) AS run_end_us
    FROM events WHERE NOT coalesce(is_private_ip(source_ip), false)
)
SELECT min(ts) AS ts, source_ip, count(*) AS event_count, count(DISTINCT dataset) AS dataset_count,
       list_sort(list(DISTINCT dataset)) AS datasets, max(net_alert) = 1 AS has_network_alert, max(signin_ok) = 1 AS has_signin,
       max(mail_ok) = 1 AS has_mail_access, sum(net_alert) AS network_alert_count, sum(signin_ok) AS successful_signins,
       sum(mail_ok) AS mail_accesses,
       list_sort(list(DISTINCT alert_rule_id) FILTER (WHERE alert_rule_id IS NOT NULL)) AS alert_rule_ids,
       list_sort(list(DISTINCT alert_rule_name) FILTER (WHERE alert_rule_name IS NOT NULL)) AS alert_rule_names,
       list_sort(list(DISTINCT event_category) FILTER (WHERE event_category IS NOT NULL)) AS event_categories,
       list_sort(list(DISTINCT user_name) FILTER (WHERE user_name IS NOT NULL)) AS users, run_end_us
FROM by_run
WHERE run_end_us >= epoch_us($range_start) AND run_end_us <= epoch_us($range_end)
GROUP BY source_ip, run_end_us
HAVING max(net_alert) = 1 AND count(DISTINCT dataset) >= 2 AND (max(signin_ok) = 1 OR max(mail_ok) = 1) AND count(*) <= 100
ORDER BY run_end_us, source_ip
