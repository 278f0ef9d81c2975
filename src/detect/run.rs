//! One scheduled run of a rule: plan it for its window, execute, turn the rows into alerts, cap.

use super::alert::{self, Alert};
use crate::query::ScanStats;
use crate::rules::{Rule, RuleError, RunWindow};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;

/// The outcome of one run (or of a backtest: all its runs).
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub alerts: Vec<Alert>,
    /// Alerts past `max_alerts` that were cut.
    pub cut: usize,
    /// What the run's queries read from the lake.
    pub scan: ScanStats,
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
    rows: Vec<alert::Row>,
    w: &RunWindow,
    detected_at: chrono::DateTime<chrono::Utc>,
    scan: ScanStats,
) -> RunResult {
    let mut alerts: Vec<Alert> = rows.into_iter().map(|row| alert::make_alert(rule, row, w, detected_at)).collect();
    let cut = cap(rule, &mut alerts);
    RunResult { alerts, cut, scan }
}

/// Runs a planned rule query: its rows and what it read.
pub(crate) async fn collect_rows(rule: &Rule, df: DataFrame) -> Result<(Vec<alert::Row>, ScanStats), RuleError> {
    let (batches, scan) = crate::query::collect_with_stats(df).await.map_err(|e| rule.query_error(e))?;
    Ok((alert::rows_of(rule, &batches)?, scan))
}

/// Severity rank for the cap: the most severe first.
fn severity_rank(s: &str) -> u8 {
    match s {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        "low" => 3,
        _ => 4,
    }
}

/// One run's alerts cut to `max_alerts`, keeping the most severe (then the earliest), in (ts, id)
/// order; returns how many were cut (reported by every run).
pub(crate) fn cap(rule: &Rule, alerts: &mut Vec<Alert>) -> usize {
    alerts.sort_by(|a, b| {
        (severity_rank(&a.severity), a.ts, &a.alert_id).cmp(&(severity_rank(&b.severity), b.ts, &b.alert_id))
    });
    let cut = alerts.len().saturating_sub(rule.meta.max_alerts);
    alerts.truncate(rule.meta.max_alerts);
    alerts.sort_by(|a, b| (a.ts, &a.alert_id).cmp(&(b.ts, &b.alert_id)));
    cut
}
