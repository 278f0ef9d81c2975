//! The one place a `SessionContext` is built for a lake: every table with its explicit schema and
//! `day` partition column, the UDFs, watchlists (as functions and as tables), the
//! `sp_risk_events_latest` view, a bounded memory pool so operators spill, and `target_partitions`
//! = cores. Every command opens the lake through [`open`].

use crate::lake::{Lake, Table, ALL_TABLES};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{col, SessionConfig, SessionContext};
use std::path::PathBuf;
use std::sync::Arc;
use wisp_udfs::{UdfConfig, Udfs};

/// Opening a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    #[error(transparent)]
    Udf(#[from] wisp_udfs::UdfError),
    #[error("building the session: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("{0}")]
    Engine(String),
}

/// Watchlists registered empty when not configured.
pub const DEFAULT_WATCHLISTS: [&str; 1] = ["NetworkAllowlist"];

/// How to open a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub udfs: UdfConfig,
    /// Memory pool size in bytes; operators spill beyond it.
    pub memory_limit: usize,
    pub target_partitions: usize,
    pub spill_dir: Option<PathBuf>,
    /// `ballista://HOST:PORT`: plan here, execute on an Apache Ballista cluster (`cluster`).
    pub engine: Option<String>,
    /// The SQL the session is opened to run, when known (a hunt's or a detection's rules), in
    /// lower case ([`SessionOptions::for_sql`]): only the views it names are registered —
    /// planning each rollup's views and listing the files its fingerprints need is most of
    /// opening a session. None: every view (a shell, `wisp sql`).
    pub views_for: Option<Vec<String>>,
}

impl SessionOptions {
    /// These options for running `sql` only (lower-cased once here: unquoted identifiers are
    /// folded to lower case, so a view is named in any case).
    pub fn for_sql<'a>(self, sql: impl IntoIterator<Item = &'a str>) -> Self {
        SessionOptions { views_for: Some(sql.into_iter().map(str::to_ascii_lowercase).collect()), ..self }
    }

    /// Whether the session registers the view `name`: always without `views_for`, else when some
    /// of its SQL names it.
    pub fn wants_view(&self, name: &str) -> bool {
        self.views_for.as_ref().is_none_or(|texts| texts.iter().any(|t| t.contains(name)))
    }
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            udfs: UdfConfig::default(),
            memory_limit: 2560 << 20,
            target_partitions: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            spill_dir: None,
            engine: None,
            views_for: None,
        }
    }
}

/// Session configuration any engine can reuse (wisp, Ballista client/scheduler).
pub fn session_config(target_partitions: usize) -> SessionConfig {
    let mut cfg = SessionConfig::new()
        .with_target_partitions(target_partitions.max(1))
        .with_information_schema(true)
        .with_collect_statistics(true);
    cfg.options_mut().execution.parquet.pushdown_filters = true;
    cfg.options_mut().execution.parquet.reorder_filters = true;
    // `VARCHAR`/`TEXT` in SQL mean `Utf8`, the type the lake declares, not `Utf8View`: a view
    // column sorted or gathered keeps pointing into every batch it came from, and DataFusion
    // charges each batch for all those buffers (a 30-day pivot's 11,284 rows were charged 331 MB
    // and ran out of the pool; see `lake::views` for the same effect at the scan).
    cfg.options_mut().sql_parser.map_string_types_to_utf8view = false;
    cfg
}

/// The environment variable of DataFusion options set for every session, for measuring their
/// effect: `key=value` pairs separated by commas, keys as DataFusion names them
/// (`datafusion.execution.batch_size=4096`).
pub const OPTIONS_ENV: &str = "WISP_DATAFUSION_OPTIONS";

/// Sets the options [`OPTIONS_ENV`] names; an unknown key or a bad value is an error naming it.
fn set_options_from_env(cfg: &mut SessionConfig) -> Result<(), SessionError> {
    let Some(text) = std::env::var_os(OPTIONS_ENV) else { return Ok(()) };
    let text = text.to_string_lossy();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: String| SessionError::Engine(format!("{OPTIONS_ENV}: '{pair}': {why}"));
        let (key, value) = pair.split_once('=').ok_or_else(|| bad("expected key=value".into()))?;
        cfg.options_mut().set(key.trim(), value.trim()).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// The caches of every runtime that plans lake queries: listings only within one planning
/// (`lake::listing`). DataFusion keeps a table's listing for the runtime's life by default, so a
/// shell, the rules of one `wisp run` tick (which share a runtime) or a cluster's scheduler would
/// not see files ingested since their first query, and after a compaction would name files no
/// longer there. The footer and statistics caches stay: they check each file's size and time.
pub fn caches() -> CacheManagerConfig {
    CacheManagerConfig::default()
        .with_list_files_cache(Some(Arc::new(crate::lake::listing::PlanningListCache::default())))
        // Any limit above zero turns the cache on; this one holds a planning's listings only.
        .with_list_files_cache_limit(1 << 20)
}

/// The runtime of a session: the bounded memory pool (operators spill beyond it) and the spill
/// folder. Sessions that run concurrently share one, so together they stay within the pool.
pub fn runtime(opts: &SessionOptions) -> Result<Arc<RuntimeEnv>, SessionError> {
    let mut rt =
        RuntimeEnvBuilder::new().with_memory_pool(crate::memory::pool(opts.memory_limit)).with_cache_manager(caches());
    if let Some(dir) = &opts.spill_dir {
        rt = rt.with_temp_file_path(dir.clone());
    }
    Ok(Arc::new(rt.build()?))
}

/// Opens a session over a lake.
pub async fn open(lake: &Lake, opts: &SessionOptions) -> Result<SessionContext, SessionError> {
    open_on(lake, opts, runtime(opts)?).await
}

/// `n` sessions over a lake sharing one runtime (one memory pool): for running rules
/// concurrently, each in its own session (a stateful rule registers its `terms_state` table in
/// the session it runs in).
pub async fn open_many(lake: &Lake, opts: &SessionOptions, n: usize) -> Result<Vec<SessionContext>, SessionError> {
    let rt = runtime(opts)?;
    let mut out = Vec::with_capacity(n.max(1));
    for _ in 0..n.max(1) {
        out.push(open_on(lake, opts, rt.clone()).await?);
    }
    Ok(out)
}

/// Opens a session over a lake on a given runtime.
pub async fn open_on(lake: &Lake, opts: &SessionOptions, rt: Arc<RuntimeEnv>) -> Result<SessionContext, SessionError> {
    let mut cfg = session_config(opts.target_partitions);
    set_options_from_env(&mut cfg)?;
    // A sort keeps this much back for merging its spill files; with a small pool, keep it small.
    cfg.options_mut().execution.sort_spill_reservation_bytes = (opts.memory_limit / 8).min(10 << 20);
    // DataFusion's physical optimizer rules, then wisp's: scans over many days skip the time test
    // on the days inside the range (`lake::days`), and scans decode strings as views and hand
    // `Utf8` up (`lake::views`): one rule, one walk. Each rule timed for `--analyze`
    // (`lake::listing::PlanPhases`).
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    rules.push(Arc::new(crate::lake::LakeScans));
    let timed = rules.into_iter().map(|r| Arc::new(crate::lake::listing::TimedRule(r)) as _).collect();
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(cfg)
        .with_runtime_env(rt)
        .with_default_features()
        .with_physical_optimizer_rules(timed)
        .build();
    let ctx = SessionContext::new_with_state(state);
    if let Some((base, store)) = &lake.remote {
        ctx.register_object_store(base, store.clone());
    } else {
        // Small reads of local files on the calling thread (`lake::local`).
        let url = datafusion::execution::object_store::ObjectStoreUrl::local_filesystem();
        ctx.register_object_store(url.as_ref(), Arc::new(crate::lake::local::LocalStore::default()));
    }
    register_tables(&ctx, lake)?;
    // Watchlists: those given on the command line, then every CSV under <lake>/_watchlists/.
    // A remote lake's are fetched (once per version, `lake::fetch`).
    let mut cfg = opts.udfs.clone();
    let mut found: Vec<PathBuf> = match &lake.local_root {
        Some(root) => std::fs::read_dir(root.join("_watchlists"))
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")))
                    .collect()
            })
            .unwrap_or_default(),
        None => {
            let prefix = object_store::path::Path::from("_watchlists");
            crate::lake::fetch::copies_under(lake.store.clone(), prefix, format!("{}_watchlists", lake.url), ".csv")
                .await?
        }
    };
    found.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    for p in found.into_iter().rev() {
        let name = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if !cfg.watchlists.iter().any(|(n, _)| *n == name) {
            cfg.watchlists.insert(0, (name, p));
        }
    }
    let udfs = load_udfs(&cfg)?;
    register_udfs(&ctx, &udfs)?;
    register_watchlist_tables(&ctx, &udfs)?;
    // Rollups: stored summaries where still current, the events themselves elsewhere.
    crate::rollups::register(&ctx, lake, opts).await?;
    if opts.wants_view(crate::version_days::NAME) {
        crate::version_days::register(&ctx, lake).await?;
    }
    if opts.wants_view("sp_risk_events_latest") {
        ctx.sql(
            "CREATE VIEW sp_risk_events_latest AS \
             SELECT * EXCLUDE (rn) FROM ( \
               SELECT *, row_number() OVER (PARTITION BY id, service_principal_id \
                                            ORDER BY last_updated DESC NULLS LAST, ts DESC) AS rn \
               FROM sp_risk_events) WHERE rn = 1",
        )
        .await?;
    }
    match &opts.engine {
        None => Ok(ctx),
        #[cfg(feature = "cluster")]
        Some(url) => {
            let ctx = crate::cluster::connect(ctx, url, &udfs)?;
            crate::cluster::check_loaded(&ctx, &udfs).await?;
            Ok(ctx)
        }
        #[cfg(not(feature = "cluster"))]
        Some(url) => Err(SessionError::Engine(format!(
            "--engine {url}: this wisp was built without the `cluster` feature (rebuild with default features)"
        ))),
    }
}

/// Loads databases and watchlists; the watchlists the built-in rules name ([`DEFAULT_WATCHLISTS`])
/// exist even when not configured (empty), so rules plan and run everywhere — in a wisp session
/// and on a cluster's scheduler and executors alike.
pub fn load_udfs(cfg: &UdfConfig) -> Result<Udfs, SessionError> {
    let mut udfs = Udfs::load(cfg)?;
    for name in DEFAULT_WATCHLISTS {
        if !udfs.watchlists.iter().any(|w| w.name == name) {
            let mut lists = udfs.watchlists.clone();
            lists.push(wisp_udfs::Watchlist {
                name: name.to_string(),
                path: PathBuf::new(),
                entries: Vec::new(),
                set: Default::default(),
            });
            udfs = Udfs::from_parts(udfs.asn.clone(), udfs.geo.clone(), lists);
        }
    }
    Ok(udfs)
}

/// Registers every function of `udfs` into a session.
pub fn register_udfs(ctx: &SessionContext, udfs: &Udfs) -> Result<(), SessionError> {
    for f in udfs.functions() {
        ctx.register_udf(f);
    }
    for f in udfs.aggregates() {
        ctx.register_udaf(f);
    }
    Ok(())
}

/// Registers the lake's tables with explicit schemas (an empty lake or day is not an error).
pub fn register_tables(ctx: &SessionContext, lake: &Lake) -> Result<(), SessionError> {
    for t in ALL_TABLES {
        if let Some(root) = &lake.local_root {
            let _ = std::fs::create_dir_all(root.join(t.name()));
        }
        let table = listing_table(lake, t)?.with_cache(ctx.runtime_env().cache_manager.get_file_statistic_cache());
        ctx.register_table(t.name(), Arc::new(table))?;
    }
    let state = lake.local_root.as_ref().map(|root| root.join("_state"));
    register_alerts(ctx, state.as_deref(), &format!("{}_state/", lake.url))?;
    Ok(())
}

/// Registers the scheduler's alert store of the state folder at `dir` (URL `url`, ending in `/`)
/// as tables `alerts` (every alert sent) and `alerts_suppressed` (the repeats suppression held
/// back, with `suppressed_by`): hunts and later rules can read earlier alerts.
pub fn register_alerts(ctx: &SessionContext, dir: Option<&std::path::Path>, url: &str) -> Result<(), SessionError> {
    use crate::lake::schema::{stored_alerts_schema, suppressed_alerts_schema};
    for (name, folder, schema) in
        [("alerts", "alerts", stored_alerts_schema()), ("alerts_suppressed", "suppressed", suppressed_alerts_schema())]
    {
        if let Some(dir) = dir {
            let _ = std::fs::create_dir_all(dir.join(folder));
        }
        let url = ListingTableUrl::parse(format!("{url}{folder}/"))?;
        let options = ListingOptions::new(Arc::new(parquet_format()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("day".to_string(), DataType::Utf8)]);
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema);
        let _ = ctx.deregister_table(name)?;
        ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    }
    Ok(())
}

/// The lake's Parquet format for queries: a file's footer is read with a tail of
/// [`FOOTER_HINT`] bytes.
pub fn parquet_format() -> ParquetFormat {
    ParquetFormat::default().with_metadata_size_hint(Some(FOOTER_HINT))
}

/// How many bytes at a file's end are read at first for its footer (and the page index before
/// it). DataFusion reads 512 KiB; the lake's footers are 3–25 KiB, so a short window over 14
/// files allocated and copied 7 MB to use 0.3 (a longer footer is read in a second request).
pub const FOOTER_HINT: usize = 64 << 10;

pub fn listing_table(lake: &Lake, t: Table) -> Result<ListingTable, DataFusionError> {
    let url = ListingTableUrl::parse(lake.table_url(t))?;
    let options = ListingOptions::new(Arc::new(parquet_format()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![("day".to_string(), DataType::Utf8)])
        .with_file_sort_order(vec![vec![col("ts").sort(true, false)]]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(t.schema())
        .with_expr_adapter_factory(Arc::new(crate::lake::days::FoldingAdapterFactory));
    ListingTable::try_new(config)
}

/// Every watchlist as a table (`ip_or_range`, `range_start`, `range_end`, `line`): a view over its
/// rows as literal values, so the plan carries them — a Ballista cluster runs it unchanged (an
/// in-memory table cannot travel to executors).
fn register_watchlist_tables(ctx: &SessionContext, udfs: &Udfs) -> Result<(), SessionError> {
    use datafusion::catalog::view::ViewTable;
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::{lit, EmptyRelation, LogicalPlan, LogicalPlanBuilder};
    let schema = Arc::new(Schema::new(vec![
        Field::new("ip_or_range", DataType::Utf8, false),
        Field::new("range_start", DataType::Utf8, false),
        Field::new("range_end", DataType::Utf8, false),
        Field::new("line", DataType::UInt64, false),
    ]));
    for w in &udfs.watchlists {
        let mut rows = Vec::new();
        for (line, e) in &w.entries {
            let r = wisp_udfs::ranges::parse_range(e).expect("validated at load");
            rows.push(vec![
                lit(e.clone()),
                lit(wisp_udfs::ip::to_ipaddr(r.lo).to_string()),
                lit(wisp_udfs::ip::to_ipaddr(r.hi).to_string()),
                lit(*line as u64),
            ]);
        }
        let plan = if rows.is_empty() {
            LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(DFSchema::try_from(schema.as_ref().clone())?),
            })
        } else {
            let names =
                schema.fields().iter().enumerate().map(|(i, f)| col(format!("column{}", i + 1)).alias(f.name()));
            LogicalPlanBuilder::values(rows)?.project(names)?.build()?
        };
        ctx.register_table(w.name.as_str(), Arc::new(ViewTable::new(plan, None)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session's physical optimizer: DataFusion's rules in their order, then wisp's, each timed
    /// for `--analyze` and named as the rule it wraps.
    #[tokio::test]
    async fn a_sessions_physical_rules_are_datafusions_then_wisps_timed() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let ctx = open(&lake, &SessionOptions::default()).await.unwrap();
        let state = ctx.state();
        let names: Vec<String> = state.physical_optimizers().iter().map(|r| r.name().to_string()).collect();
        let mut want: Vec<String> = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new()
            .rules
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        want.push(datafusion::physical_optimizer::PhysicalOptimizerRule::name(&crate::lake::LakeScans).to_string());
        assert_eq!(names, want);
        assert_eq!(names.last().map(String::as_str), Some("wisp_lake_scans"));
        let timed = |r: &Arc<dyn datafusion::physical_optimizer::PhysicalOptimizerRule + Send + Sync>| {
            format!("{r:?}").starts_with("TimedRule")
        };
        assert!(state.physical_optimizers().iter().all(timed), "every rule is timed");
    }
}
