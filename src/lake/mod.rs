//! The lake: table schemas, layout, the atomic Parquet writer, the ingest manifest, rejected
//! records, and store URLs → `object_store`. Knows nothing of export formats.

pub mod compact;
pub mod days;
pub mod direct;
pub mod fetch;
pub mod listing;
pub mod local;
pub mod location;
pub mod lock;
pub mod metered;
pub mod prune;
pub mod rows;
pub mod schema;
mod view_filters;
pub mod views;
pub mod writer;

use object_store::path::Path as StorePath;
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;

/// Rewrites every Parquet scan of a physical plan: `f`, given the scan's configuration and its
/// Parquet source, returns the scan's new configuration, or `None` to keep it. Every node above a
/// changed scan is rebuilt (its properties computed again), so the lake's rewrites of scans
/// share one walk ([`LakeScans`]; [`days::DayBounds`] alone for tests).
pub(crate) fn map_parquet_scans(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    f: impl Fn(
        &datafusion::datasource::physical_plan::FileScanConfig,
        &datafusion::datasource::physical_plan::ParquetSource,
    ) -> Option<datafusion::datasource::physical_plan::FileScanConfig>,
) -> datafusion::common::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
    use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
    use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::physical_plan::ExecutionPlan;
    plan.transform_up(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else { return Ok(Transformed::no(node)) };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let Some(parquet) = config.file_source().downcast_ref::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        match f(config, parquet) {
            Some(config) => Ok(Transformed::yes(DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>)),
            None => Ok(Transformed::no(node)),
        }
    })
    .data()
}

/// A scan's configuration with a new Parquet source, and optionally a new expression adapter
/// and new file groups.
pub(crate) fn with_parquet(
    config: &datafusion::datasource::physical_plan::FileScanConfig,
    parquet: datafusion::datasource::physical_plan::ParquetSource,
    adapter: Option<Arc<dyn datafusion::physical_expr_adapter::PhysicalExprAdapterFactory>>,
    groups: Option<Vec<datafusion::datasource::physical_plan::FileGroup>>,
) -> datafusion::datasource::physical_plan::FileScanConfig {
    use datafusion::datasource::physical_plan::{FileScanConfigBuilder, FileSource};
    let parquet: Arc<dyn FileSource> = Arc::new(parquet);
    let mut builder = FileScanConfigBuilder::from(config.clone()).with_source(parquet);
    if let Some(adapter) = adapter {
        builder = builder.with_expr_adapter(Some(adapter));
    }
    if let Some(groups) = groups {
        builder = builder.with_file_groups(groups);
    }
    builder.build()
}

/// The lake's scan rewrites ([`days::bound`], then [`views::rewrite`]) in one walk of the plan,
/// each scan's configuration built once: each walk rebuilds every node above the scans it
/// changes, and two walks cost a one-hour hunt's planning ~0.5 ms more than one. Run last, as
/// the two were.
#[derive(Debug, Default)]
pub struct LakeScans;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for LakeScans {
    fn optimize(
        &self,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> datafusion::common::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        map_parquet_scans(plan, |config, parquet| {
            let (bounded, groups) = match days::bound(config, parquet) {
                Some((p, groups)) => (Some(p), groups),
                None => (None, None),
            };
            match views::rewrite(config, bounded.as_ref().unwrap_or(parquet)) {
                Some((p, adapter)) => Some(with_parquet(config, p, Some(adapter), groups)),
                None => bounded.map(|p| with_parquet(config, p, None, groups)),
            }
        })
    }

    fn name(&self) -> &str {
        "wisp_lake_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

pub use lock::{remove_staging, WriteLock};
pub use schema::{Table, ALL_TABLES};
pub use writer::{LakeWriter, RejectWriter};

/// Errors of the lake layer.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake {url}: {source}")]
    Store { url: String, source: object_store::Error },
    #[error("cannot create lake folder {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("writing {table} Parquet: {msg}")]
    Write { table: &'static str, msg: String },
    #[error("reading {path}: {msg}")]
    Read { path: String, msg: String },
    #[error("no lake at {0} — run `wisp ingest <exports> --lake {0}` first (or check the path)")]
    Missing(String),
    #[error("{0} is not a wisp lake (it holds none of the lake's table folders or _meta/) — check the path")]
    NotALake(String),
    #[error("unsupported location '{0}'")]
    Unsupported(String),
    #[error("{url}: {msg} — {hint}")]
    Credentials { url: String, msg: String, hint: &'static str },
    #[error("{what} is not supported on an object-store lake ({url}) yet: {instead}")]
    LocalOnly { what: &'static str, url: String, instead: &'static str },
}

/// A lake location: an object store and the URL DataFusion reads it by.
#[derive(Debug, Clone)]
pub struct Lake {
    pub store: Arc<dyn ObjectStore>,
    /// URL of the lake root, ending in `/` (for local lakes `file:///abs/path/`).
    pub url: String,
    /// Local root, when the lake is a folder.
    pub local_root: Option<PathBuf>,
    /// For a lake in an object store: the store at its bucket root and the URL sessions register
    /// it under (`s3://bucket`); `store` is the same store under the lake's prefix.
    pub remote: Option<(url::Url, Arc<dyn ObjectStore>)>,
    /// The location as given (`--lake`).
    pub location: String,
}

impl Lake {
    fn local_path(location: &str) -> Result<PathBuf, LakeError> {
        if let Some(rest) = location.strip_prefix("file://") {
            Ok(PathBuf::from(rest))
        } else if location.contains("://") {
            Err(LakeError::Unsupported(location.to_string()))
        } else {
            Ok(PathBuf::from(location))
        }
    }

    /// A lake in an object store (nothing is read or created).
    fn open_remote(location: &str) -> Result<Self, LakeError> {
        let r = location::remote(location)?;
        let store: Arc<dyn ObjectStore> = if r.prefix.as_ref().is_empty() {
            r.root.clone()
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(r.root.clone(), r.prefix.clone()))
        };
        Ok(Lake {
            store,
            url: r.url(),
            local_root: None,
            remote: Some((r.base, r.root)),
            location: location.to_string(),
        })
    }

    /// What the lake's root holds (top-level names), for the existence check of remote lakes.
    async fn top_level(&self) -> Result<Vec<String>, LakeError> {
        let l = self.store.list_with_delimiter(None).await.map_err(|e| match e {
            object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. } => {
                LakeError::Credentials {
                    url: self.url.clone(),
                    msg: e.to_string(),
                    hint: location::credential_hint(&self.url),
                }
            }
            e => LakeError::Store { url: self.url.clone(), source: e },
        })?;
        Ok(l.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
    }

    /// Opens an existing lake for reading. A location that does not exist, or a folder that holds
    /// no lake, is an error: a typo in `--lake` must not read as "no findings".
    pub fn open_existing(location: &str) -> Result<Self, LakeError> {
        if location::is_remote(location) {
            let lake = Self::open_remote(location)?;
            // Checked with a store of its own on a runtime of its own: pooled connections stay
            // with the runtime that made them.
            let loc = location.to_string();
            let names = run_async(async move { Self::open_remote(&loc)?.top_level().await })?;
            if names.is_empty() {
                return Err(LakeError::Missing(location.to_string()));
            }
            if !names.iter().any(|n| n == "_meta" || ALL_TABLES.iter().any(|t| t.name() == n)) {
                return Err(LakeError::NotALake(location.to_string()));
            }
            return Ok(lake);
        }
        let path = Self::local_path(location)?;
        if !path.is_dir() {
            return Err(LakeError::Missing(location.to_string()));
        }
        let known = |name: &str| path.join(name).is_dir();
        if !known("_meta") && !ALL_TABLES.iter().any(|t| known(t.name())) {
            return Err(LakeError::NotALake(location.to_string()));
        }
        Self::open(location)
    }

    /// Opens (creating if needed) a lake at a local folder, `file://` URL or object-store URL:
    /// for writers.
    pub fn open(location: &str) -> Result<Self, LakeError> {
        if location::is_remote(location) {
            return Self::open_remote(location);
        }
        let path = Self::local_path(location)?;
        std::fs::create_dir_all(&path).map_err(|e| LakeError::Create { path: path.clone(), source: e })?;
        let abs = std::fs::canonicalize(&path).map_err(|e| LakeError::Create { path: path.clone(), source: e })?;
        let store = local::LocalStore::new_with_prefix(&abs)
            .map_err(|e| LakeError::Store { url: abs.display().to_string(), source: e })?;
        let mut url = format!("file://{}", abs.display());
        if !url.ends_with('/') {
            url.push('/');
        }
        Ok(Lake { store: Arc::new(store), url, local_root: Some(abs), remote: None, location: location.to_string() })
    }

    /// The first and last `day=` partition of any table (`None` when there is no data).
    pub fn day_span(&self) -> Option<(chrono::NaiveDate, chrono::NaiveDate)> {
        let Some(root) = self.local_root.as_ref() else {
            // An object store has no empty folders: every `day=` prefix holds an object.
            let loc = self.location.clone();
            let days = run_async(async move {
                let lake = Self::open_remote(&loc)?;
                let mut days = Vec::new();
                for t in ALL_TABLES {
                    let prefix = StorePath::from(t.name());
                    let l = lake
                        .store
                        .list_with_delimiter(Some(&prefix))
                        .await
                        .map_err(|e| LakeError::Store { url: lake.url.clone(), source: e })?;
                    days.extend(l.common_prefixes.iter().filter_map(|p| {
                        let d = p.filename()?.strip_prefix("day=")?;
                        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()
                    }));
                }
                Ok(days)
            })
            .ok()?;
            return Some((*days.iter().min()?, *days.iter().max()?));
        };
        let mut span: Option<(chrono::NaiveDate, chrono::NaiveDate)> = None;
        for t in ALL_TABLES {
            for e in std::fs::read_dir(root.join(t.name())).into_iter().flatten().flatten() {
                let name = e.file_name();
                let Some(day) = name.to_str().and_then(|n| n.strip_prefix("day=")) else { continue };
                let Ok(d) = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d") else { continue };
                let has_file = std::fs::read_dir(e.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|f| f.file_name().to_str().is_some_and(|n| n.ends_with(".parquet")));
                if has_file {
                    span = Some(match span {
                        None => (d, d),
                        Some((lo, hi)) => (lo.min(d), hi.max(d)),
                    });
                }
            }
        }
        span
    }

    /// URL of a table's root folder.
    pub fn table_url(&self, table: Table) -> String {
        format!("{}{}/", self.url, table.name())
    }

    pub fn day_prefix(table: Table, day: &str) -> StorePath {
        StorePath::from(format!("{}/day={}", table.name(), day))
    }
}

/// Runs a future to completion from synchronous code, inside or outside a Tokio runtime: on a
/// thread and a current-thread runtime of its own (a store used there should be its own too).
pub fn run_async<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, LakeError>> + Send + 'static,
) -> Result<T, LakeError> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LakeError::Read { path: "runtime".into(), msg: e.to_string() })?
            .block_on(f)
    })
    .join()
    .unwrap_or_else(|_| Err(LakeError::Read { path: "runtime".into(), msg: "a store call panicked".into() }))
}
