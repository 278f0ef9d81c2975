//! Local copies of small inputs named by an object-store URL: enrichment databases (`--asn-db`,
//! `--geo-db`), watchlists (`--watchlist NAME=URL`, `<lake>/_watchlists/` of a remote lake) and
//! rule folders (`--rules-dir`). The readers of those (MaxMind's memory map, the CSV and rule
//! loaders) want files; the objects are downloaded once into wisp's cache
//! (`$XDG_CACHE_HOME/wisp/fetched/`, else `~/.cache/wisp/fetched/`, else the temp folder) under
//! their URL and e-tag, so an hourly `wisp run` downloads a database again only when it changed.
//! A copy appears under its final name only when complete.

use super::location::{self, is_remote};
use super::{run_async, LakeError};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("wisp").join("fetched")
}

fn hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn read_err(url: &str, e: impl std::fmt::Display) -> LakeError {
    LakeError::Read { path: url.to_string(), msg: e.to_string() }
}

/// The store and object path a URL names (the URL's path is the object's key).
fn object(url: &str) -> Result<(Arc<dyn ObjectStore>, StorePath), LakeError> {
    let r = location::remote(url)?;
    Ok((r.root, r.prefix))
}

/// Downloads `key` of `store` (known by `url`) into the cache unless the copy of its current
/// version is there; returns the copy's path.
async fn fetch(store: Arc<dyn ObjectStore>, key: StorePath, url: String) -> Result<PathBuf, LakeError> {
    let head = store.head(&key).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => read_err(&url, "no such object"),
        e => read_err(&url, e),
    })?;
    let version =
        head.e_tag.clone().unwrap_or_else(|| format!("{}:{}", head.last_modified.timestamp_micros(), head.size));
    let name = key.filename().unwrap_or("object").to_string();
    let dir = cache_root().join(hex(&url)).join(hex(&version));
    let path = dir.join(&name);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == head.size) {
        return Ok(path);
    }
    let bytes = store.get(&key).await.map_err(|e| read_err(&url, e))?.bytes().await.map_err(|e| read_err(&url, e))?;
    std::fs::create_dir_all(&dir).map_err(|e| LakeError::Create { path: dir.clone(), source: e })?;
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&tmp, &bytes).map_err(|e| LakeError::Create { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, &path).map_err(|e| LakeError::Create { path: path.clone(), source: e })?;
    Ok(path)
}

/// `arg` as a local path when it is one (or a `file://` URL); `Err` with the URL otherwise.
fn local(arg: &Path) -> Result<PathBuf, String> {
    let s = arg.to_string_lossy().to_string();
    if is_remote(&s) {
        return Err(s);
    }
    Ok(PathBuf::from(s.strip_prefix("file://").unwrap_or(&s)))
}

/// `arg` itself when it is a local path (or `file://` URL); for an object-store URL, a local copy
/// of the object.
pub fn local_copy(arg: &Path) -> Result<PathBuf, LakeError> {
    let s = match local(arg) {
        Ok(p) => return Ok(p),
        Err(url) => url,
    };
    let (store, key) = object(&s)?;
    run_async(fetch(store, key, s))
}

/// Local copies of the objects under `prefix` of `store` whose names end in `ext` (not in
/// subfolders), sorted by name.
pub async fn copies_under(
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    base_url: String,
    ext: &str,
) -> Result<Vec<PathBuf>, LakeError> {
    let listing = store.list_with_delimiter(Some(&prefix)).await;
    let objects = match listing {
        Ok(l) => l.objects,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(read_err(&base_url, e)),
    };
    let mut keys: Vec<StorePath> = objects
        .into_iter()
        .map(|m| m.location)
        .filter(|k| k.filename().is_some_and(|n| n.to_ascii_lowercase().ends_with(ext)))
        .collect();
    keys.sort();
    let mut out = Vec::new();
    let mut fetches = futures::stream::iter(keys.into_iter().map(|k| {
        let url = format!("{}/{}", base_url.trim_end_matches('/'), k.filename().unwrap_or_default());
        fetch(store.clone(), k, url)
    }))
    .buffered(8);
    while let Some(p) = fetches.next().await {
        out.push(p?);
    }
    Ok(out)
}

/// `arg` itself when it is a local folder; for an object-store prefix, a local folder holding
/// copies of the `.sql` files under it (a rules folder).
pub fn local_rules_dir(arg: &Path) -> Result<PathBuf, LakeError> {
    let s = match local(arg) {
        Ok(p) => return Ok(p),
        Err(url) => url,
    };
    let (store, prefix) = object(&s)?;
    let url = s.clone();
    let files = run_async(copies_under(store, prefix, url, ".sql"))?;
    if files.is_empty() {
        return Err(read_err(&s, "no .sql rule files under this prefix"));
    }
    // One folder with exactly these files, named by their versions (the copies live in
    // per-version folders): the same folder again while no rule changed.
    let set: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let dir = cache_root().join(hex(&s)).join(format!("rules-{}", hex(&set.join("\n"))));
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = cache_root().join(hex(&s)).join(format!(".rules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| LakeError::Create { path: tmp.clone(), source: e })?;
    for f in files {
        let name = f.file_name().unwrap_or_default();
        std::fs::copy(&f, tmp.join(name)).map_err(|e| LakeError::Create { path: tmp.join(name), source: e })?;
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process made it meanwhile.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(dir)
}
