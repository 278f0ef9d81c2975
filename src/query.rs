//! Read-only SQL over a session: rule, hunt and ad-hoc SQL may not change anything.

use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

/// The options that refuse DDL, DML, COPY and SET at planning.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Plans a query read-only.
pub async fn read_only_sql(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    read_only_sql_with(ctx, sql, |_, _| {}).await
}

/// Plans a query read-only, its parsed statement first passed through `rewrite`.
pub async fn read_only_sql_with(
    ctx: &SessionContext,
    sql: &str,
    rewrite: impl FnOnce(&datafusion::execution::SessionState, &mut datafusion::sql::parser::Statement),
) -> Result<DataFrame> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql, &dialect)?;
    rewrite(&state, &mut statement);
    let plan = state.statement_to_plan(statement).await?;
    read_only().verify_plan(&plan)?;
    ctx.execute_logical_plan(plan).await
}

/// What a query read from the lake: summed over its Parquet scans, after the executed plan
/// finished (DataFusion's per-operator metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ScanStats {
    /// Rows decoded from Parquet: rows the scans passed on plus rows their pushed-down filters
    /// dropped (row groups and pages pruned by statistics are not read, so not counted).
    pub rows: u64,
    /// Bytes fetched from the store (column chunks and footers).
    pub bytes: u64,
    /// Files opened (after partition pruning).
    pub files: u64,
    /// The query ran on a cluster (`--engine ballista://`): its scans' metrics stay there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub on_cluster: bool,
    /// Time spent planning (SQL to plan, optimization and physical planning, which lists the
    /// files and reads their footers for statistics), in µs; 0 where not measured. Not serialized:
    /// summaries stay the same from run to run.
    #[serde(skip)]
    pub planning_us: u64,
    /// Where the planning's time went (`--analyze` shows it); zero where not measured.
    #[serde(skip)]
    pub phases: crate::lake::listing::PlanPhases,
}

impl ScanStats {
    /// Sums the scan metrics of an executed plan.
    pub fn of(plan: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> ScanStats {
        let mut s = ScanStats::default();
        let mut stack = vec![plan.clone()];
        while let Some(p) = stack.pop() {
            if p.name() == "DistributedQueryExec" {
                s.on_cluster = true;
            }
            if p.name() == "DataSourceExec" {
                if let Some(m) = p.metrics() {
                    let n = |name: &str| m.sum_by_name(name).map(|v| v.as_usize() as u64).unwrap_or(0);
                    s.rows += m.output_rows().unwrap_or(0) as u64 + n("pushdown_rows_pruned");
                    s.bytes += n("bytes_scanned");
                    s.files += p
                        .downcast_ref::<datafusion::datasource::source::DataSourceExec>()
                        .and_then(|d| {
                            d.data_source().downcast_ref::<datafusion::datasource::physical_plan::FileScanConfig>()
                        })
                        .map(|c| c.file_groups.iter().map(|g| g.len() as u64).sum())
                        .unwrap_or(0);
                }
            }
            stack.extend(p.children().into_iter().cloned());
        }
        s
    }

    pub fn add(&mut self, o: ScanStats) {
        self.rows += o.rows;
        self.bytes += o.bytes;
        self.files += o.files;
        self.on_cluster |= o.on_cluster;
        self.planning_us += o.planning_us;
        self.phases.add(o.phases);
    }
}

impl std::fmt::Display for ScanStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.on_cluster && self.files == 0 {
            return write!(f, "ran on the cluster (scan statistics stay with its executors)");
        }
        write!(f, "read {} rows, {:.1} MB from {} file(s)", self.rows, self.bytes as f64 / 1e6, self.files)
    }
}

/// Executes a planned query to completion: its batches and what it read. A query whose hash join
/// runs out of the memory pool runs again with sort-merge joins, which spill ([`spilling_joins`]).
pub async fn collect_with_stats(df: DataFrame) -> Result<(Vec<arrow::array::RecordBatch>, ScanStats)> {
    match collect_once(df.clone()).await {
        Err(e) if out_of_memory(&e) => collect_once(retry_with_spilling_joins(df)).await,
        r => r,
    }
}

async fn collect_once(df: DataFrame) -> Result<(Vec<arrow::array::RecordBatch>, ScanStats)> {
    let task = std::sync::Arc::new(df.task_ctx());
    let plan = crate::lake::listing::create_physical_plan(df).await?;
    let batches = datafusion::physical_plan::collect(plan.clone(), task).await?;
    Ok((batches, ScanStats::of(&plan)))
}

/// True when a query failed because the memory pool was exhausted.
pub fn out_of_memory(e: &datafusion::error::DataFusionError) -> bool {
    matches!(e.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_))
}

/// Says on stderr that a query runs again, and returns it planned with joins that spill.
pub fn retry_with_spilling_joins(df: DataFrame) -> DataFrame {
    eprintln!("note: a join ran out of the memory pool; running the query again with joins that spill to disk");
    spilling_joins(df)
}

/// The query with options of its own: `f` changes the DataFrame's own copy of the session's
/// options, which optimize and plan it; the session keeps its own. Not rebuilt with
/// `SessionStateBuilder::new_from_existing(..).with_config(..)`: with the session's config
/// (`create_default_catalog_and_schema` on) the build registers a new, empty default catalog into
/// the catalog list the session shares, and every query planned after it finds no table.
pub fn with_own_options<E>(
    df: DataFrame,
    f: impl FnOnce(&mut datafusion::config::ConfigOptions) -> std::result::Result<(), E>,
) -> std::result::Result<DataFrame, E> {
    let (mut state, plan) = df.into_parts();
    f(state.config_mut().options_mut())?;
    Ok(DataFrame::new(state, plan))
}

/// The same query planned with sort-merge joins instead of hash joins. DataFusion 55's hash
/// joins hold their build side in memory and cannot spill; sort-merge joins sort both sides,
/// which spills within the memory pool.
pub fn spilling_joins(df: DataFrame) -> DataFrame {
    let Ok(df) = with_own_options(df, |opts| {
        opts.optimizer.prefer_hash_join = false;
        // Smaller batches: each sort holds less at once before it spills.
        if let Ok(smaller) = datafusion::config::ConfigNonZeroUsize::try_new(opts.execution.batch_size.get().min(1024))
        {
            opts.execution.batch_size = smaller;
        }
        // Several sorts now share the pool: each keeps back less for merging its spill files.
        opts.execution.sort_spill_reservation_bytes /= 4;
        Ok::<(), std::convert::Infallible>(())
    });
    df
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's summed scan statistics sum its queries' planning phases too, field by field.
    #[test]
    fn scan_stats_add_up_with_their_planning_phases() {
        use crate::lake::listing::PlanPhases;
        let phases = |k: u64| PlanPhases {
            sql_us: k,
            optimize_us: 2 * k,
            listing_us: 3 * k,
            footers_us: 4 * k,
            footers: 5 * k,
            physical_us: 6 * k,
            rules_us: 7 * k,
            total_us: 8 * k,
        };
        let one = |k: u64| ScanStats {
            rows: k,
            bytes: 10 * k,
            files: k,
            planning_us: 9 * k,
            phases: phases(k),
            ..Default::default()
        };
        let mut sum = one(1);
        sum.add(one(10));
        assert_eq!(sum, one(11));
    }

    #[tokio::test]
    async fn spilling_joins_plan_sort_merge_joins_with_the_same_result() {
        let ctx = SessionContext::new();
        let sql = "WITH t AS (SELECT value AS k, value % 7 AS v FROM generate_series(1, 20000)) \
                   SELECT count(*) AS n, sum(a.v * b.v) AS s FROM t a JOIN t b ON a.k = b.k";
        let df = read_only_sql(&ctx, sql).await.unwrap();
        let plan = |df: DataFrame| async move {
            let p = df.create_physical_plan().await.unwrap();
            let shown = datafusion::physical_plan::displayable(p.as_ref()).indent(true).to_string();
            shown
        };
        assert!(plan(df.clone()).await.contains("HashJoinExec"));
        let spilling = spilling_joins(df.clone());
        let shown = plan(spilling.clone()).await;
        assert!(shown.contains("SortMergeJoin") && !shown.contains("HashJoinExec"), "{shown}");
        let (a, _) = collect_with_stats(df).await.unwrap();
        let (b, _) = collect_with_stats(spilling).await.unwrap();
        assert_eq!(
            arrow::util::pretty::pretty_format_batches(&a).unwrap().to_string(),
            arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string()
        );
    }

    /// The retry changes its own query only: the session keeps its tables and its settings (a
    /// rebuilt state once replaced the shared default catalog, and the rules planned after a
    /// retry in `wisp run` found no table).
    #[tokio::test]
    async fn a_retry_leaves_the_session_its_tables_and_settings() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE VIEW t AS SELECT value AS k FROM generate_series(1, 100)").await.unwrap();
        let df = read_only_sql(&ctx, "SELECT count(*) FROM t a JOIN t b ON a.k = b.k").await.unwrap();
        let (rows, _) = collect_with_stats(spilling_joins(df)).await.unwrap();
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
        let again = read_only_sql(&ctx, "SELECT count(*) FROM t").await.expect("the session still has its table");
        assert!(again.collect().await.is_ok());
        let opts = ctx.state().config().options().clone();
        assert!(opts.optimizer.prefer_hash_join);
        assert_eq!(opts.execution.batch_size.get(), SessionContext::new().state().config().batch_size());
    }
}
