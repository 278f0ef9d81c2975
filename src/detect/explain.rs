//! `wisp explain`: an alert and the evidence behind it — the rows of the rule's tables in the
//! alert's window that belong to its entity (principal, application, address), with their `raw`
//! record. What an analyst opens first.

use super::alert::Alert;
use super::store::{self, StateDir};
use super::DetectError;
use crate::rules::Rule;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{col, lit, Expr, SessionContext};

/// Finds an alert in the store by id (or a unique prefix of at least 8 characters).
pub async fn find(dir: &StateDir, id: &str) -> Result<Option<Alert>, DetectError> {
    if id.len() < 8 {
        return Err(DetectError::Usage(format!("alert id '{id}' is too short: give at least 8 characters")));
    }
    let mut found: Vec<Alert> = Vec::new();
    for f in dir.list("alerts").await?.into_iter().filter(|f| f.ends_with(".parquet")) {
        found.extend(store::read_alerts(dir, &f).await?.into_iter().filter(|a| a.alert_id.starts_with(id)));
    }
    found.dedup_by(|a, b| a.alert_id == b.alert_id);
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        n => Err(DetectError::Usage(format!("alert id prefix '{id}' matches {n} alerts: give more characters"))),
    }
}

/// The entity columns an alert names, with their values.
fn entity(a: &Alert) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    if let Some(x) = &a.service_principal_id {
        v.push(("service_principal_id", x.clone()));
    }
    if let Some(x) = &a.app_id {
        v.push(("app_id", x.clone()));
    }
    if let Some(x) = &a.source_ip {
        v.push(("source_ip", x.clone()));
    }
    v
}

/// The evidence query: for each of the rule's tables that has at least one of the alert's entity
/// columns, its rows in the alert's window matching every such column; as one frame of
/// `table, ts, id, raw`, oldest first.
pub async fn evidence(ctx: &SessionContext, rule: &Rule, a: &Alert) -> Result<Option<DataFrame>, DetectError> {
    let q = |e| rule.query_error(e);
    let ent = entity(a);
    let (from, to) = (crate::time::from_micros(a.window_start)?, crate::time::from_micros(a.window_end)?);
    let mut frames: Option<DataFrame> = None;
    for t in &rule.meta.tables {
        let df = ctx.table(t.as_str()).await.map_err(q)?;
        let names: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        let conds: Vec<Expr> =
            ent.iter().filter(|(c, _)| names.iter().any(|n| n == c)).map(|(c, v)| col(*c).eq(lit(v.clone()))).collect();
        if conds.is_empty() {
            continue;
        }
        let has = |c: &str| names.iter().any(|n| n == c);
        let mut filter =
            col("ts").gt(lit(crate::time::utc_ts(from))).and(col("ts").lt_eq(lit(crate::time::utc_ts(to))));
        filter = filter
            .and(col("day").gt_eq(lit(from.format("%Y-%m-%d").to_string())))
            .and(col("day").lt_eq(lit(to.format("%Y-%m-%d").to_string())));
        for c in conds {
            filter = filter.and(c);
        }
        let id = if has("id") { col("id") } else { lit(datafusion::common::ScalarValue::Utf8(None)) };
        let df = df
            .filter(filter)
            .and_then(|d| d.select(vec![lit(t.as_str()).alias("table"), col("ts"), id.alias("id"), col("raw")]))
            .map_err(q)?;
        frames = Some(match frames {
            None => df,
            Some(f) => f.union(df).map_err(q)?,
        });
    }
    match frames {
        Some(f) => Ok(Some(f.sort(vec![col("ts").sort(true, false)]).map_err(q)?)),
        None => Ok(None),
    }
}
