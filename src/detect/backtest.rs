//! Backtests: every scheduled run of a rule in a range, each alert once, from the run that first
//! reports it. A rule with a `-- @backtest` section runs in one query; the others replay every
//! run. Both give the same alerts (tested); suppression applies afterwards, in run order
//! ([`Suppressor`], which the scheduler seeds from its alert store).

use super::alert::{self, Alert};
use super::run::{cap, collect_rows, run, RunResult};
use crate::query::ScanStats;
use crate::rules::{Rule, RuleError, RunWindow};
use crate::time::micros;
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use std::collections::{BTreeMap, HashMap, HashSet};

/// Scheduled run ends inside `[from, to]`: multiples of the rule's interval since the epoch.
pub fn run_ends(rule: &Rule, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<DateTime<Utc>>, RuleError> {
    let step = micros(rule.duration("interval")?).max(1);
    let first = (from.timestamp_micros() + step - 1).div_euclid(step) * step;
    let mut out = Vec::new();
    let mut t = first;
    while t <= to.timestamp_micros() {
        out.push(crate::time::from_micros(t).map_err(|e| rule.time_error("interval", e))?);
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
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    detected_at: DateTime<Utc>,
) -> Result<RunResult, RuleError> {
    let mut r = runs_in(ctx, rule, from, to, detected_at).await?;
    let mut s = Suppressor::new(rule)?;
    r.alerts.retain(|a| s.check(a).is_none());
    Ok(r)
}

/// Suppression by `suppress_by` for `suppress_for`, measured between run ends: the first alert
/// of a key stands, and any other of that key within `suppress_for` of it is suppressed.
#[derive(Debug, Clone, Default)]
pub struct Suppressor {
    pub suppress_us: i64,
    /// Per key, the run end and id of the latest alert that stood.
    pub last_by_key: HashMap<String, (i64, String)>,
}

impl Suppressor {
    pub fn new(rule: &Rule) -> Result<Suppressor, RuleError> {
        Ok(Suppressor { suppress_us: micros(rule.duration("suppress_for")?), last_by_key: HashMap::new() })
    }

    /// `None` when the alert stands (it becomes its key's latest), or the id of the alert that
    /// suppresses it. Alerts come in run order; an alert of an earlier run than its key's latest
    /// (a re-run for late data) is suppressed within `suppress_for` on either side.
    pub fn check(&mut self, a: &Alert) -> Option<String> {
        let k = a.suppress_key.as_ref()?;
        if let Some((last, id)) = self.last_by_key.get(k) {
            if self.suppress_us > 0 && (a.window_end - last).abs() < self.suppress_us {
                return Some(id.clone());
            }
            if a.window_end < *last {
                return None;
            }
        }
        self.last_by_key.insert(k.clone(), (a.window_end, a.alert_id.clone()));
        None
    }
}

/// Every scheduled run in `[from, to]` without suppression: each alert once, from the first run
/// that reports it, in run order. One query when the rule has a `-- @backtest` section, else a
/// replay of every run.
pub async fn runs_in(
    ctx: &SessionContext,
    rule: &Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    detected_at: DateTime<Utc>,
) -> Result<RunResult, RuleError> {
    if rule.backtest_sql.is_some() {
        return backtest_one_pass(ctx, rule, from, to, detected_at).await;
    }
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    let mut cut = 0;
    let mut scan = ScanStats::default();
    for end in run_ends(rule, from, to)? {
        let r = run(ctx, rule, &rule.window_ending(end)?, detected_at).await?;
        cut += r.cut;
        scan.add(r.scan);
        all.extend(r.alerts.into_iter().filter(|a| seen.insert(a.alert_id.clone())));
    }
    Ok(RunResult { alerts: all, cut, scan })
}

/// The one-pass backtest: all runs' alerts from one query; each alert carries the window of the
/// first run that reports it, and `max_alerts` applies per run as in single runs.
pub async fn backtest_one_pass(
    ctx: &SessionContext,
    rule: &Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    detected_at: DateTime<Utc>,
) -> Result<RunResult, RuleError> {
    let range = RunWindow { start: from, end: to };
    let df = rule.plan_backtest(ctx, &range).await?.ok_or_else(|| rule.invalid("no one-pass backtest query"))?;
    let (rows, scan) = collect_rows(rule, df).await?;
    let (alerts, cut) = by_run(rule, rows, detected_at)?;
    Ok(RunResult { alerts, cut, scan })
}

/// A one-pass backtest's rows (each with its `run_end_us`) as alerts: grouped by run, capped per
/// run at `max_alerts`, each alert once from the first run that reports it. Returns them in run
/// order with the number cut.
pub(crate) fn by_run(
    rule: &Rule,
    rows: Vec<alert::Row>,
    detected_at: DateTime<Utc>,
) -> Result<(Vec<Alert>, usize), RuleError> {
    let mut by_run: BTreeMap<i64, Vec<Alert>> = BTreeMap::new();
    let n = rows.len();
    for row in rows {
        let end_us = row.run_end.ok_or_else(|| rule.invalid("the backtest query must output run_end_us"))?;
        let end = crate::time::from_micros(end_us).map_err(|e| rule.time_error("interval", e))?;
        let w = rule.window_ending(end)?;
        by_run.entry(end_us).or_default().push(alert::make_alert(rule, row, &w, detected_at));
    }
    let mut all = Vec::with_capacity(n);
    let mut cut = 0;
    let mut seen = HashSet::with_capacity(n);
    for (_, mut alerts) in by_run {
        cut += cap(rule, &mut alerts);
        all.extend(alerts.into_iter().filter(|a| seen.insert(a.alert_id.clone())));
    }
    Ok((all, cut))
}

/// Replays every scheduled run one by one (the reference the one-pass backtest must equal).
pub async fn backtest_replay(
    ctx: &SessionContext,
    rule: &Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    detected_at: DateTime<Utc>,
) -> Result<RunResult, RuleError> {
    let mut r = rule.clone();
    r.backtest_sql = None;
    backtest(ctx, &r, from, to, detected_at).await
}
