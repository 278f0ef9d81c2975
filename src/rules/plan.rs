//! Planning a rule's SQL: its parameters for a window (typed, bound, never pasted into the text),
//! each section planned read-only, and `lint`, which plans every section against the lake's schema
//! without data.

use super::{Rule, RuleError, RunWindow};
use crate::time::{micros, utc_ts};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::dataframe::DataFrame;
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::prelude::{col, SessionContext};
use std::collections::HashMap;

/// A duration as a SQL interval (exact: nanoseconds, no calendar days or months).
fn interval(d: chrono::Duration) -> ScalarValue {
    let nanos = d.num_nanoseconds().unwrap_or(i64::MAX);
    ScalarValue::IntervalMonthDayNano(Some(arrow::datatypes::IntervalMonthDayNano::new(0, 0, nanos)))
}

/// The table a rule's `-- @stateful` SQL reads: each term's `first_seen` and `last_seen`.
pub const STATE_TABLE: &str = "terms_state";

/// How many times DataFusion's logical optimizer runs over a rule's query (DataFusion's default
/// is 3; a rule's `[settings]` may set `datafusion.optimizer.max_passes` again). The second pass
/// changed nothing that mattered in any built-in rule's plans (compared over hour, day and
/// 30-day windows and their backtests: the same operators, the credential rule's event scan kept
/// one redundant conjunct), yet cost 2–3 ms of a 20–40 ms hunt over a rule's own window
/// (BENCHMARKS.md, thirty-ninth session).
pub const RULE_OPTIMIZER_PASSES: usize = 1;

impl Rule {
    /// The parameters for one window, typed: timestamps as UTC microsecond timestamps.
    pub fn param_values(&self, w: &RunWindow) -> Result<HashMap<String, ScalarValue>, RuleError> {
        let mut p = HashMap::new();
        p.insert("window_start".to_string(), utc_ts(w.start));
        p.insert("window_end".to_string(), utc_ts(w.end));
        p.insert("history_start".to_string(), utc_ts(self.history_start(w)?));
        // The window's whole hours and whole UTC days, for rules over rollups (src/rollups.rs):
        // [start rounded up, end rounded down) — an end exactly on a boundary starts a partial
        // period, since the window holds its end.
        for (name, unit) in [("hours", 3_600_000_000i64), ("days", 86_400_000_000)] {
            let (s, e) = (w.start.timestamp_micros(), w.end.timestamp_micros());
            let (first, last) =
                (s.div_euclid(unit) * unit + if s.rem_euclid(unit) > 0 { unit } else { 0 }, e.div_euclid(unit) * unit);
            p.insert(
                format!("window_whole_{name}_start"),
                ScalarValue::TimestampMicrosecond(Some(first), Some("UTC".into())),
            );
            p.insert(
                format!("window_whole_{name}_end"),
                ScalarValue::TimestampMicrosecond(Some(last), Some("UTC".into())),
            );
        }
        let us = |d: chrono::Duration| ScalarValue::Int64(Some(micros(d)));
        for (name, field) in [("interval", "interval"), ("lookback", "lookback"), ("history", "history_window")] {
            let d = self.duration(field)?;
            p.insert(format!("{name}_us"), us(d));
            p.insert(name.to_string(), interval(d));
        }
        // For a one-pass backtest the range is the window.
        p.insert("range_start".to_string(), utc_ts(w.start));
        p.insert("range_end".to_string(), utc_ts(w.end));
        for (k, v) in &self.meta.params {
            let s = match v {
                toml::Value::Integer(i) => ScalarValue::Int64(Some(*i)),
                toml::Value::Float(f) => ScalarValue::Float64(Some(*f)),
                toml::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
                toml::Value::Boolean(b) => ScalarValue::Boolean(Some(*b)),
                // A duration: `name = { duration = "3d" }` binds `$name` (an interval) and
                // `$name_us` (microseconds).
                toml::Value::Table(t) if t.len() == 1 && t.get("duration").is_some_and(|d| d.is_str()) => {
                    let text = t["duration"].as_str().unwrap_or_default();
                    let d = crate::time::parse_duration(text)
                        .map_err(|e| self.invalid(format!("parameter {k}: {e}")))?;
                    p.insert(format!("{k}_us"), us(d));
                    interval(d)
                }
                other => {
                    return Err(self.invalid(format!(
                        "parameter {k}: unsupported value {other:?} (use an integer, float, string, boolean or {{ duration = \"3d\" }})"
                    )))
                }
            };
            p.insert(k.clone(), s);
        }
        Ok(p)
    }

    /// Plans one of the rule's sections read-only with the parameters of `w` bound.
    pub async fn plan_section(&self, ctx: &SessionContext, sql: &str, w: &RunWindow) -> Result<DataFrame, RuleError> {
        let params = ParamValues::from(self.param_values(w)?);
        // The arms the window rules out are dropped from the parsed statement (`arms`).
        let df = crate::query::read_only_sql_with(ctx, sql, |state, statement| {
            super::arms::drop_dead_arms(state, statement, &params);
        })
        .await
        .map_err(|e| self.query_error(e))?;
        let df = df.with_param_values(params).map_err(|e| self.query_error(e))?;
        // The rule's `[settings]` hold for this query only, over the rules' own defaults.
        crate::query::with_own_options(df, |opts| {
            opts.optimizer.max_passes = RULE_OPTIMIZER_PASSES;
            self.apply_settings(opts)
        })
    }

    /// Plans the rule's main query read-only with its parameters bound.
    pub async fn plan(&self, ctx: &SessionContext, w: &RunWindow) -> Result<DataFrame, RuleError> {
        self.plan_section(ctx, &self.sql, w).await
    }

    /// Plans the one-pass backtest over `range`, if the rule has one.
    pub async fn plan_backtest(&self, ctx: &SessionContext, range: &RunWindow) -> Result<Option<DataFrame>, RuleError> {
        match &self.backtest_sql {
            Some(sql) => Ok(Some(self.plan_section(ctx, sql, range).await?)),
            None => Ok(None),
        }
    }

    /// The rule's first-seen terms of the events with `range.start < ts <= range.end`: one row per
    /// term (the `new_terms_fields`) with its `first_seen` and `last_seen`.
    pub async fn plan_terms(&self, ctx: &SessionContext, range: &RunWindow) -> Result<DataFrame, RuleError> {
        let terms_sql = self.terms_sql.as_deref().ok_or_else(|| self.invalid("no '-- @terms' section"))?;
        let fields: Vec<_> = self.meta.new_terms_fields.iter().map(col).collect();
        let ts = col(self.meta.timestamp_field.as_str());
        self.plan_section(ctx, terms_sql, range)
            .await?
            .aggregate(fields, vec![min(ts.clone()).alias("first_seen"), max(ts).alias("last_seen")])
            .map_err(|e| self.query_error(e))
    }
}

/// `terms_state` registered for one rule's run; deregistered when dropped (also on errors), so one
/// session can run several stateful rules one after another.
pub struct TermsTable<'a>(&'a SessionContext);

impl<'a> TermsTable<'a> {
    pub fn register(
        ctx: &'a SessionContext,
        rule: &Rule,
        table: std::sync::Arc<dyn datafusion::catalog::TableProvider>,
    ) -> Result<Self, RuleError> {
        let _ = ctx.deregister_table(STATE_TABLE);
        ctx.register_table(STATE_TABLE, table).map_err(|e| rule.query_error(e))?;
        Ok(TermsTable(ctx))
    }
}

impl Drop for TermsTable<'_> {
    fn drop(&mut self) {
        let _ = self.0.deregister_table(STATE_TABLE);
    }
}

/// Plans every rule and every section against the lake schema with no data: a typo in a column,
/// an `alert_key` the query does not output, or a stateful section that does not fit its terms is
/// found here.
pub async fn lint(ctx: &SessionContext, rules: &[Rule]) -> Vec<(String, Result<(), RuleError>)> {
    let mut out = Vec::new();
    for r in rules {
        out.push((r.meta.id.clone(), lint_one(ctx, r).await));
    }
    out
}

async fn lint_one(ctx: &SessionContext, r: &Rule) -> Result<(), RuleError> {
    let w = RunWindow { start: chrono::DateTime::UNIX_EPOCH, end: chrono::DateTime::UNIX_EPOCH };
    let df = r.plan(ctx, &w).await?;
    let schema = df.schema().clone();
    for k in &r.meta.alert_key {
        if schema.field_with_unqualified_name(k).is_err() {
            return Err(r.invalid(format!("alert_key column '{k}' is not in the query's output")));
        }
    }
    check_pinned(r, &df)?;
    if schema.field_with_unqualified_name(&r.meta.timestamp_field).is_err() {
        return Err(r.invalid(format!("the query must output the timestamp column '{}'", r.meta.timestamp_field)));
    }
    df.create_physical_plan().await.map_err(|e| r.query_error(e))?;
    if let Some(bt) = r.plan_backtest(ctx, &w).await? {
        let schema = bt.schema().clone();
        if schema.field_with_unqualified_name("run_end_us").is_err() {
            return Err(r.invalid("the '-- @backtest' section must output run_end_us"));
        }
        bt.create_physical_plan().await.map_err(|e| r.query_error(e))?;
    }
    if let Some(stateful) = &r.stateful_sql {
        let schema = r.plan_terms(ctx, &w).await?.schema().as_arrow().clone();
        let table = datafusion::datasource::MemTable::try_new(std::sync::Arc::new(schema), vec![vec![]])
            .map_err(|e| r.query_error(e))?;
        let _table = TermsTable::register(ctx, r, std::sync::Arc::new(table))?;
        r.plan_section(ctx, stateful, &w).await?.create_physical_plan().await.map_err(|e| r.query_error(e))?;
        if let Some(sb) = &r.stateful_backtest_sql {
            let df = r.plan_section(ctx, sb, &w).await?;
            if df.schema().field_with_unqualified_name("run_end_us").is_err() {
                return Err(r.invalid("the '-- @stateful_backtest' section must output run_end_us"));
            }
            df.create_physical_plan().await.map_err(|e| r.query_error(e))?;
        }
    }
    Ok(())
}

/// Checks that the rule's `alert_key` pins its alerts' events (see [`pins`]): `wisp run` relies on
/// it to look for repeats of an alert only near its time.
pub async fn check_alert_key(ctx: &SessionContext, r: &Rule) -> Result<(), RuleError> {
    let w = RunWindow { start: chrono::DateTime::UNIX_EPOCH, end: chrono::DateTime::UNIX_EPOCH };
    check_pinned(r, &r.plan(ctx, &w).await?)
}

fn check_pinned(r: &Rule, df: &DataFrame) -> Result<(), RuleError> {
    if r.meta.alert_key.iter().any(|k| pins(df.logical_plan(), k)) {
        return Ok(());
    }
    Err(r.invalid(format!(
        "alert_key {:?} does not pin the alert's events: add a time column (a timestamp or date, such as ts) \
         or an event's id carried through unchanged (a table's id column), so that repeats of an alert \
         lie near it in time (wisp run checks the alert store only there)",
        r.meta.alert_key
    )))
}

/// Whether the output column `name` of `plan` pins an alert's events: it is a time (a timestamp or
/// date), or a lake table's `id` column carried through unchanged (renamed, joined, filtered,
/// grouped by, sorted — not computed).
fn pins(plan: &datafusion::logical_expr::LogicalPlan, name: &str) -> bool {
    use arrow::datatypes::DataType;
    let schema = plan.schema();
    let Some(i) = schema.index_of_column_by_name(None, name) else { return false };
    let temporal = matches!(schema.field(i).data_type(), DataType::Timestamp(..) | DataType::Date32 | DataType::Date64);
    temporal || carries_id(plan, i)
}

/// Whether field `i` of `plan`'s output is a table scan's `id`, passed through unchanged.
fn carries_id(plan: &datafusion::logical_expr::LogicalPlan, i: usize) -> bool {
    use datafusion::logical_expr::{Expr, LogicalPlan};
    let through = |input: &LogicalPlan, e: &Expr| match e.clone().unalias_nested().data {
        Expr::Column(c) => {
            input.schema().index_of_column_by_name(c.relation.as_ref(), &c.name).is_some_and(|j| carries_id(input, j))
        }
        _ => false,
    };
    match plan {
        LogicalPlan::TableScan(_) => plan.schema().field(i).name() == "id",
        LogicalPlan::Projection(p) => p.expr.get(i).is_some_and(|e| through(&p.input, e)),
        LogicalPlan::Aggregate(a) => a.group_expr.get(i).is_some_and(|e| through(&a.input, e)),
        LogicalPlan::SubqueryAlias(a) => carries_id(&a.input, i),
        LogicalPlan::Union(_) | LogicalPlan::Extension(_) => false,
        // Filters, sorts, limits, joins, windows, distinct: the column is an input's column.
        _ => {
            let (q, f) = plan.schema().qualified_field(i);
            plan.inputs()
                .into_iter()
                .any(|input| input.schema().index_of_column_by_name(q, f.name()).is_some_and(|j| carries_id(input, j)))
        }
    }
}
