//! Running a rule for a window, and the `alerts` table of the lake contract.

use super::{Rule, RuleError};
use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::SessionContext;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// A run's window, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunWindow {
    pub start: chrono::DateTime<chrono::Utc>,
    pub end: chrono::DateTime<chrono::Utc>,
}

/// One alert, as the `alerts` table holds it (timestamps in microseconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub alert_id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub severity: String,
    pub risk_score: i32,
    pub ts: i64,
    pub window_start: i64,
    pub window_end: i64,
    pub detected_at: i64,
    pub service_principal_id: Option<String>,
    pub service_principal_name: Option<String>,
    pub app_id: Option<String>,
    pub source_ip: Option<String>,
    pub source_asn: Option<i64>,
    pub fields: String,
    /// Values of the rule's `suppress_by` columns (not part of the alerts table).
    #[serde(skip)]
    pub suppress_key: Option<String>,
}

/// The `alerts` schema of SCHEMA.md.
pub fn alerts_schema() -> SchemaRef {
    let ts = crate::lake::schema::ts_type();
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("alert_id", DataType::Utf8, false),
        s("rule_id"),
        s("rule_name"),
        s("severity"),
        Field::new("risk_score", DataType::Int32, true),
        Field::new("ts", ts.clone(), true),
        Field::new("window_start", ts.clone(), true),
        Field::new("window_end", ts.clone(), true),
        Field::new("detected_at", ts, true),
        s("service_principal_id"),
        s("service_principal_name"),
        s("app_id"),
        s("source_ip"),
        Field::new("source_asn", DataType::Int64, true),
        s("fields"),
    ]))
}

/// Alerts as a batch of the `alerts` schema.
pub fn to_batch(alerts: &[Alert]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut d =
        arrow::json::ReaderBuilder::new(alerts_schema()).with_batch_size(alerts.len().max(1)).build_decoder()?;
    d.serialize(alerts)?;
    Ok(d.flush()?.unwrap_or_else(|| RecordBatch::new_empty(alerts_schema())))
}

/// The deterministic id: the same finding always gets the same id.
pub fn alert_id(rule_id: &str, key: &[(&str, &Value)]) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    for (k, v) in key {
        h.update([0x1f]);
        h.update(k.as_bytes());
        h.update([0x1e]);
        h.update(v.to_string().as_bytes());
    }
    let d = h.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

fn batches_to_rows(batches: &[RecordBatch]) -> Result<Vec<Map<String, Value>>, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(buf
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice::<Map<String, Value>>(l).ok())
        .collect())
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub alerts: Vec<Alert>,
    /// Alerts past `max_alerts` that were cut.
    pub cut: usize,
    /// What the run's queries read from the lake.
    pub scan: crate::query::ScanStats,
}

/// Runs a rule for one window.
pub async fn run(
    ctx: &SessionContext,
    rule: &Rule,
    w: &RunWindow,
    detected_at: chrono::DateTime<chrono::Utc>,
) -> Result<RunResult, RuleError> {
    let (rows, scan) = collect_rows(rule, rule.plan(ctx, w).await?).await?;
    Ok(finish(rule, rows, w, detected_at, scan))
}

/// One run's rows as alerts, capped at `max_alerts`.
pub(crate) fn finish(
    rule: &Rule,
    rows: Vec<Map<String, Value>>,
    w: &RunWindow,
    detected_at: chrono::DateTime<chrono::Utc>,
    scan: crate::query::ScanStats,
) -> RunResult {
    let mut alerts: Vec<Alert> = rows.into_iter().map(|row| make_alert(rule, row, w, detected_at)).collect();
    let cut = cap(rule, &mut alerts);
    RunResult { alerts, cut, scan }
}

/// Runs a planned rule query and returns its rows as JSON objects, and what it read.
pub(crate) async fn collect_rows(
    rule: &Rule,
    df: datafusion::dataframe::DataFrame,
) -> Result<(Vec<Map<String, Value>>, crate::query::ScanStats), RuleError> {
    let (batches, scan) = crate::query::collect_with_stats(df).await.map_err(|e| rule.query_error(e))?;
    let rows =
        batches_to_rows(&batches).map_err(|e| RuleError::Invalid { id: rule.meta.id.clone(), msg: e.to_string() })?;
    Ok((rows, scan))
}

/// One run's alerts in (ts, id) order, cut to `max_alerts`; returns how many were cut.
fn cap(rule: &Rule, alerts: &mut Vec<Alert>) -> usize {
    alerts.sort_by(|a, b| (a.ts, &a.alert_id).cmp(&(b.ts, &b.alert_id)));
    let cut = alerts.len().saturating_sub(rule.meta.max_alerts);
    alerts.truncate(rule.meta.max_alerts);
    cut
}

fn make_alert(
    rule: &Rule,
    mut row: Map<String, Value>,
    w: &RunWindow,
    detected_at: chrono::DateTime<chrono::Utc>,
) -> Alert {
    let m = &rule.meta;
    row.remove("run_end_us");
    let tsv = row.get(&m.timestamp_field).cloned().unwrap_or(Value::Null);
    let ts = crate::ingest::normalize::time_of(Some(&tsv)).unwrap_or(w.start.timestamp_micros());
    let key: Vec<(&str, &Value)> =
        m.alert_key.iter().map(|k| (k.as_str(), row.get(k).unwrap_or(&Value::Null))).collect();
    let s = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Alert {
        alert_id: alert_id(&m.id, &key),
        rule_id: m.id.clone(),
        rule_name: m.name.clone(),
        severity: row
            .get("severity")
            .and_then(|v| v.as_str())
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_else(|| m.severity.clone()),
        risk_score: m.risk_score,
        ts,
        window_start: w.start.timestamp_micros(),
        window_end: w.end.timestamp_micros(),
        detected_at: detected_at.timestamp_micros(),
        service_principal_id: s("service_principal_id"),
        service_principal_name: s("service_principal_name"),
        app_id: s("app_id"),
        source_ip: s("source_ip"),
        source_asn: row.get("source_asn").and_then(|v| v.as_i64()),
        fields: Value::Object(row.clone()).to_string(),
        suppress_key: (!m.suppress_by.is_empty()).then(|| {
            m.suppress_by
                .iter()
                .map(|k| row.get(k).unwrap_or(&Value::Null).to_string())
                .collect::<Vec<_>>()
                .join("\u{1f}")
        }),
    }
}

/// Scheduled run ends inside `[from, to]`: multiples of the rule's interval since the epoch.
pub fn run_ends(
    rule: &Rule,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<chrono::DateTime<chrono::Utc>>, RuleError> {
    let step = super::parse_duration(&rule.meta.interval)?.num_microseconds().unwrap_or(i64::MAX).max(1);
    let first = (from.timestamp_micros() + step - 1).div_euclid(step) * step;
    let mut out = Vec::new();
    let mut t = first;
    while t <= to.timestamp_micros() {
        out.push(chrono::DateTime::from_timestamp_micros(t).expect("in range"));
        t += step;
    }
    Ok(out)
}

/// Every scheduled run in `[from, to]` (a backtest): each alert once, from the run that first saw
/// it; with `suppress_by`, an alert whose key already alerted within `suppress_for` (measured
/// between run ends) is suppressed.
pub async fn backtest(
    ctx: &SessionContext,
    rule: &Rule,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    detected_at: chrono::DateTime<chrono::Utc>,
) -> Result<RunResult, RuleError> {
    let mut seen = std::collections::HashSet::new();
    let mut last_by_key: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let suppress_us = match &rule.meta.suppress_for {
        Some(d) => super::parse_duration(d)?.num_microseconds().unwrap_or(i64::MAX),
        None => 0,
    };
    let mut all = Vec::new();
    let mut cut = 0;
    let mut scan = crate::query::ScanStats::default();
    if rule.backtest_sql.is_some() && rule.meta.suppress_by.is_empty() {
        return backtest_one_pass(ctx, rule, from, to, detected_at).await;
    }
    for end in run_ends(rule, from, to)? {
        let r = run(ctx, rule, &rule.window_ending(end)?, detected_at).await?;
        cut += r.cut;
        scan.add(r.scan);
        for a in r.alerts {
            if !seen.insert(a.alert_id.clone()) {
                continue;
            }
            if let Some(k) = &a.suppress_key {
                let now = end.timestamp_micros();
                match last_by_key.get(k) {
                    Some(&last) if now - last < suppress_us => continue,
                    _ => {
                        last_by_key.insert(k.clone(), now);
                    }
                }
            }
            all.push(a);
        }
    }
    Ok(RunResult { alerts: all, cut, scan })
}

/// The one-pass backtest: all runs' alerts from one query; each alert carries the window of the
/// first run that reports it, and `max_alerts` applies per run as in single runs.
pub async fn backtest_one_pass(
    ctx: &SessionContext,
    rule: &Rule,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    detected_at: chrono::DateTime<chrono::Utc>,
) -> Result<RunResult, RuleError> {
    let range = RunWindow { start: from, end: to };
    let df = rule
        .plan_backtest(ctx, &range)
        .await?
        .ok_or_else(|| RuleError::Invalid { id: rule.meta.id.clone(), msg: "no one-pass backtest query".into() })?;
    let (rows, scan) = collect_rows(rule, df).await?;
    let lookback = super::parse_duration(&rule.meta.lookback)?;
    let mut by_run: std::collections::BTreeMap<i64, Vec<Alert>> = std::collections::BTreeMap::new();
    for row in rows {
        let end_us = row.get("run_end_us").and_then(Value::as_i64).ok_or_else(|| RuleError::Invalid {
            id: rule.meta.id.clone(),
            msg: "the backtest query must output run_end_us".into(),
        })?;
        let end = chrono::DateTime::from_timestamp_micros(end_us).expect("in range");
        let w = RunWindow { start: end - lookback, end };
        by_run.entry(end_us).or_default().push(make_alert(rule, row, &w, detected_at));
    }
    let mut all = Vec::new();
    let mut cut = 0;
    let mut seen = std::collections::HashSet::new();
    for (_, mut alerts) in by_run {
        cut += cap(rule, &mut alerts);
        all.extend(alerts.into_iter().filter(|a| seen.insert(a.alert_id.clone())));
    }
    Ok(RunResult { alerts: all, cut, scan })
}

/// Replays every scheduled run one by one (the reference the one-pass backtest must equal).
pub async fn backtest_replay(
    ctx: &SessionContext,
    rule: &Rule,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    detected_at: chrono::DateTime<chrono::Utc>,
) -> Result<RunResult, RuleError> {
    let mut r = rule.clone();
    r.backtest_sql = None;
    backtest(ctx, &r, from, to, detected_at).await
}
