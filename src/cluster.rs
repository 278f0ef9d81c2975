//! Apache Ballista: the same rule SQL, UDFs, watchlists and databases on a cluster.
//!
//! - [`connect`] turns a wisp session into a Ballista client: it plans here and ships the logical
//!   plan to the scheduler (`--engine ballista://HOST:PORT`); the rule runner does not change.
//! - [`scheduler`] and [`executor`] are Ballista's own scheduler and executor processes with wisp's
//!   functions registered (the stock binaries cannot load them) and object stores built on demand
//!   from a table's URL with credentials from the environment, as the CLI builds them.
//!
//! Functions travel by name: client, scheduler and executors each register the same set, loaded
//! from the cluster's configuration (`--asn-db`, `--geo-db`, `--watchlist`, each a path every
//! machine can read or an object-store URL). A database or watchlist that cannot be read stops the
//! process at start, never a query midway.

use crate::session::SessionError;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::prelude::SessionContext;
use object_store::ObjectStore;
use std::net::SocketAddr;
use std::sync::Arc;
use url::Url;
use wisp_udfs::Udfs;

/// Starting or joining a cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("'{0}' is not a cluster address: expected ballista://HOST:PORT (e.g. ballista://127.0.0.1:50050)")]
    Address(String),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("{what}: {source}")]
    Ballista {
        what: String,
        #[source]
        source: ballista_core::error::BallistaError,
    },
}

const ADAPTIVE_PLANNER: &str = ballista_core::config::BALLISTA_ADAPTIVE_PLANNER_ENABLED;

/// Parses `ballista://HOST:PORT` (also `df://`) into the scheduler's `http://HOST:PORT`.
pub fn scheduler_url(engine: &str) -> Result<String, ClusterError> {
    let bad = || ClusterError::Address(engine.to_string());
    let u = Url::parse(engine).map_err(|_| bad())?;
    if !matches!(u.scheme(), "ballista" | "df") || !u.path().trim_matches('/').is_empty() {
        return Err(bad());
    }
    let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(bad)?;
    Ok(format!("http://{host}:{}", u.port().unwrap_or(50050)))
}

/// Makes a wisp session (tables, views, functions) a Ballista client of the scheduler at `engine`:
/// plans are built here and run on the cluster. Functions are registered again after the upgrade
/// (Ballista replaces the session's function list with its own).
pub fn connect(ctx: SessionContext, engine: &str, udfs: &Udfs) -> Result<SessionContext, SessionError> {
    use ballista_core::extension::{SessionConfigExt, SessionStateExt};
    let url = scheduler_url(engine).map_err(|e| DataFusionError::Configuration(e.to_string()))?;
    let mut state = ctx.state();
    // Ballista's upgrade sets a fresh configuration; left on, "create the default catalog" would
    // replace the catalog that holds the lake's tables with an empty one.
    state.config_mut().options_mut().catalog.create_default_catalog_and_schema = false;
    // Ballista 55.0's adaptive planner re-plans stages from task metrics that its scheduler
    // rejects for some of the rules' plans (tasks of one stage report different operator counts),
    // and the job then never ends: the static distributed planner runs them all.
    let cfg = state.config().clone().upgrade_for_ballista().set_bool(ADAPTIVE_PLANNER, false);
    *state.config_mut() = cfg;
    let mut state = state.upgrade_for_ballista(url)?;
    state.config_mut().set_extension(Arc::new(crate::lake::prune::Shipped));
    let ctx = SessionContext::new_with_state(state);
    crate::session::register_udfs(&ctx, udfs)?;
    ctx.register_udf(loaded_udf(udfs));
    Ok(ctx)
}

/// What a process loaded, in words: databases (kind and build time) and watchlists (name, entry
/// count and a hash of the entries). Equal on a client and its cluster when both loaded the same.
pub fn loaded(u: &Udfs) -> String {
    use sha2::{Digest, Sha256};
    let asn = u.asn.as_ref().map_or("none".to_string(), |a| format!("{} built {:?}", a.describe(), a.build_epoch()));
    let geo = u.geo.as_ref().map_or("none".to_string(), |g| format!("{} built {}", g.describe(), g.build_epoch()));
    let mut lists: Vec<String> = u
        .watchlists
        .iter()
        .map(|w| {
            let mut entries: Vec<&str> = w.entries.iter().map(|(_, e)| e.as_str()).collect();
            entries.sort_unstable();
            let h = Sha256::digest(entries.join("\n").as_bytes());
            let h: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
            format!("{} ({} entries, {h})", w.name, entries.len())
        })
        .collect();
    lists.sort();
    format!("ASN database: {asn}; geo database: {geo}; watchlists: {}", lists.join(", "))
}

/// `wisp_loaded()`: [`loaded`] of the process that evaluates it. Volatile, so it is evaluated
/// where the plan runs (an executor), never folded into the plan by the client.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Loaded {
    text: String,
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for Loaded {
    fn name(&self) -> &str {
        "wisp_loaded"
    }
    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }
    fn return_type(&self, _: &[arrow::datatypes::DataType]) -> datafusion::error::Result<arrow::datatypes::DataType> {
        Ok(arrow::datatypes::DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        _: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        Ok(datafusion::logical_expr::ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(Some(
            self.text.clone(),
        ))))
    }
}

fn loaded_udf(u: &Udfs) -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(Loaded {
        text: loaded(u),
        signature: datafusion::logical_expr::Signature::nullary(datafusion::logical_expr::Volatility::Volatile),
    })
}

/// Checks that the cluster's executors loaded what this client did (see [`loaded`]): rules that
/// call `in_watchlist` or `asn()` would otherwise give other results than the local engine.
pub async fn check_loaded(ctx: &SessionContext, udfs: &Udfs) -> Result<(), SessionError> {
    let batches = ctx.sql("SELECT wisp_loaded() AS loaded FROM (VALUES (1)) AS one(x)").await?.collect().await?;
    let theirs = batches
        .first()
        .and_then(|b| arrow::array::AsArray::as_string_opt::<i32>(b.column(0)).map(|a| a.value(0).to_string()))
        .unwrap_or_default();
    let ours = loaded(udfs);
    if theirs != ours {
        return Err(SessionError::Engine(format!(
            "the cluster's executors loaded other functions than this command: cluster — {theirs}; this command — {ours}. \
             Start every cluster process with the same --asn-db, --geo-db and --watchlist as the command \
             (a lake's _watchlists/*.csv count as --watchlist)"
        )));
    }
    Ok(())
}

/// Object stores by URL, built on first use from the URL and the environment's credentials (the
/// way `--lake s3://…` builds them), so the scheduler and executors read whatever lake a client
/// plans over.
#[derive(Debug, Default)]
pub struct Stores(DefaultObjectStoreRegistry);

impl ObjectStoreRegistry for Stores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        self.0.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.0.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(s) = self.0.get_store(url) {
            return Ok(s);
        }
        if !crate::lake::location::is_remote(url.as_str()) {
            return self.0.get_store(url);
        }
        let remote = crate::lake::location::remote(url.as_str()).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let store: Arc<dyn ObjectStore> = Arc::new(crate::lake::metered::Metered(remote.root));
        self.0.register_store(&remote.base, store.clone());
        Ok(store)
    }
}

/// What a scheduler or executor serves: databases and watchlists, loaded at start.
#[derive(Debug, Clone)]
pub struct Functions(pub Arc<Udfs>);

impl Functions {
    pub fn load(cfg: &wisp_udfs::UdfConfig) -> Result<Self, ClusterError> {
        Ok(Functions(Arc::new(crate::session::load_udfs(cfg)?)))
    }

    fn describe(&self) -> String {
        loaded(&self.0)
    }
}

/// A scheduler's settings.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    pub bind: SocketAddr,
    /// The host executors and clients reach this scheduler by.
    pub external_host: String,
    /// An executor silent this long is dead and its tasks run elsewhere.
    pub executor_timeout_secs: u64,
}

/// Runs a Ballista scheduler with wisp's functions and object stores until the process ends.
pub async fn scheduler(settings: SchedulerSettings, functions: Functions) -> Result<(), ClusterError> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    eprintln!("wisp scheduler on {}: {}", settings.bind, functions.describe());
    let stores: Arc<dyn ObjectStoreRegistry> = Arc::new(Stores::default());
    let udfs = functions.0.clone();
    let mut config = SchedulerConfig {
        bind_host: settings.bind.ip().to_string(),
        bind_port: settings.bind.port(),
        external_host: settings.external_host.clone(),
        executor_timeout_seconds: settings.executor_timeout_secs,
        expire_dead_executor_interval_seconds: settings.executor_timeout_secs.clamp(1, 15),
        no_executors_grace_period_seconds: settings.executor_timeout_secs,
        ..Default::default()
    };
    config.override_session_builder = Some(Arc::new(move |cfg| cluster_state(cfg, stores.clone(), &udfs)));
    let ballista = |what: &str| {
        let what = what.to_string();
        move |source| ClusterError::Ballista { what: what.clone(), source }
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(ballista("starting the scheduler"))?;
    ballista_scheduler::scheduler_process::start_server(cluster, settings.bind, Arc::new(config))
        .await
        .map_err(ballista(&format!("scheduler on {}", settings.bind)))
}

/// The session a scheduler plans in, and whose functions executors resolve plans with: DataFusion's
/// defaults, Ballista's planner rules, wisp's functions, object stores built on demand.
fn cluster_state(
    cfg: datafusion::prelude::SessionConfig,
    stores: Arc<dyn ObjectStoreRegistry>,
    udfs: &Udfs,
) -> datafusion::error::Result<datafusion::execution::SessionState> {
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::execution::SessionStateBuilder;
    let rt = RuntimeEnvBuilder::new()
        .with_object_store_registry(stores)
        .with_cache_manager(crate::session::caches())
        .build_arc()?;
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(cfg)
        .with_runtime_env(rt)
        .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
        .with_scalar_functions(ballista_core::extension::ballista_scalar_functions())
        .with_aggregate_functions(ballista_core::extension::ballista_aggregate_functions())
        .with_window_functions(ballista_core::extension::ballista_window_functions())
        .build();
    let ctx = SessionContext::new_with_state(state);
    for f in udfs.functions() {
        ctx.register_udf(f);
    }
    for f in udfs.aggregates() {
        ctx.register_udaf(f);
    }
    ctx.register_udf(loaded_udf(udfs));
    Ok(ctx.state())
}

/// An executor's settings.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// Address of the Flight service (shuffle data); gRPC on `grpc_port`.
    pub bind: SocketAddr,
    pub grpc_port: u16,
    pub external_host: Option<String>,
    pub scheduler_host: String,
    pub scheduler_port: u16,
    /// Tasks run at once (default: cores).
    pub concurrent_tasks: usize,
    /// Memory pool over all tasks; operators spill beyond their share.
    pub memory_limit: usize,
    /// Shuffle files and spills.
    pub work_dir: Option<std::path::PathBuf>,
    pub heartbeat_secs: u64,
}

/// Runs a Ballista executor with wisp's functions and object stores until it is stopped.
pub async fn executor(settings: ExecutorSettings, functions: Functions) -> Result<(), ClusterError> {
    use ballista_core::registry::BallistaFunctionRegistry;
    use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    eprintln!(
        "wisp executor on {} (gRPC {}), scheduler {}:{}: {}",
        settings.bind,
        settings.grpc_port,
        settings.scheduler_host,
        settings.scheduler_port,
        functions.describe()
    );
    let stores: Arc<dyn ObjectStoreRegistry> = Arc::new(Stores::default());
    // Every function a plan may name: DataFusion's (nested ones included — Ballista's default
    // executor registry lacks them) and wisp's.
    let state = cluster_state(ballista_core::utils::default_config_producer(), stores.clone(), &functions.0)
        .map_err(|e| ClusterError::Session(e.into()))?;
    let registry = BallistaFunctionRegistry::from(&state);
    let work_dir = settings.work_dir.clone();
    let config = ExecutorProcessConfig {
        bind_host: settings.bind.ip().to_string(),
        port: settings.bind.port(),
        grpc_port: settings.grpc_port,
        external_host: settings.external_host.clone(),
        scheduler_host: settings.scheduler_host.clone(),
        scheduler_port: settings.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: settings.concurrent_tasks.max(1),
        work_dir: settings.work_dir.as_ref().map(|p| p.display().to_string()),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: settings.heartbeat_secs.max(1),
        memory_pool_size: Some(settings.memory_limit as u64),
        override_function_registry: Some(Arc::new(registry)),
        override_execution_engine: Some(Arc::new(StageMetricsOff(Default::default()))),
        override_runtime_producer: Some(Arc::new(move |_| {
            let mut rt = RuntimeEnvBuilder::new().with_object_store_registry(stores.clone());
            if let Some(dir) = &work_dir {
                rt = rt.with_temp_file_path(dir.clone());
            }
            rt.build_arc()
        })),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|source| ClusterError::Ballista { what: format!("executor on {}", settings.bind), source })
}

/// Ballista's logs on stderr, one line each, at the level `RUST_LOG` names (`error`, `warn`,
/// `info` — the default — `debug`, `trace`).
pub fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
                eprintln!("{now} {:<5} {}: {}", r.level(), r.target(), r.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = std::env::var("RUST_LOG").ok().and_then(|v| v.parse().ok()).unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Ballista's own execution engine, with its tasks' operator metrics left out of their reports.
/// Ballista 55.0's scheduler rejects a task whose plan reports a different number of operator
/// metric sets than the stage's first task did (tasks of one stage can differ: an operator reports
/// only once it has run), and the job then waits forever. Without operator metrics a report is
/// always accepted; results, retries and shuffle locations are unchanged. (Its adaptive planner
/// needs those metrics, which is one more reason [`connect`] uses the static planner.)
struct StageMetricsOff(ballista_executor::execution_engine::DefaultExecutionEngine);

impl ballista_executor::execution_engine::ExecutionEngine for StageMetricsOff {
    fn create_query_stage_exec(
        &self,
        job_id: ballista_core::JobId,
        stage_id: usize,
        task_id: usize,
        global_output_partition_ids: Vec<usize>,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        work_dir: &str,
        config: &datafusion::prelude::SessionConfig,
    ) -> datafusion::error::Result<Arc<dyn ballista_executor::execution_engine::QueryStageExecutor>> {
        let inner = self.0.create_query_stage_exec(
            job_id,
            stage_id,
            task_id,
            global_output_partition_ids,
            plan,
            work_dir,
            config,
        )?;
        Ok(Arc::new(StageWithoutMetrics(inner)))
    }
}

#[derive(Debug)]
struct StageWithoutMetrics(Arc<dyn ballista_executor::execution_engine::QueryStageExecutor>);

impl std::fmt::Display for StageWithoutMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[async_trait::async_trait]
impl ballista_executor::execution_engine::QueryStageExecutor for StageWithoutMetrics {
    async fn execute_query_stage(
        &self,
        task_id: usize,
        context: Arc<datafusion::execution::TaskContext>,
    ) -> datafusion::error::Result<Vec<ballista_core::serde::protobuf::ShuffleWritePartition>> {
        self.0.execute_query_stage(task_id, context).await
    }

    fn collect_plan_metrics(&self) -> Vec<datafusion::physical_plan::metrics::MetricsSet> {
        Vec::new()
    }

    fn collect_runtime_stats_reports(&self) -> Vec<ballista_core::serde::protobuf::RuntimeStatsReport> {
        self.0.collect_runtime_stats_reports()
    }

    fn collect_window_state_reports(
        &self,
    ) -> datafusion::error::Result<Vec<ballista_core::serde::protobuf::WindowStateReport>> {
        self.0.collect_window_state_reports()
    }

    fn collect_column_stats(&self) -> Vec<ballista_core::serde::protobuf::TaskColumnStats> {
        self.0.collect_column_stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_addresses() {
        assert_eq!(scheduler_url("ballista://127.0.0.1:50050").unwrap(), "http://127.0.0.1:50050");
        assert_eq!(scheduler_url("ballista://sched.internal").unwrap(), "http://sched.internal:50050");
        assert_eq!(scheduler_url("df://h:7").unwrap(), "http://h:7");
        for bad in ["127.0.0.1:50050", "http://h:1", "ballista://", "ballista://h:1/x"] {
            assert!(scheduler_url(bad).is_err(), "{bad}");
        }
    }
}
