//! Scans whose partition filters keep no partition, found before physical planning.
//!
//! DataFusion's `ListingTable` prunes partitions while it plans a scan: it lists the table and,
//! for every listed file, plans the scan's partition filters anew and evaluates them over that
//! file's partition values. A rollup's view is a union of its stored rows and its source's events
//! on the days without a current summary (`rollups::register`); when every day of a window has a
//! current summary the events branch keeps no day, yet each use of the view had the source's
//! files (the sign-ins' 210 on the medium lake) planned and tested one by one, and the branch
//! then planned, optimized and run as an empty scan. The credential rule uses the sign-in rollup
//! four times.
//!
//! [`prune_empty_scans`] evaluates each listing table scan's partition filters once, over the
//! distinct partition values of the table's listing (the planning's own listing: see
//! [`super::listing`], which serves it to the scans planned next), and replaces a scan that keeps
//! none with an empty relation; DataFusion's `PropagateEmptyRelation` then removes the branches
//! and joins that can only be empty. What a scan keeps is decided as DataFusion would decide it
//! (the same filters, applicable to the partition columns alone; the same parsing of partition
//! values; a file of zero bytes is not listed); a scan that keeps any partition is left as it is.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Field;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, parse_partitions_for_path};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{EmptyRelation, Expr, LogicalPlan, TableScan};
use datafusion::optimizer::propagate_empty_relation::PropagateEmptyRelation;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use futures::TryStreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Marks a session whose logical plans are shipped to be planned elsewhere (a Ballista client,
/// `crate::cluster::connect`): their scans are left for the cluster's planner, which lists the
/// tables where they run (and a plan rewritten here did not survive Ballista's serialization).
#[derive(Debug)]
pub struct Shipped;

/// Replaces the listing-table scans of `plan` whose partition filters keep no partition of the
/// table's current listing with empty relations, then propagates them (see the module). Returns
/// the plan unchanged when no scan is empty.
pub async fn prune_empty_scans(state: &SessionState, plan: LogicalPlan) -> Result<LogicalPlan> {
    if state.config().get_extension::<Shipped>().is_some() {
        return Ok(plan);
    }
    let mut scans = Vec::new();
    plan.apply_with_subqueries(|p| {
        if let LogicalPlan::TableScan(s) = p {
            scans.push(s.clone());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    let mut empty = Vec::new();
    let mut listed = Listed::new();
    for s in &scans {
        if keeps_nothing(state, s, &mut listed).await? {
            empty.push(s.clone());
        }
    }
    if empty.is_empty() {
        return Ok(plan);
    }
    let plan = plan
        .transform_up_with_subqueries(|p| match p {
            LogicalPlan::TableScan(s) if empty.contains(&s) => {
                Ok(Transformed::yes(LogicalPlan::EmptyRelation(EmptyRelation {
                    produce_one_row: false,
                    schema: s.projected_schema.clone(),
                })))
            }
            p => Ok(Transformed::no(p)),
        })?
        .data;
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![Arc::new(PropagateEmptyRelation::new())];
    Optimizer::with_rules(rules).optimize(plan, state, |_, _| {})
}

/// Each table listed so far (by its paths), as a batch of its distinct partition values with
/// their schema (`None`: no partition listed). A table scanned several times is listed and
/// turned into a batch once here (and listed once more by DataFusion only when the planning's
/// cache does not serve it, see `super::listing`).
type Listed = std::collections::HashMap<Vec<String>, Option<Arc<(DFSchema, RecordBatch)>>>;

/// The distinct partition values of `table`'s files, as DataFusion lists and parses them, one row
/// each (`None` when there is none).
async fn partitions(state: &SessionState, table: &ListingTable) -> Result<Option<Arc<(DFSchema, RecordBatch)>>> {
    let cols = &table.options().table_partition_cols;
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    let mut values: BTreeSet<Vec<String>> = BTreeSet::new();
    let ext = &table.options().file_extension;
    for url in table.table_paths() {
        let store = state.runtime_env().object_store(url)?;
        let files: Vec<_> = url.list_prefixed_files(state, store.as_ref(), None, ext).await?.try_collect().await?;
        for f in files.iter().filter(|f| f.size > 0) {
            if let Some(parsed) = parse_partitions_for_path(url, &f.location, names.iter().copied()) {
                if parsed.len() == names.len() {
                    values.insert(parsed.into_iter().map(|v| v.into_owned()).collect());
                }
            }
        }
    }
    if values.is_empty() {
        return Ok(None);
    }
    let schema = DFSchema::from_unqualified_fields(
        cols.iter().map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>().into(),
        Default::default(),
    )?;
    let arrays = cols
        .iter()
        .enumerate()
        .map(|(i, (_, t))| {
            let scalars =
                values.iter().map(|v| ScalarValue::try_from_string(v[i].clone(), t)).collect::<Result<Vec<_>>>()?;
            ScalarValue::iter_to_array(scalars)
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(Arc::clone(schema.inner()), arrays)?;
    Ok(Some(Arc::new((schema, batch))))
}

/// Whether `scan` reads a listing table with partition columns whose partition filters keep
/// none of the partitions its listing holds.
async fn keeps_nothing(state: &SessionState, scan: &TableScan, listed: &mut Listed) -> Result<bool> {
    let Ok(provider) = source_as_provider(&scan.source) else { return Ok(false) };
    let Some(table) = provider.downcast_ref::<ListingTable>() else { return Ok(false) };
    let names: Vec<&str> = table.options().table_partition_cols.iter().map(|(n, _)| n.as_str()).collect();
    if names.is_empty() {
        return Ok(false);
    }
    // The filters DataFusion applies to partitions (`ListingTable::scan_with_args`), without
    // their qualifiers as the physical planner passes them.
    let filters: Vec<Expr> = scan
        .filters
        .iter()
        .map(|f| datafusion::logical_expr::expr_rewriter::unnormalize_col(f.clone()))
        .filter(|f| expr_applicable_for_cols(&names, f))
        .collect();
    let Some(filter) = conjunction(filters) else { return Ok(false) };
    let key: Vec<String> = table.table_paths().iter().map(|u| u.to_string()).collect();
    let listing = match listed.get(&key) {
        Some(l) => l.clone(),
        None => {
            let l = partitions(state, table).await?;
            listed.insert(key, l.clone());
            l
        }
    };
    // Nothing listed: DataFusion plans an empty scan itself, without testing any file.
    let Some(listing) = listing else { return Ok(false) };
    let (schema, batch) = listing.as_ref();
    let expr = datafusion::physical_expr::create_physical_expr(
        &filter,
        schema,
        &datafusion::execution::context::ExecutionProps::new(),
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )?;
    let kept = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    // DataFusion keeps a file when its filter's value is true (`filter_partitioned_file` reads
    // the value, not its validity); so does this.
    Ok(kept.as_boolean_opt().is_some_and(|k| k.values().count_set_bits() == 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::datatypes::Schema;
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{ListingOptions, ListingTableConfig, ListingTableUrl};
    use datafusion::physical_plan::{collect, displayable};
    use datafusion::prelude::SessionContext;

    /// A table `t` (`x`, partitioned by `day`) with one file on each of two days, and an empty
    /// file on a third (not listed by DataFusion, so not a partition either).
    async fn context(dir: &std::path::Path) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        for (day, x) in [("2026-11-01", 1), ("2026-11-02", 2)] {
            std::fs::create_dir_all(dir.join(format!("day={day}"))).unwrap();
            let f = std::fs::File::create(dir.join(format!("day={day}/f.parquet"))).unwrap();
            let mut w = parquet::arrow::ArrowWriter::try_new(f, schema.clone(), None).unwrap();
            w.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![x]))]).unwrap()).unwrap();
            w.close().unwrap();
        }
        std::fs::create_dir_all(dir.join("day=2026-11-03")).unwrap();
        std::fs::File::create(dir.join("day=2026-11-03/empty.parquet")).unwrap();
        let ctx = SessionContext::new();
        let url = ListingTableUrl::parse(format!("{}/", dir.display())).unwrap();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("day".to_string(), DataType::Utf8)]);
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
        ctx.register_table("t", Arc::new(ListingTable::try_new(config).unwrap())).unwrap();
        ctx
    }

    async fn run(ctx: &SessionContext, sql: &str) -> (String, Vec<(i64, String)>) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = crate::lake::listing::create_physical_plan(df).await.unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let mut rows = Vec::new();
        for b in collect(plan, ctx.task_ctx()).await.unwrap() {
            let x = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let d = datafusion::arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            let d = d.as_any().downcast_ref::<StringArray>().unwrap();
            rows.extend((0..b.num_rows()).map(|i| (x.value(i), d.value(i).to_string())));
        }
        rows.sort();
        (text, rows)
    }

    #[tokio::test]
    async fn a_scan_keeping_no_partition_is_planned_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        // The second branch keeps no listed day (the third day's only file is empty): it is
        // gone from the plan, and the result is the first branch's.
        let (plan, rows) = run(
            &ctx,
            "SELECT x, day FROM t WHERE day >= '2026-11-02' \
             UNION ALL SELECT x, day FROM t WHERE (day < '2026-11-01' OR day > '2026-11-02') AND x > 0",
        )
        .await;
        assert_eq!(rows, vec![(2, "2026-11-02".to_string())]);
        assert_eq!(plan.matches("DataSourceExec").count(), 1, "{plan}");
        assert!(!plan.contains("UnionExec"), "{plan}");
        // A scan that keeps a day is left to DataFusion; one that keeps none makes a join empty.
        let (plan, rows) = run(&ctx, "SELECT x, day FROM t WHERE day IN ('2026-11-01', '2026-11-09')").await;
        assert_eq!(rows, vec![(1, "2026-11-01".to_string())]);
        assert_eq!(plan.matches("DataSourceExec").count(), 1, "{plan}");
        let (plan, rows) = run(
            &ctx,
            "SELECT a.x, a.day FROM t AS a JOIN (SELECT x FROM t WHERE day = '2026-11-03') AS b ON a.x = b.x",
        )
        .await;
        assert!(rows.is_empty());
        assert!(!plan.contains("DataSourceExec") && !plan.contains("HashJoinExec"), "{plan}");
        // Filters on other columns than the partitions' do not decide anything here.
        let (_, rows) = run(&ctx, "SELECT x, day FROM t WHERE x = 5 OR day = '2026-11-02'").await;
        assert_eq!(rows, vec![(2, "2026-11-02".to_string())]);
    }
}
