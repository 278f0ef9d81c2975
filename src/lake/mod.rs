//! The lake: table schemas, layout, the atomic Parquet writer, the ingest manifest, rejected
//! records, and store URLs → `object_store`. Knows nothing of export formats.

pub mod schema;
pub mod writer;

use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Opens (creating if needed) a lake at a local folder or `file://` URL.
    pub fn open(location: &str) -> Result<Self, LakeError> {
        let path = if let Some(rest) = location.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if location.contains("://") {
            return Err(LakeError::Unsupported(location.to_string()));
        } else {
            PathBuf::from(location)
        };
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

    /// URL of a table's root folder.
    pub fn table_url(&self, table: Table) -> String {
        format!("{}{}/", self.url, table.name())
    }

    pub fn day_prefix(table: Table, day: &str) -> StorePath {
        StorePath::from(format!("{}/day={}", table.name(), day))
    }
}
