SELECT service_principal_name, source_ip, error_code, count(*) AS attempts
FROM signins
WHERE category = 'ServicePrincipalSignInLogs' AND error_code <> 0
  AND ts >= $window_start AND ts <= $window_end
  AND day >= strftime($window_start, '%Y-%m-%d') AND day <= strftime($window_end, '%Y-%m-%d')
GROUP BY service_principal_name, source_ip, error_code
HAVING count(*) >= 1
