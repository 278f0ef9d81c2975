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
//!
//! The same pass lists each table the plan scans, the tables at once, and lists a table only in
//! the top-level partition folders (days) that some scan of it can keep: a one-hour rule over a
//! lake of months read the folder of every day and the metadata of every file in it (on an object
//! store, a LIST of the whole table), where it needs one folder or two. That listing is left in
//! the planning's own cache (`super::listing`), so DataFusion plans every scan of the table over
//! it: each scan keeps exactly the files it would keep from a listing of the whole table.
//! Then the footers of the files some scan keeps are read into the session's metadata cache side
//! by side on the runtime's threads ([`prefetch_footers`]), where DataFusion reads them one after
//! another on the planning's thread as it plans each scan.

use datafusion::arrow::array::{AsArray, BooleanArray};
use datafusion::arrow::datatypes::Field;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::helpers::{expr_applicable_for_cols, parse_partitions_for_path};
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::datasource::physical_plan::parquet::metadata::{ordering_from_parquet_metadata, DFParquetMetadata};
use datafusion::datasource::{source_as_provider, TableProvider};
use datafusion::execution::cache::cache_manager::CachedFileMetadata;
use datafusion::execution::cache::{SchemaFingerprint, TableScopedPath};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{EmptyRelation, Expr, LogicalPlan, TableScan};
use datafusion::optimizer::propagate_empty_relation::PropagateEmptyRelation;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Marks a session whose logical plans are shipped to be planned elsewhere (a Ballista client,
/// `crate::cluster::connect`): their scans are left for the cluster's planner, which lists the
/// tables where they run (and a plan rewritten here did not survive Ballista's serialization).
#[derive(Debug)]
pub struct Shipped;

/// At most how many footers a planning reads ahead ([`prefetch_footers`]): far below what
/// DataFusion's metadata cache holds (50 MiB; a lake file's footer and page index take tens of
/// KiB decoded), so no footer read ahead is evicted before its scan is planned. A planning over
/// more files (30 days of a large tenant) reads the rest as DataFusion does.
const FOOTERS_AHEAD: usize = 256;

/// How many folders of one table are listed at once.
const LISTINGS_AT_ONCE: usize = 16;

/// Replaces the listing-table scans of `plan` whose partition filters keep no partition of the
/// table's current listing with empty relations, then propagates them (see the module). Returns
/// the plan unchanged when no scan is empty. Lists each table the plan scans, all at once, only
/// in the top-level partitions some scan of it can keep (see [`listing`]).
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
    // Each partitioned listing table and, for each of its scans, the filters DataFusion applies
    // to its partitions.
    let mut tables: HashMap<TableKey, ScannedTable> = HashMap::new();
    let mut of_scan = Vec::with_capacity(scans.len());
    for s in &scans {
        let Some(Partitioned { provider, key, filter }) = partition_filter(s) else {
            of_scan.push(None);
            continue;
        };
        tables.entry(key.clone()).or_insert((provider, Vec::new())).1.push(filter.clone());
        of_scan.push(Some((key, filter)));
    }
    let mut lists = Vec::with_capacity(tables.len());
    for (key, (provider, filters)) in tables {
        lists.push(listed(state, key, provider, filters));
    }
    let t = std::time::Instant::now();
    let listed: HashMap<_, _> = futures::future::try_join_all(lists).await?.into_iter().collect();
    super::listing::PlanPhases::record(|p| p.listing_us += super::listing::micros(t));
    let mut empty = Vec::new();
    // For each table, which of its partitions some scan keeps.
    let mut kept: HashMap<&TableKey, Vec<bool>> = HashMap::new();
    for (s, f) in scans.iter().zip(&of_scan) {
        let Some((key, filter)) = f else { continue };
        // Nothing listed: DataFusion plans an empty scan itself, without testing any file.
        let Some((schema, batch)) = listed.get(key).and_then(|l| l.values.as_ref()) else { continue };
        let table_kept = kept.entry(key).or_insert_with(|| vec![false; batch.num_rows()]);
        let Some(filter) = filter else {
            table_kept.iter_mut().for_each(|k| *k = true);
            continue;
        };
        let keeps = keeps(filter, schema, batch)?;
        if keeps.values().count_set_bits() == 0 {
            empty.push(s.clone());
        }
        for (k, b) in table_kept.iter_mut().zip(keeps.values().iter()) {
            *k |= b;
        }
    }
    if state.config().collect_statistics() {
        let mut files = Vec::new();
        for (key, kept) in &kept {
            let l = &listed[*key];
            let Some(hint) = l.parquet else { continue };
            for ((store, meta), row) in &l.files {
                if kept[*row] {
                    files.push((store.clone(), meta.clone(), hint, l.stats.clone()));
                }
            }
        }
        let (t, n) = (std::time::Instant::now(), files.len().min(FOOTERS_AHEAD) as u64);
        prefetch_footers(state, files).await;
        super::listing::PlanPhases::record(|p| {
            p.footers_us += super::listing::micros(t);
            p.footers += n;
        });
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

/// A listing table's paths, which name it here.
type TableKey = Vec<String>;

/// A listing table and the partition filters of each of its scans.
type ScannedTable = (Arc<dyn TableProvider>, Vec<Option<Expr>>);

/// A scan of a listing table with partition columns.
struct Partitioned {
    provider: Arc<dyn TableProvider>,
    key: TableKey,
    /// The conjunction of the filters DataFusion applies to its partitions (`None`: none).
    filter: Option<Expr>,
}

/// The listing table with partition columns that `scan` reads, its paths, and the conjunction of
/// the filters DataFusion applies to its partitions (`ListingTable::scan_with_args`), without
/// their qualifiers as the physical planner passes them (`None`: no filter, every partition is
/// kept).
fn partition_filter(scan: &TableScan) -> Option<Partitioned> {
    let provider = source_as_provider(&scan.source).ok()?;
    let table = provider.downcast_ref::<ListingTable>()?;
    let key: Vec<String> = table.table_paths().iter().map(|u| u.to_string()).collect();
    let names: Vec<&str> = table.options().table_partition_cols.iter().map(|(n, _)| n.as_str()).collect();
    if names.is_empty() {
        return None;
    }
    let filters: Vec<Expr> = scan
        .filters
        .iter()
        .map(|f| datafusion::logical_expr::expr_rewriter::unnormalize_col(f.clone()))
        .filter(|f| expr_applicable_for_cols(&names, f))
        .collect();
    Some(Partitioned { provider: provider.clone(), key, filter: conjunction(filters) })
}

/// Which rows of `batch` (partition values) `filter` keeps: those where it is true, as
/// `filter_partitioned_file` reads it (the value, not its validity); all of them should it not
/// be a boolean (never pruned on a doubt).
fn keeps(filter: &Expr, schema: &DFSchema, batch: &RecordBatch) -> Result<BooleanArray> {
    let expr = datafusion::physical_expr::create_physical_expr(
        filter,
        schema,
        &datafusion::execution::context::ExecutionProps::new(),
        &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(),
    )?;
    let kept = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(kept.as_boolean_opt().cloned().unwrap_or_else(|| BooleanArray::from(vec![true; batch.num_rows()])))
}

/// A batch of one row per distinct value of `values`, typed as `cols` (`None` when a value does
/// not parse as its column's type).
fn batch_of(
    cols: &[(String, datafusion::arrow::datatypes::DataType)],
    values: &BTreeSet<Vec<String>>,
) -> Result<Option<(DFSchema, RecordBatch)>> {
    let schema = DFSchema::from_unqualified_fields(
        cols.iter().map(|(n, t)| Field::new(n, t.clone(), true)).collect::<Vec<_>>().into(),
        Default::default(),
    )?;
    let mut arrays = Vec::with_capacity(cols.len());
    for (i, (_, t)) in cols.iter().enumerate() {
        let Ok(scalars) =
            values.iter().map(|v| ScalarValue::try_from_string(v[i].clone(), t)).collect::<Result<Vec<_>>>()
        else {
            return Ok(None);
        };
        arrays.push(ScalarValue::iter_to_array(scalars)?);
    }
    let batch = RecordBatch::try_new(Arc::clone(schema.inner()), arrays)?;
    Ok(Some((schema, batch)))
}

/// A file and the store that holds it.
type StoredFile = (Arc<dyn ObjectStore>, ObjectMeta);

/// A table as this planning lists it.
#[derive(Default)]
struct Listing {
    /// Its distinct partition values, one row each (`None`: no partition listed).
    values: Option<(DFSchema, RecordBatch)>,
    /// Its files (those DataFusion reads: not empty, their partitions parsed), each with its
    /// store and the row of its partition values.
    files: Vec<(StoredFile, usize)>,
    /// When its files are Parquet: the size of their footers to read at once (the format's hint).
    parquet: Option<Option<usize>>,
    /// Where the statistics DataFusion computes for its files are cached, when it is one table.
    stats: Option<Arc<StatsKey>>,
}

/// What a listing table's cached file statistics are keyed and checked by: its name as its files
/// carry it, its file schema (the table's columns without the partition columns) and that
/// schema's fingerprint (`ListingTable` computes the same from the same columns).
struct StatsKey {
    table: Option<datafusion::common::TableReference>,
    file_schema: datafusion::arrow::datatypes::SchemaRef,
    fingerprint: Arc<SchemaFingerprint>,
}

impl StatsKey {
    fn of(table: &ListingTable) -> Option<Arc<StatsKey>> {
        let [url] = table.table_paths().as_slice() else { return None };
        let schema = table.schema();
        let n = schema.fields().len().checked_sub(table.options().table_partition_cols.len())?;
        let file_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(schema.fields()[..n].to_vec()));
        let fingerprint = Arc::new(SchemaFingerprint::from_schema(&file_schema));
        Some(Arc::new(StatsKey { table: url.get_table_ref().clone(), file_schema, fingerprint }))
    }
}

/// [`partitions`] of the listing table `provider`, under `key`.
async fn listed(
    state: &SessionState,
    key: Vec<String>,
    provider: Arc<dyn TableProvider>,
    filters: Vec<Option<Expr>>,
) -> Result<(Vec<String>, Listing)> {
    let Some(table) = provider.downcast_ref::<ListingTable>() else { return Ok((key, Listing::default())) };
    Ok((key, partitions(state, table, &filters).await?))
}

/// `table`'s files and their distinct partition values, as DataFusion lists and parses them,
/// listing the table as [`listing`] does for the scans whose partition filters are `filters`.
async fn partitions(state: &SessionState, table: &ListingTable, filters: &[Option<Expr>]) -> Result<Listing> {
    let cols = &table.options().table_partition_cols;
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    let mut files = Vec::new();
    let ext = &table.options().file_extension;
    for url in table.table_paths() {
        let store = state.runtime_env().object_store(url)?;
        listing(state, url, store.as_ref(), &cols[0], filters).await?;
        let listed: Vec<_> = url.list_prefixed_files(state, store.as_ref(), None, ext).await?.try_collect().await?;
        for f in listed.into_iter().filter(|f| f.size > 0) {
            if let Some(parsed) = parse_partitions_for_path(url, &f.location, names.iter().copied()) {
                if parsed.len() == names.len() {
                    let v: Vec<String> = parsed.into_iter().map(|v| v.into_owned()).collect();
                    files.push(((store.clone(), f), v));
                }
            }
        }
    }
    let values: BTreeSet<Vec<String>> = files.iter().map(|(_, v)| v.clone()).collect();
    let parquet = table.options().format.downcast_ref::<ParquetFormat>().map(|f| f.metadata_size_hint());
    if values.is_empty() {
        return Ok(Listing { parquet, ..Default::default() });
    }
    let Some(batch) = batch_of(cols, &values)? else { return Ok(Listing { parquet, ..Default::default() }) };
    let stats = StatsKey::of(table);
    let row: HashMap<&Vec<String>, usize> = values.iter().enumerate().map(|(i, v)| (v, i)).collect();
    let files = files.into_iter().map(|(f, v)| (f, row[&v])).collect();
    Ok(Listing { values: Some(batch), files, parquet, stats })
}

/// Reads the footers of `files` (of Parquet tables) into the session's metadata cache, on the
/// runtime's threads, before the scans are planned: DataFusion reads each file's footer when it
/// plans a scan (for the file's statistics), one after another on the planning's thread; here
/// they are read side by side, and the scans find them in the cache (the same reading: the
/// table's size hint, the cache DataFusion checks). The file's statistics and ordering are
/// computed there too, as DataFusion computes them (`ParquetFormat::infer_stats_and_ordering`),
/// into the session's file statistics cache, where the table's scans look first (the tables of
/// `crate::session` are made with it). A footer that fails to read is left for DataFusion to
/// read and report. Only the files some scan keeps, at most [`FOOTERS_AHEAD`]. The footer
/// alone, without the page index DataFusion would read with it: the statistics need none, and
/// a scan that opens the file reads it then — most files of a short window's days are pruned by
/// their statistics and never opened (a medium lake's one-hour windows: 1–7 ms less CPU).
async fn prefetch_footers(state: &SessionState, files: Vec<FileAhead>) {
    let cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    let stats_cache = state.runtime_env().cache_manager.get_file_statistic_cache();
    let tasks = files.into_iter().take(FOOTERS_AHEAD).map(|(store, meta, hint, key)| {
        let (cache, stats_cache) = (cache.clone(), stats_cache.clone());
        tokio::spawn(async move {
            let Ok(footer) = DFParquetMetadata::new(store.as_ref(), &meta)
                .with_metadata_size_hint(hint)
                .with_page_index_policy(Some(parquet::file::metadata::PageIndexPolicy::Skip))
                .with_file_metadata_cache(Some(cache))
                .fetch_metadata()
                .await
            else {
                return;
            };
            let (Some(stats_cache), Some(key)) = (stats_cache, key) else { return };
            let path = TableScopedPath { table: key.table.clone(), path: meta.location.clone() };
            if stats_cache.get(&path).is_some_and(|c| c.is_valid_for(&meta, &key.fingerprint)) {
                return;
            }
            let (Ok(stats), Ok(ordering)) = (
                DFParquetMetadata::statistics_from_parquet_metadata(&footer, &key.file_schema),
                ordering_from_parquet_metadata(&footer, &key.file_schema),
            ) else {
                return;
            };
            stats_cache.put(&path, CachedFileMetadata::new(meta, key.fingerprint.clone(), Arc::new(stats), ordering));
        })
    });
    futures::future::join_all(tasks).await;
}

/// A file whose footer is read ahead: its store and metadata, the footer size hint, and where its
/// statistics are cached.
type FileAhead = (Arc<dyn ObjectStore>, ObjectMeta, Option<usize>, Option<Arc<StatsKey>>);

/// Lists the table at `url` for this planning in the top-level partitions (folders of its first
/// partition column, `first`) that some scan can keep, and leaves that listing in the planning's
/// cache (`super::listing`), where DataFusion's scans of the table find it. A scan keeps a folder
/// when the conjuncts of its partition filter that test `first` alone are true of its value; as
/// its whole filter implies them, no scan keeps a file outside those folders, so each scan is
/// planned over the same files as from a listing of the whole table. A folder that does not parse
/// as `first` holds no file DataFusion reads; files beside the folders are listed as they are.
/// Leaves the listing to DataFusion (the whole table) when a scan has no such conjunct, when the
/// session keeps no listings, or when a folder's value does not parse as `first`'s type (where
/// DataFusion's own listing reports the error).
async fn listing(
    state: &SessionState,
    url: &ListingTableUrl,
    store: &dyn ObjectStore,
    first: &(String, datafusion::arrow::datatypes::DataType),
    filters: &[Option<Expr>],
) -> Result<()> {
    let Some(cache) = state.runtime_env().cache_manager.get_list_files_cache() else { return Ok(()) };
    // Only wisp's cache serves a listing to the planning that made it alone; another would keep
    // this partial one for other queries.
    if cache.name() != super::listing::CACHE_NAME || !url.is_collection() || super::listing::current().is_none() {
        return Ok(());
    }
    let key = TableScopedPath { table: url.get_table_ref().clone(), path: url.prefix().clone() };
    if cache.contains_key(&key) {
        return Ok(());
    }
    let names = [first.0.as_str()];
    let mut tests = Vec::with_capacity(filters.len());
    for f in filters {
        let own: Vec<Expr> =
            f.iter().flat_map(split_conjunction).filter(|c| expr_applicable_for_cols(&names, c)).cloned().collect();
        match conjunction(own) {
            Some(t) => tests.push(t),
            None => return Ok(()),
        }
    }
    let top = store.list_with_delimiter(Some(url.prefix())).await?;
    let mut folders = Vec::with_capacity(top.common_prefixes.len());
    for p in top.common_prefixes {
        let probe = p.clone().join("_");
        let Some(v) = parse_partitions_for_path(url, &probe, names) else { continue };
        let [v] = v.as_slice() else { continue };
        let v = vec![v.to_string()];
        folders.push((p, v));
    }
    let values: BTreeSet<Vec<String>> = folders.iter().map(|(_, v)| v.clone()).collect();
    let mut kept = BTreeSet::new();
    if !values.is_empty() {
        let Some((schema, batch)) = batch_of(std::slice::from_ref(first), &values)? else { return Ok(()) };
        let mut keep = vec![false; batch.num_rows()];
        for t in &tests {
            for (k, b) in keep.iter_mut().zip(keeps(t, &schema, &batch)?.values().iter()) {
                *k |= b;
            }
        }
        kept.extend(values.iter().zip(keep).filter(|(_, k)| *k).map(|(v, _)| v));
    }
    let lists: Vec<_> = folders
        .iter()
        .filter(|(_, v)| kept.contains(v))
        .map(|(p, _)| store.list(Some(p)).try_collect::<Vec<ObjectMeta>>())
        .collect();
    let mut files = top.objects;
    for l in futures::stream::iter(lists).buffered(LISTINGS_AT_ONCE).try_collect::<Vec<_>>().await? {
        files.extend(l);
    }
    cache.put(&key, files.into());
    Ok(())
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
        // wisp's sessions' caches: each planning's listings, narrowed to the days it reads.
        let rt = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_cache_manager(crate::session::caches())
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(datafusion::prelude::SessionConfig::new(), rt);
        let url = ListingTableUrl::parse(format!("{}/", dir.display())).unwrap();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("day".to_string(), DataType::Utf8)]);
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
        // As wisp's tables: file statistics kept in the session's cache.
        let table = ListingTable::try_new(config)
            .unwrap()
            .with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache());
        ctx.register_table("t", Arc::new(table)).unwrap();
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

    /// The files each table is listed with when `sql` is planned, by table folder.
    async fn listed(ctx: &SessionContext, sql: &str) -> Vec<(String, usize)> {
        let df = ctx.sql(sql).await.unwrap();
        let (state, plan) = df.into_parts();
        crate::lake::listing::planning(async {
            let plan = state.optimize(&plan).unwrap();
            prune_empty_scans(&state, plan).await.unwrap();
            let cache = state.runtime_env().cache_manager.get_list_files_cache().unwrap();
            let mut l: Vec<(String, usize)> =
                cache.list_entries().into_iter().map(|(k, v)| (k.path.to_string(), v.value.files.len())).collect();
            l.sort();
            l
        })
        .await
    }

    #[tokio::test]
    async fn a_table_is_listed_only_in_the_days_its_scans_can_keep() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        let count = |sql: &'static str| {
            let ctx = ctx.clone();
            async move { listed(&ctx, sql).await.into_iter().map(|(_, n)| n).sum::<usize>() }
        };
        // One day, a range, two scans of two days: only their folders.
        assert_eq!(count("SELECT x FROM t WHERE day = '2026-11-02'").await, 1);
        assert_eq!(count("SELECT x FROM t WHERE day >= '2026-11-02' AND x > 0").await, 2, "02 and 03 (its empty file)");
        assert_eq!(
            count("SELECT x FROM t WHERE day = '2026-11-01' UNION ALL SELECT x FROM t WHERE day = '2026-11-02'").await,
            2
        );
        // A scan whose filter does not test the day alone needs every folder.
        assert_eq!(count("SELECT x FROM t WHERE day = '2026-11-01' OR x = 2").await, 3);
        assert_eq!(count("SELECT x FROM t WHERE day = '2026-11-01' UNION ALL SELECT x FROM t WHERE x = 2").await, 3);
        // Only within the planning: nothing is kept for the next query.
        let cache = ctx.runtime_env().cache_manager.get_list_files_cache().unwrap();
        assert_eq!(cache.get(&TableScopedPath { table: None, path: object_store::path::Path::from("x") }), None);
        assert!(cache.list_entries().is_empty());
        // A table with no folder yet (nothing ingested) is listed as empty.
        let empty = tempfile::tempdir().unwrap();
        let url = ListingTableUrl::parse(format!("{}/", empty.path().display())).unwrap();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("day".to_string(), DataType::Utf8)]);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
        ctx.register_table("e", Arc::new(ListingTable::try_new(config).unwrap())).unwrap();
        let (_, rows) = run(
            &ctx,
            "SELECT x, day FROM e WHERE day = '2026-11-01' UNION ALL SELECT x, day FROM t WHERE day = '2026-11-01'",
        )
        .await;
        assert_eq!(rows, vec![(1, "2026-11-01".to_string())]);
        // And the rows are those of the whole listing.
        let (_, rows) = run(
            &ctx,
            "SELECT x, day FROM t WHERE day = '2026-11-01' UNION ALL SELECT x, day FROM t WHERE day >= '2026-11-02'",
        )
        .await;
        assert_eq!(rows, vec![(1, "2026-11-01".to_string()), (2, "2026-11-02".to_string())]);
    }

    /// A planning's phases count the footers it read ahead (the files some scan keeps, not
    /// the empty one) and nest: the optimizer rules inside the physical planning.
    #[tokio::test]
    async fn a_planning_reports_the_footers_it_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        for (sql, footers) in [
            ("SELECT x FROM t WHERE day = '2026-11-02'", 1),
            ("SELECT x FROM t", 2),
            ("SELECT x FROM t WHERE day = '2026-12-01'", 0),
        ] {
            let df = ctx.sql(sql).await.unwrap();
            let (_, phases) = crate::lake::listing::create_physical_plan_timed(df).await.unwrap();
            assert_eq!(phases.footers, footers, "{sql}: {phases:?}");
            assert!(phases.rules_us <= phases.physical_us, "{phases:?}");
            assert_eq!(phases.sql_us, 0, "measured by the caller");
        }
        // Outside a planning nothing is recorded (and nothing fails).
        crate::lake::listing::PlanPhases::record(|p| p.footers += 1);
    }

    #[tokio::test]
    async fn the_footers_of_the_files_a_scan_keeps_are_read_before_it_is_planned() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        let cached = || {
            let mut l: Vec<String> = ctx
                .runtime_env()
                .cache_manager
                .get_file_metadata_cache()
                .list_entries()
                .into_keys()
                .map(|p| p.to_string())
                .collect();
            l.sort();
            l
        };
        assert!(cached().is_empty());
        let df = ctx.sql("SELECT x FROM t WHERE day = '2026-11-02'").await.unwrap();
        let (state, plan) = df.into_parts();
        crate::lake::listing::planning(async {
            let plan = state.optimize(&plan).unwrap();
            prune_empty_scans(&state, plan).await.unwrap();
        })
        .await;
        let l = cached();
        assert_eq!(l.len(), 1, "{l:?}");
        assert!(l[0].ends_with("day=2026-11-02/f.parquet"), "{l:?}");
        // The footer alone: the page index is read when a scan opens the file and prunes pages
        // with it (most files listed for a short window are pruned by their statistics at
        // planning, never opened).
        let page_index = || {
            use datafusion::datasource::physical_plan::parquet::metadata::CachedParquetMetaData;
            let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
            let key =
                cache.list_entries().into_keys().find(|p| p.as_ref().ends_with("day=2026-11-02/f.parquet")).unwrap();
            let entry = cache.get(&key).unwrap();
            let footer = entry
                .file_metadata
                .as_any()
                .downcast_ref::<CachedParquetMetaData>()
                .unwrap()
                .parquet_metadata()
                .clone();
            footer.column_index().is_some()
        };
        assert!(!page_index());
        let (_, rows) = run(&ctx, "SELECT x, day FROM t WHERE day = '2026-11-02' AND x > 0").await;
        assert_eq!(rows, vec![(2, "2026-11-02".to_string())]);

        // Its statistics and ordering too, as DataFusion computes them, where its scans look.
        let stats = ctx.runtime_env().cache_manager.get_file_statistic_cache().unwrap();
        let entries = stats.list_entries();
        assert_eq!(entries.len(), 1);
        let (path, _) = entries.into_iter().next().unwrap();
        let entry = stats.get(&path).unwrap();
        assert!(path.path.as_ref().ends_with("day=2026-11-02/f.parquet"), "{path:?}");
        let table = ctx.table_provider("t").await.unwrap();
        let file_schema = Arc::new(Schema::new(vec![table.schema().field(0).clone()]));
        let store = ctx
            .runtime_env()
            .object_store(ListingTableUrl::parse(format!("{}/", dir.path().display())).unwrap())
            .unwrap();
        use datafusion::datasource::file_format::FileFormat;
        let own = ParquetFormat::default()
            .infer_stats_and_ordering(&ctx.state(), &store, file_schema, &entry.meta)
            .await
            .unwrap();
        assert_eq!(*entry.statistics, own.statistics);
        assert_eq!(entry.ordering, own.ordering);
        // DataFusion's scan takes them from there: a cached row count it could not have read.
        let mut marked = (*entry.statistics).clone();
        marked.num_rows = datafusion::common::stats::Precision::Exact(7);
        stats.put(
            &path,
            CachedFileMetadata::new(entry.meta.clone(), entry.schema_fingerprint.clone(), Arc::new(marked), None),
        );
        let df = ctx.sql("SELECT x FROM t WHERE day = '2026-11-02'").await.unwrap();
        let plan = crate::lake::listing::create_physical_plan(df).await.unwrap();
        let mut rows = Vec::new();
        datafusion::common::tree_node::TreeNode::apply(&plan, |node| {
            use datafusion::datasource::physical_plan::FileScanConfig;
            use datafusion::datasource::source::DataSourceExec;
            if let Some(config) =
                node.downcast_ref::<DataSourceExec>().and_then(|e| e.data_source().downcast_ref::<FileScanConfig>())
            {
                rows.extend(
                    config.file_groups.iter().flat_map(|g| g.iter()).map(|f| f.statistics.as_ref().map(|s| s.num_rows)),
                );
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert_eq!(rows, vec![Some(datafusion::common::stats::Precision::Exact(7))]);
    }
}
