//! `wisp pivot sp …`: one timeline of a principal's sign-ins, audit events (initiated by it or
//! targeting it), risk events, Graph calls, Azure activity and resource logs (Key Vault, Storage,
//! Logic Apps… called by it). Audit events without a caller IP get
//! the IP of the sign-in with the same correlation id, else of the principal's latest earlier
//! sign-in (`ip_from` says which).

use arrow::array::{Array, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::prelude::SessionContext;
use std::collections::BTreeSet;

/// The identities a pivot resolved to.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Identity {
    pub sp_ids: BTreeSet<String>,
    pub app_ids: BTreeSet<String>,
    pub names: BTreeSet<String>,
}

/// Resolves a service principal id, app id or display name (case-insensitive) to every id and
/// name it is known by in the lake: first among the events of `[from, to]` (the days the timeline
/// reads), and only when nothing there knows it, over the whole lake (a 30-day pivot on a large
/// tenant otherwise read every day of every table twice).
pub async fn resolve(
    ctx: &SessionContext,
    needle: &str,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Identity> {
    let found = resolve_in(ctx, needle, Some((from, to))).await?;
    if !found.sp_ids.is_empty() || !found.app_ids.is_empty() {
        return Ok(found);
    }
    resolve_in(ctx, needle, None).await.map(|mut id| {
        if id.sp_ids.is_empty() && id.app_ids.is_empty() {
            id.sp_ids.insert(needle.to_string());
            id.app_ids.insert(needle.to_string());
            id.names.insert(needle.to_string());
        }
        id
    })
}

async fn resolve_in(
    ctx: &SessionContext,
    needle: &str,
    window: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)>,
) -> Result<Identity> {
    let within = match window {
        Some(_) => {
            "ts >= $from AND ts <= $to AND day >= to_char($from, '%Y-%m-%d') AND day <= to_char($to, '%Y-%m-%d')"
        }
        None => "true",
    };
    let sql = format!(
        "SELECT DISTINCT sp_id, app_id, name FROM (
        SELECT service_principal_id AS sp_id, app_id, service_principal_name AS name FROM signins WHERE {within}
        UNION ALL SELECT service_principal_id, app_id, service_principal_name FROM sp_risk_events WHERE {within}
        UNION ALL SELECT service_principal_id, app_id, NULL FROM graph_activity WHERE {within}
        UNION ALL SELECT initiated_by_sp_id, initiated_by_app_id, coalesce(initiated_by_sp_name, initiated_by_app_name) FROM audit WHERE {within}
    ) WHERE sp_id = $needle OR app_id = $needle OR lower(name) = lower($needle)"
    );
    let mut params = vec![("needle", ScalarValue::from(needle))];
    if let Some((from, to)) = window {
        params.push(("from", crate::time::utc_ts(from)));
        params.push(("to", crate::time::utc_ts(to)));
    }
    let df = crate::query::read_only_sql(ctx, &sql).await?.with_param_values(params)?;
    let mut id = Identity::default();
    for b in df.collect().await? {
        let col = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8);
        let (s, a, n) = (col(0)?, col(1)?, col(2)?);
        let (s, a, n) = (
            s.as_any().downcast_ref::<StringArray>().expect("utf8"),
            a.as_any().downcast_ref::<StringArray>().expect("utf8"),
            n.as_any().downcast_ref::<StringArray>().expect("utf8"),
        );
        for r in 0..b.num_rows() {
            if !s.is_null(r) {
                id.sp_ids.insert(s.value(r).to_string());
            }
            if !a.is_null(r) {
                id.app_ids.insert(a.value(r).to_string());
            }
            if !n.is_null(r) {
                id.names.insert(n.value(r).to_string());
            }
        }
    }
    Ok(id)
}

const TIMELINE: &str = "
WITH tl AS (
    SELECT ts, 'signins' AS dataset,
           category || ': ' || coalesce(operation_name, 'Sign-in') || CASE WHEN error_code = 0 THEN ' (success)' ELSE ' (failed ' || CAST(error_code AS VARCHAR) || ')' END AS action,
           'actor' AS role, service_principal_id, service_principal_name AS name, source_ip,
           correlation_id, resource_display_name AS detail, source_ip AS signin_ip
    FROM signins
    WHERE ts >= $from AND ts <= $to AND day >= to_char($from, '%Y-%m-%d') AND day <= to_char($to, '%Y-%m-%d')
      AND (array_has($sp_ids, service_principal_id) OR array_has($app_ids, app_id))
    UNION ALL
    SELECT ts, 'audit', operation_name || ' (' || coalesce(result, '?') || ')',
           CASE WHEN array_has($sp_ids, initiated_by_sp_id) OR array_has($app_ids, initiated_by_app_id) THEN 'actor' ELSE 'target' END,
           coalesce(initiated_by_sp_id, initiated_by_user_id), coalesce(initiated_by_sp_name, initiated_by_app_name, initiated_by_upn),
           source_ip, correlation_id, target_type || ' ' || coalesce(target_name, target_id), NULL
    FROM audit
    WHERE ts >= $from AND ts <= $to AND day >= to_char($from, '%Y-%m-%d') AND day <= to_char($to, '%Y-%m-%d')
      AND (array_has($sp_ids, initiated_by_sp_id) OR array_has($app_ids, initiated_by_app_id)
           OR array_has($sp_ids, target_id) OR array_has($app_ids, target_id)
           OR array_has($names, lower(target_name)))
    UNION ALL
    SELECT ts, 'sp_risk_events', risk_event_type || ' (' || coalesce(risk_level, '?') || ', ' || coalesce(risk_state, '?') || ')',
           'actor', service_principal_id, service_principal_name, source_ip, correlation_id, risk_detail, NULL
    FROM sp_risk_events_latest
    WHERE ts >= $from AND ts <= $to
      AND (array_has($sp_ids, service_principal_id) OR array_has($app_ids, app_id))
    UNION ALL
    SELECT ts, 'graph_activity', request_method || ' ' || request_uri || ' → ' || CAST(response_status_code AS VARCHAR),
           'actor', service_principal_id, NULL AS n, source_ip, operation_id, roles, NULL AS s
    FROM graph_activity
    WHERE ts >= $from AND ts <= $to AND day >= to_char($from, '%Y-%m-%d') AND day <= to_char($to, '%Y-%m-%d')
      AND (array_has($sp_ids, service_principal_id) OR array_has($app_ids, app_id))
    UNION ALL
    SELECT ts, 'azure_activity', operation_name || ' (' || coalesce(result_type, '?') || ')',
           'actor', caller, caller AS caller_name, caller_ip, correlation_id, resource_id, NULL
    FROM azure_activity
    WHERE ts >= $from AND ts <= $to AND day >= to_char($from, '%Y-%m-%d') AND day <= to_char($to, '%Y-%m-%d')
      AND (array_has($app_ids, caller_app_id) OR array_has($sp_ids, caller))
    UNION ALL
    SELECT ts, 'resource_logs',
           category || ': ' || coalesce(operation_name, '?') || ' on ' || coalesce(resource_name, resource_id, '?')
               || ' (' || coalesce(result_type, CAST(status_code AS VARCHAR), '?') || ')',
           'actor', caller_object_id, caller_upn, caller_ip, correlation_id, resource_id, NULL
    FROM resource_logs
    WHERE ts >= $from AND ts <= $to AND day >= to_char($from, '%Y-%m-%d') AND day <= to_char($to, '%Y-%m-%d')
      AND (array_has($sp_ids, caller_object_id) OR array_has($app_ids, caller_app_id))
),
by_corr AS (
    SELECT correlation_id, min(signin_ip) AS corr_ip FROM tl WHERE signin_ip IS NOT NULL AND correlation_id IS NOT NULL GROUP BY correlation_id
),
filled AS (
    SELECT tl.*, by_corr.corr_ip,
           last_value(tl.signin_ip) IGNORE NULLS OVER (ORDER BY tl.ts ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS prior_ip
    FROM tl LEFT JOIN by_corr ON tl.correlation_id = by_corr.correlation_id
)
SELECT ts, dataset, action, role, service_principal_id, name,
       coalesce(source_ip, CASE WHEN dataset = 'audit' THEN coalesce(corr_ip, prior_ip) END) AS source_ip,
       CASE WHEN source_ip IS NOT NULL THEN 'log'
            WHEN dataset = 'audit' AND corr_ip IS NOT NULL THEN 'sign-in with the same correlation id'
            WHEN dataset = 'audit' AND prior_ip IS NOT NULL THEN 'latest earlier sign-in'
       END AS ip_from,
       correlation_id, detail
FROM filled
ORDER BY ts, dataset";

/// Plans the timeline for a resolved identity over `[from, to]`.
pub async fn timeline(
    ctx: &SessionContext,
    id: &Identity,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<DataFrame> {
    let ts = crate::time::utc_ts;
    let list = |set: &BTreeSet<String>, lower: bool| {
        let v: Vec<ScalarValue> =
            set.iter().map(|s| ScalarValue::from(if lower { s.to_lowercase() } else { s.clone() })).collect();
        ScalarValue::List(ScalarValue::new_list_nullable(&v, &DataType::Utf8))
    };
    crate::query::read_only_sql(ctx, TIMELINE).await?.with_param_values(vec![
        ("from", ts(from)),
        ("to", ts(to)),
        ("sp_ids", list(&id.sp_ids, false)),
        ("app_ids", list(&id.app_ids, false)),
        ("names", list(&id.names, true)),
    ])
}
