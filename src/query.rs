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
    ctx.sql_with_options(sql, read_only()).await
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
}

impl ScanStats {
    /// Sums the scan metrics of an executed plan.
    pub fn of(plan: &std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> ScanStats {
        let mut s = ScanStats::default();
        let mut stack = vec![plan.clone()];
        while let Some(p) = stack.pop() {
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
    }
}

impl std::fmt::Display for ScanStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "read {} rows, {:.1} MB from {} file(s)", self.rows, self.bytes as f64 / 1e6, self.files)
    }
}

/// Executes a planned query to completion: its batches and what it read.
pub async fn collect_with_stats(df: DataFrame) -> Result<(Vec<arrow::array::RecordBatch>, ScanStats)> {
    let task = std::sync::Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let batches = datafusion::physical_plan::collect(plan.clone(), task).await?;
    Ok((batches, ScanStats::of(&plan)))
}
