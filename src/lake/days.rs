//! A lake file holds the rows of one UTC day: its `day` partition value is the date of every
//! row's `ts` (the writer and compaction place rows so). A time range over many days is then known
//! to hold for every row of the days strictly inside it, and reading `ts` there to test it is
//! wasted work: over 30 days of sign-ins, decoding and comparing 18 M timestamps took about 0.3 s
//! of a scan that needs none of them.
//!
//! Three pieces, all exact:
//! - [`DayBounds`], a physical optimizer rule run last: in every Parquet scan of a table with
//!   `ts` and a `day` partition, each conjunct `ts > t` / `ts >= t` becomes
//!   `day > date(t) OR ts > t` (and `ts < t` / `ts <= t`, `day < date(t) OR …`), the same
//!   condition under the layout's invariant.
//! - The same rule drops from each scan whose `ts` bounds it widened the files whose statistics
//!   (footers read in planning, and the `day` of their folder) cannot satisfy its predicate,
//!   before any is opened (`pruned_groups`).
//! - [`FoldingAdapterFactory`], the tables' expression adapter: when a file is opened DataFusion
//!   replaces `day` by the file's value; the adapter then folds the constant comparison and the
//!   `true OR …` / `false OR …` it leaves, so a file inside the range keeps no `ts` test (the
//!   column is not read for the filter) and a file on its edge keeps exactly the original one.

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileSource, ParquetSource};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{lit, BinaryExpr, Column, Literal};
use datafusion::physical_expr::simplifier::PhysicalExprSimplifier;
use datafusion::physical_expr::utils::{conjunction, split_conjunction};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// The physical optimizer rule: see the module's text.
#[derive(Debug, Default)]
pub struct DayBounds;

impl PhysicalOptimizerRule for DayBounds {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        super::map_parquet_scans(plan, rewrite)
    }

    fn name(&self) -> &str {
        "wisp_day_bounds"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The scan with its `ts` bounds widened by `day` tests and the files its statistics rule out
/// dropped; None for a scan without a filter, a `ts` and a `day`, or without a bound on `ts`.
fn rewrite(config: &FileScanConfig, parquet: &ParquetSource) -> Option<FileScanConfig> {
    let (parquet, groups) = bound(config, parquet)?;
    Some(super::with_parquet(config, parquet, None, groups))
}

/// [`rewrite`]'s new source and file groups (None: the groups unchanged), for a caller that
/// changes the scan further before building it once (`lake::LakeScans`).
pub(crate) fn bound(
    config: &FileScanConfig,
    parquet: &ParquetSource,
) -> Option<(ParquetSource, Option<Vec<FileGroup>>)> {
    let (filter, (ts, day)) = (parquet.filter()?, columns(parquet.table_schema())?);
    let parquet = parquet.with_predicate(with_day_bounds(&filter, &ts, &day)?);
    let groups = pruned_groups(config, &parquet.filter()?);
    Some((parquet, groups))
}

/// The scan's file groups without the files whose statistics cannot satisfy the (widened)
/// predicate: their columns' from the footers read in planning, their `day`'s from the folder
/// (exact, one value). DataFusion's own file pruner, when a file is opened, sees the predicate
/// with the file's day in place of the column (`'2026-11-18' > '2026-11-19' OR ts >= …`) and
/// treats a comparison of two constants as unknown, so it pruned no file of a day the range
/// touches: a day's from-hour-to-hour edge opened the start day's eight sign-in files, read their
/// footers and page indexes, to find nothing. Here the same pruning runs once per scan over every
/// file, before any is opened. The groups stay as many (some may be empty): the plan's
/// partitioning was settled before this rule. None when no file is dropped, or when a file has
/// no statistics.
fn pruned_groups(config: &FileScanConfig, predicate: &Arc<dyn PhysicalExpr>) -> Option<Vec<FileGroup>> {
    let schema = Arc::clone(config.file_source().table_schema().table_schema());
    let stats = config
        .file_groups
        .iter()
        .flat_map(FileGroup::iter)
        .map(|f| f.statistics.clone())
        .collect::<Option<Vec<_>>>()?;
    let pruning = PruningPredicateBuilder::new().with_file_schema(Arc::clone(&schema)).build(Arc::clone(predicate))?;
    let keep = pruning.prune(&PrunableStatistics::new(stats, schema)).ok()?;
    if keep.iter().all(|k| *k) {
        return None;
    }
    let mut keep = keep.into_iter();
    Some(
        config
            .file_groups
            .iter()
            .map(|g| FileGroup::new(g.iter().filter(|_| keep.next().unwrap_or(true)).cloned().collect()))
            .collect(),
    )
}

/// The table's `ts` (a timestamp column of its files) and `day` (a string partition column: a
/// folder `day=…`, as the lake's tables and the alert store have), as columns of its schema (file
/// columns, then partition columns). None for any other table.
fn columns(schema: &TableSchema) -> Option<(Column, Column)> {
    let (ts_idx, ts) = schema.file_schema().column_with_name("ts")?;
    let (part_idx, day) = schema.table_partition_cols().find("day")?;
    let day_idx = schema.file_schema().fields().len() + part_idx;
    (matches!(ts.data_type(), DataType::Timestamp(_, _))
        && day.data_type() == &DataType::Utf8
        && schema.table_schema().field(day_idx).name() == "day")
        .then(|| (Column::new("ts", ts_idx), Column::new("day", day_idx)))
}

/// The predicate with each bound on `ts` widened by the `day` test that implies it; None when
/// it has no such bound.
fn with_day_bounds(filter: &Arc<dyn PhysicalExpr>, ts: &Column, day: &Column) -> Option<Arc<dyn PhysicalExpr>> {
    let mut changed = false;
    let parts: Vec<Arc<dyn PhysicalExpr>> = split_conjunction(filter)
        .into_iter()
        .map(|c| match day_test(c, ts, day) {
            Some(d) => {
                changed = true;
                Arc::new(BinaryExpr::new(d, Operator::Or, Arc::clone(c))) as Arc<dyn PhysicalExpr>
            }
            None => Arc::clone(c),
        })
        .collect();
    changed.then(|| conjunction(parts))
}

/// For a conjunct `ts > t`, `ts >= t` (or `t < ts`, `t <= ts`): `day > 'date of t'`, true only of
/// days whose every time is after t; for `ts < t`, `ts <= t`: `day < 'date of t'`. None for
/// anything else, and for times whose date is not a four-digit year (the day strings would not
/// sort as the times do).
fn day_test(c: &Arc<dyn PhysicalExpr>, ts: &Column, day: &Column) -> Option<Arc<dyn PhysicalExpr>> {
    let b = c.downcast_ref::<BinaryExpr>()?;
    let is_ts = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().is_some_and(|col| col == ts);
    let literal = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Literal>().and_then(|l| micros(l.value()));
    let (op, t) = if is_ts(b.left()) {
        (*b.op(), literal(b.right())?)
    } else if is_ts(b.right()) {
        (b.op().swap()?, literal(b.left())?)
    } else {
        return None;
    };
    let after = match op {
        Operator::Gt | Operator::GtEq => true,
        Operator::Lt | Operator::LtEq => false,
        _ => return None,
    };
    let date = chrono::DateTime::from_timestamp_micros(t)?.date_naive();
    if !(1..=9999).contains(&chrono::Datelike::year(&date)) {
        return None;
    }
    let date = lit(ScalarValue::Utf8(Some(date.format("%Y-%m-%d").to_string())));
    let op = if after { Operator::Gt } else { Operator::Lt };
    Some(Arc::new(BinaryExpr::new(Arc::new(day.clone()), op, date)))
}

/// A timestamp literal in microseconds (rounded down from nanoseconds: `day` tests only compare
/// dates, and a time and its floor have one date).
fn micros(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000)),
        _ => None,
    }
}

/// DataFusion's default adapter (to each file's schema), then the folding: see the module's text.
#[derive(Debug, Default)]
pub struct FoldingAdapterFactory;

impl PhysicalExprAdapterFactory for FoldingAdapterFactory {
    fn create(&self, logical: SchemaRef, physical: SchemaRef) -> Result<Arc<dyn PhysicalExprAdapter>> {
        let inner = DefaultPhysicalExprAdapterFactory.create(logical, Arc::clone(&physical))?;
        Ok(Arc::new(FoldingAdapter { inner, physical }))
    }
}

#[derive(Debug)]
struct FoldingAdapter {
    inner: Arc<dyn PhysicalExprAdapter>,
    physical: SchemaRef,
}

impl PhysicalExprAdapter for FoldingAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
        let expr = self.inner.rewrite(expr)?;
        // Constant comparisons (the file's day against a date) become literals first (once per
        // file opened, not per row; the opener's own simplifier comes after this adapter).
        let expr = PhysicalExprSimplifier::new(&self.physical).simplify(expr)?;
        fold_boolean(expr)
    }
}

/// `true OR x` → true, `false OR x` → x, `true AND x` → x, `false AND x` → false (either side),
/// bottom up. A NULL literal is left as it is.
pub(crate) fn fold_boolean(expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|e| {
        let Some(b) = e.downcast_ref::<BinaryExpr>() else { return Ok(Transformed::no(e)) };
        let known = |x: &Arc<dyn PhysicalExpr>| match x.downcast_ref::<Literal>().map(Literal::value) {
            Some(ScalarValue::Boolean(Some(v))) => Some(*v),
            _ => None,
        };
        let (l, r) = (known(b.left()), known(b.right()));
        let folded = match b.op() {
            Operator::Or if l == Some(true) || r == Some(true) => lit(true),
            Operator::Or if l == Some(false) => Arc::clone(b.right()),
            Operator::Or if r == Some(false) => Arc::clone(b.left()),
            Operator::And if l == Some(false) || r == Some(false) => lit(false),
            Operator::And if l == Some(true) => Arc::clone(b.right()),
            Operator::And if r == Some(true) => Arc::clone(b.left()),
            _ => return Ok(Transformed::no(e)),
        };
        Ok(Transformed::yes(folded))
    })
    .data()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts_lit(iso: &str) -> Arc<dyn PhysicalExpr> {
        let t = chrono::DateTime::parse_from_rfc3339(iso).unwrap().timestamp_micros();
        lit(ScalarValue::TimestampMicrosecond(Some(t), Some("UTC".into())))
    }

    fn cmp(l: Arc<dyn PhysicalExpr>, op: Operator, r: Arc<dyn PhysicalExpr>) -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(l, op, r))
    }

    #[test]
    fn bounds_on_ts_gain_their_day_test_and_nothing_else_changes() {
        let (ts, day, other) = (Column::new("ts", 0), Column::new("day", 5), Column::new("category", 2));
        let c = |c: &Column| Arc::new(c.clone()) as Arc<dyn PhysicalExpr>;
        let filter = conjunction([
            cmp(c(&ts), Operator::Gt, ts_lit("2026-10-21T00:00:00Z")),
            cmp(ts_lit("2026-11-20T13:00:00Z"), Operator::GtEq, c(&ts)),
            cmp(c(&other), Operator::Eq, lit("ServicePrincipalSignInLogs")),
            cmp(c(&ts), Operator::Eq, ts_lit("2026-11-01T00:00:00Z")),
        ]);
        let got = with_day_bounds(&filter, &ts, &day).unwrap().to_string();
        assert_eq!(
            got,
            "(day@5 > 2026-10-21 OR ts@0 > 1792540800000000) AND (day@5 < 2026-11-20 OR 1795179600000000 >= ts@0) \
             AND category@2 = ServicePrincipalSignInLogs AND ts@0 = 1793491200000000"
        );
        // No bound on ts: nothing to do.
        let filter = cmp(c(&other), Operator::Eq, lit("x"));
        assert!(with_day_bounds(&filter, &ts, &day).is_none());
        // A time outside the four-digit years: left alone.
        let far = lit(ScalarValue::TimestampMicrosecond(Some(300_000_000_000_000_000), None));
        assert!(with_day_bounds(&cmp(c(&ts), Operator::Lt, far), &ts, &day).is_none());
    }

    #[test]
    fn folding_keeps_only_what_a_file_still_needs() {
        let ts = || Arc::new(Column::new("ts", 0)) as Arc<dyn PhysicalExpr>;
        let bound = || cmp(ts(), Operator::Gt, ts_lit("2026-10-21T00:00:00Z"));
        let (t, f) = (lit(true), lit(false));
        assert_eq!(fold_boolean(cmp(t.clone(), Operator::Or, bound())).unwrap().to_string(), "true");
        assert_eq!(fold_boolean(cmp(bound(), Operator::Or, t.clone())).unwrap().to_string(), "true");
        assert_eq!(fold_boolean(cmp(f.clone(), Operator::Or, bound())).unwrap().to_string(), bound().to_string());
        assert_eq!(fold_boolean(cmp(bound(), Operator::And, t.clone())).unwrap().to_string(), bound().to_string());
        assert_eq!(fold_boolean(cmp(f.clone(), Operator::And, bound())).unwrap().to_string(), "false");
        // Nested: (true OR b) AND (false OR b) → b.
        let e = cmp(cmp(t, Operator::Or, bound()), Operator::And, cmp(f, Operator::Or, bound()));
        assert_eq!(fold_boolean(e).unwrap().to_string(), bound().to_string());
        // NULL is not known true or false.
        let n = lit(ScalarValue::Boolean(None));
        assert_eq!(fold_boolean(cmp(n, Operator::Or, bound())).unwrap().to_string(), format!("NULL OR {}", bound()));
    }
}
