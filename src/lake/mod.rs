//! The lake: table schemas, layout, the atomic Parquet writer, the ingest manifest, rejected
//! records, and store URLs → `object_store`. Knows nothing of export formats.

pub mod compact;
pub mod lock;
pub mod schema;
pub mod writer;

use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;

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
    #[error("unsupported lake location '{0}': give a local folder (object-store URLs come with the storage issue)")]
    Unsupported(String),
}

/// A lake location: an object store and the URL DataFusion reads it by.
#[derive(Debug, Clone)]
pub struct Lake {
    pub store: Arc<dyn ObjectStore>,
    /// URL of the lake root, ending in `/` (for local lakes `file:///abs/path/`).
    pub url: String,
    /// Local root, when the lake is a folder.
    pub local_root: Option<PathBuf>,
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

    /// Opens an existing lake for reading. A location that does not exist, or a folder that holds
    /// no lake, is an error: a typo in `--lake` must not read as "no findings".
    pub fn open_existing(location: &str) -> Result<Self, LakeError> {
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

    /// Opens (creating if needed) a lake at a local folder or `file://` URL: for writers.
    pub fn open(location: &str) -> Result<Self, LakeError> {
        let path = Self::local_path(location)?;
        std::fs::create_dir_all(&path).map_err(|e| LakeError::Create { path: path.clone(), source: e })?;
        let abs = std::fs::canonicalize(&path).map_err(|e| LakeError::Create { path: path.clone(), source: e })?;
        let store = LocalFileSystem::new_with_prefix(&abs)
            .map_err(|e| LakeError::Store { url: abs.display().to_string(), source: e })?;
        let mut url = format!("file://{}", abs.display());
        if !url.ends_with('/') {
            url.push('/');
        }
        Ok(Lake { store: Arc::new(store), url, local_root: Some(abs) })
    }

    /// The first and last `day=` partition of any table (local lakes; `None` when there is no data
    /// or the lake is not a folder).
    pub fn day_span(&self) -> Option<(chrono::NaiveDate, chrono::NaiveDate)> {
        let root = self.local_root.as_ref()?;
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
