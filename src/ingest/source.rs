//! Input discovery (files, folders, globs) and reading through `object_store`, plus the ingest
//! manifest in `<lake>/_meta/ingest/` that makes re-runs write nothing new and lets a grown
//! append blob be read from where the last run stopped.

use crate::lake::{Lake, LakeError};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::runtime::Handle;

/// How many leading bytes identify a file's content in the manifest.
pub const HEAD_LEN: u64 = 4096;

/// One input file.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub store: Arc<dyn ObjectStore>,
    pub path: StorePath,
    /// Stable identity in the manifest (`file:///abs/path`).
    pub url: String,
    /// What messages call it.
    pub display: String,
    pub size: u64,
    pub gzip: bool,
    handle: Handle,
}

/// What the manifest remembers of one input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestEntry {
    pub source: String,
    pub size: u64,
    /// Hash of the first 4 KiB: a file replaced under the same name is read again.
    pub head_hash: i64,
    /// How many leading bytes `head_hash` covers.
    #[serde(default)]
    pub head_len: u64,
    pub consumed_bytes: u64,
    pub consumed_lines: u64,
    /// Line-delimited and uncompressed: a grown file is read from `consumed_bytes`.
    pub resumable: bool,
}

impl InputFile {
    pub fn entry(&self, head_hash: i64, consumed_bytes: u64, consumed_lines: u64, resumable: bool) -> ManifestEntry {
        ManifestEntry {
            source: self.url.clone(),
            size: self.size,
            head_hash,
            head_len: self.size.min(HEAD_LEN),
            consumed_bytes,
            consumed_lines,
            resumable,
        }
    }

    /// Hash of the first `len` bytes (at most the file's size).
    pub fn head_hash(&self, len: u64) -> Result<i64, String> {
        let end = self.size.min(len);
        if end == 0 {
            return Ok(0);
        }
        let bytes =
            self.handle.block_on(self.store.get_range(&self.path, 0..end)).map_err(|e| format!("cannot read: {e}"))?;
        Ok(crate::ingest::normalize::fnv64(&[&bytes]))
    }

    /// The open file of an input in a local folder (None for an object store's).
    pub fn local_file(&self) -> Option<std::fs::File> {
        if !self.url.starts_with("file://") || self.size == 0 {
            return None;
        }
        let res = self.handle.block_on(self.store.get_opts(&self.path, GetOptions::default())).ok()?;
        match res.payload {
            object_store::GetResultPayload::File(file, _) => Some(file),
            object_store::GetResultPayload::Stream(_) => None,
        }
    }

    /// A blocking reader from `offset` to the end.
    pub fn open(&self, offset: u64) -> Result<Box<dyn Read + Send>, String> {
        if self.size == 0 || offset >= self.size {
            return Ok(Box::new(std::io::empty()));
        }
        let opts = GetOptions { range: Some(GetRange::Offset(offset)), ..Default::default() };
        let res =
            self.handle.block_on(self.store.get_opts(&self.path, opts)).map_err(|e| format!("cannot open: {e}"))?;
        let range = res.range.clone();
        match res.payload {
            // A local store hands over the open file: read it directly, without a Tokio round trip
            // per 8 KiB chunk.
            object_store::GetResultPayload::File(mut file, _) => {
                use std::io::Seek;
                file.seek(std::io::SeekFrom::Start(range.start)).map_err(|e| format!("cannot seek: {e}"))?;
                Ok(Box::new(file.take(range.end - range.start)))
            }
            object_store::GetResultPayload::Stream(stream) => {
                Ok(Box::new(BlockingStream { handle: self.handle.clone(), stream, cur: Bytes::new() }))
            }
        }
    }
}

/// Reads an object-store byte stream from synchronous code (inside `spawn_blocking`).
struct BlockingStream {
    handle: Handle,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    cur: Bytes,
}

impl Read for BlockingStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Collects the files under `dir` (sorted, recursively; symbolic links followed, each folder once).
/// A folder that cannot be listed, an entry that cannot be read or a broken link is reported in
/// `bad` and the walk goes on with the rest.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, bad: &mut Vec<String>, seen: &mut std::collections::HashSet<PathBuf>) {
    if let Ok(real) = std::fs::canonicalize(dir) {
        if !seen.insert(real) {
            return; // a link back to a folder already walked
        }
    }
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            bad.push(format!("{}: cannot list the folder: {e}", dir.display()));
            return;
        }
    };
    let mut entries = Vec::new();
    for e in rd {
        match e {
            Ok(e) => entries.push(e.path()),
            Err(e) => bad.push(format!("{}: cannot read a folder entry: {e}", dir.display())),
        }
    }
    entries.sort();
    for p in entries {
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() => walk(&p, out, bad, seen),
            Ok(m) if m.is_file() => out.push(p),
            Ok(_) => bad.push(format!("{}: not a regular file (a socket, pipe or device): skipped", p.display())),
            Err(_) if p.is_symlink() => {
                bad.push(format!("{}: broken symbolic link (its target does not exist)", p.display()))
            }
            Err(e) => bad.push(format!("{}: {e}", p.display())),
        }
    }
}

/// A time limit on inputs laid out as diagnostic settings export them
/// (`…/y=YYYY/m=MM/d=DD/h=HH/m=00/PT1H.json`): `[since, until)`, either end open.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Hours {
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl Hours {
    pub fn is_all(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// Whether a path (or a folder prefix) may hold hours in the range: its `y=`, `m=`, `d=`,
    /// `h=` folders, as far as it has them, name a span that overlaps `[since, until)`. Paths
    /// outside the layout are kept.
    pub fn keeps(&self, path: &str) -> bool {
        if self.is_all() {
            return true;
        }
        let Some((lo, hi)) = path_span(path) else { return true };
        self.since.is_none_or(|s| hi > s) && self.until.is_none_or(|u| lo < u)
    }
}

/// The span `[lo, hi)` that a path's `y=/m=/d=/h=` folders name (the year alone, down to the hour).
fn path_span(path: &str) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    use chrono::{NaiveDate, TimeZone};
    let (mut y, mut mo, mut d, mut h) = (None, None, None, None);
    for seg in path.split('/') {
        let (k, v) = match seg.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), v),
            None => continue,
        };
        let n: Option<u32> = v.parse().ok();
        match k.as_str() {
            "y" if y.is_none() => y = n.map(|n| n as i32),
            "m" if y.is_some() && mo.is_none() => mo = n,
            "d" if mo.is_some() && d.is_none() => d = n,
            "h" if d.is_some() && h.is_none() => h = n,
            _ => {}
        }
    }
    let y = y?;
    let utc = |d: NaiveDate| chrono::Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"));
    let first = NaiveDate::from_ymd_opt(y, mo.unwrap_or(1), d.unwrap_or(1))?;
    let (lo, hi) = match (mo, d, h) {
        (None, _, _) => (utc(first), utc(NaiveDate::from_ymd_opt(y + 1, 1, 1)?)),
        (Some(m), None, _) => {
            let next =
                if m == 12 { NaiveDate::from_ymd_opt(y + 1, 1, 1)? } else { NaiveDate::from_ymd_opt(y, m + 1, 1)? };
            (utc(first), utc(next))
        }
        (Some(_), Some(_), None) => (utc(first), utc(first.succ_opt()?)),
        (Some(_), Some(_), Some(h)) => {
            let lo = utc(first) + chrono::Duration::hours(h as i64);
            (lo, lo + chrono::Duration::hours(1))
        }
    };
    Some((lo, hi))
}

/// Lists the objects under `prefix`, descending only into folders whose `y=/m=/d=/h=` names may
/// hold hours of `hours` (one delimited LIST per folder visited); returns them and the number of
/// LIST requests made.
pub async fn list_hours(
    store: &dyn ObjectStore,
    prefix: Option<&StorePath>,
    hours: &Hours,
) -> object_store::Result<(Vec<object_store::ObjectMeta>, usize)> {
    if hours.is_all() {
        let mut out = Vec::new();
        let mut s = store.list(prefix);
        while let Some(m) = s.next().await {
            out.push(m?);
        }
        return Ok((out, 1));
    }
    let mut out = Vec::new();
    let mut lists = 0;
    let mut stack: Vec<Option<StorePath>> = vec![prefix.cloned()];
    while let Some(p) = stack.pop() {
        lists += 1;
        let l = store.list_with_delimiter(p.as_ref()).await?;
        out.extend(l.objects.into_iter().filter(|o| hours.keeps(o.location.as_ref())));
        stack.extend(l.common_prefixes.into_iter().filter(|c| hours.keeps(c.as_ref())).map(Some));
    }
    Ok((out, lists))
}

/// Expands inputs (files, folders recursively, globs) into files; inputs that cannot be read are
/// returned as messages. Files in the diagnostic-settings layout outside `hours` are left out
/// (remote folders outside it are not even listed).
pub fn discover(inputs: &[String], hours: &Hours) -> (Vec<InputFile>, Vec<String>) {
    let handle = Handle::current();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new());
    let mut paths = Vec::new();
    let mut bad = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut remote_files = Vec::new();
    for input in inputs {
        let local = input.strip_prefix("file://").unwrap_or(input);
        if crate::lake::location::is_remote(input) {
            discover_remote(input, hours, &handle, &mut remote_files, &mut bad);
            continue;
        }
        let p = Path::new(local);
        if p.is_dir() {
            walk(p, &mut paths, &mut bad, &mut seen);
        } else if p.is_file() {
            paths.push(p.to_path_buf());
        } else if local.contains(['*', '?', '[']) {
            match glob::glob(local) {
                Ok(it) => {
                    let before = paths.len();
                    for entry in it {
                        match entry {
                            Ok(m) if m.is_file() => paths.push(m),
                            Ok(m) if m.is_dir() => walk(&m, &mut paths, &mut bad, &mut seen),
                            Ok(_) => {}
                            Err(e) => bad.push(format!("{input}: {e}")),
                        }
                    }
                    if paths.len() == before {
                        bad.push(format!("{input}: the pattern matches no file"));
                    }
                }
                Err(e) => bad.push(format!("{input}: bad glob pattern: {e}")),
            }
        } else if p.is_symlink() {
            bad.push(format!("{input}: broken symbolic link (its target does not exist)"));
        } else {
            bad.push(format!("{input}: no such file or folder"));
        }
    }
    let mut files = Vec::new();
    let paths: Vec<PathBuf> = paths.into_iter().filter(|p| hours.keeps(&p.to_string_lossy())).collect();
    for p in paths {
        let abs = match std::fs::canonicalize(&p) {
            Ok(a) => a,
            Err(e) => {
                bad.push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        let sp = match StorePath::from_filesystem_path(&abs) {
            Ok(sp) => sp,
            Err(e) => {
                bad.push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        let size = match std::fs::metadata(&abs) {
            Ok(m) => m.len(),
            Err(e) => {
                bad.push(format!("{}: {e}", p.display()));
                continue;
            }
        };
        let gzip = abs.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz")) || has_gzip_magic(&abs);
        files.push(InputFile {
            store: store.clone(),
            path: sp,
            url: format!("file://{}", abs.display()),
            display: p.display().to_string(),
            size,
            gzip,
            handle: handle.clone(),
        });
    }
    files.extend(remote_files);
    (files, bad)
}

/// The objects at an object-store URL: the object itself, or every object under it as a prefix
/// (sorted by key). Listing uses a store and a runtime of its own; the files read through a new
/// store on the caller's runtime.
fn discover_remote(input: &str, hours: &Hours, handle: &Handle, out: &mut Vec<InputFile>, bad: &mut Vec<String>) {
    let remote = match crate::lake::location::remote(input) {
        Ok(r) => r,
        Err(e) => return bad.push(format!("{input}: {e}")),
    };
    let hint = crate::lake::location::credential_hint(input);
    let loc = input.to_string();
    let hours = *hours;
    let listed = crate::lake::run_async(async move {
        let r = crate::lake::location::remote(&loc)?;
        let fail = |e: object_store::Error| crate::lake::LakeError::Read { path: loc.clone(), msg: e.to_string() };
        let mut objects = Vec::new();
        // The location as one object, else as a prefix.
        if !r.prefix.as_ref().is_empty() {
            match r.root.head(&r.prefix).await {
                Ok(m) => objects.push(m),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(fail(e)),
            }
        }
        if objects.is_empty() {
            let prefix = (!r.prefix.as_ref().is_empty()).then_some(&r.prefix);
            objects = list_hours(r.root.as_ref(), prefix, &hours).await.map_err(fail)?.0;
        }
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        let mut gz = Vec::new();
        for m in objects {
            let name = m.location.as_ref().to_ascii_lowercase();
            let gzip = name.ends_with(".gz")
                || (m.size >= 2 && r.root.get_range(&m.location, 0..2).await.map_err(fail)?.as_ref() == [0x1f, 0x8b]);
            gz.push((m, gzip));
        }
        Ok(gz)
    });
    let objects = match listed {
        Ok(o) => o,
        Err(e) => return bad.push(format!("{input}: {e} — {hint}")),
    };
    if objects.is_empty() {
        return bad.push(format!("{input}: no object at or under this location"));
    }
    let base = remote.base.as_str().trim_end_matches('/').to_string();
    for (m, gzip) in objects {
        if m.size == 0 && m.location.as_ref().ends_with('/') {
            continue; // a folder marker
        }
        let url = format!("{base}/{}", m.location);
        out.push(InputFile {
            store: remote.root.clone(),
            path: m.location,
            display: url.clone(),
            url,
            size: m.size,
            gzip,
            handle: handle.clone(),
        });
    }
}

fn has_gzip_magic(p: &Path) -> bool {
    let mut b = [0u8; 2];
    std::fs::File::open(p).and_then(|mut f| f.read_exact(&mut b)).is_ok() && b == [0x1f, 0x8b]
}

/// The merged manifest of all earlier runs.
#[derive(Debug, Default)]
pub struct Manifest {
    by_source: HashMap<String, ManifestEntry>,
    /// Every run that wrote its manifest (committed).
    run_ids: std::collections::HashSet<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RunManifest {
    run_id: String,
    finished_at: String,
    files: Vec<ManifestEntry>,
    summary: crate::ingest::Summary,
}

impl Manifest {
    pub fn load(lake: &Lake, handle: &Handle) -> Result<Self, LakeError> {
        let store = lake.store.clone();
        let runs: Vec<RunManifest> = handle.block_on(async move {
            let prefix = StorePath::from("_meta/ingest");
            let mut metas = Vec::new();
            let mut list = store.list(Some(&prefix));
            while let Some(m) = list.next().await {
                match m {
                    Ok(m) => metas.push(m),
                    Err(object_store::Error::NotFound { .. }) => break,
                    Err(e) => return Err(LakeError::Read { path: prefix.to_string(), msg: e.to_string() }),
                }
            }
            metas.sort_by(|a, b| a.location.cmp(&b.location));
            let mut runs = Vec::new();
            for m in metas {
                let bytes = store
                    .get(&m.location)
                    .await
                    .map_err(|e| LakeError::Read { path: m.location.to_string(), msg: e.to_string() })?
                    .bytes()
                    .await
                    .map_err(|e| LakeError::Read { path: m.location.to_string(), msg: e.to_string() })?;
                let run: RunManifest = serde_json::from_slice(&bytes).map_err(|e| LakeError::Read {
                    path: m.location.to_string(),
                    msg: format!("corrupt manifest: {e}"),
                })?;
                runs.push(run);
            }
            Ok(runs)
        })?;
        let mut by_source = HashMap::new();
        let mut run_ids = std::collections::HashSet::new();
        for run in runs {
            run_ids.insert(run.run_id.clone());
            for e in run.files {
                by_source.insert(e.source.clone(), e);
            }
        }
        Ok(Manifest { by_source, run_ids })
    }

    pub fn run_ids(&self) -> &std::collections::HashSet<String> {
        &self.run_ids
    }

    pub fn get(&self, source: &str) -> Option<&ManifestEntry> {
        self.by_source.get(source)
    }
}

/// Writes this run's manifest and the enrichment databases' versions to `_meta/`.
pub fn write_manifest(
    lake: &Lake,
    handle: &Handle,
    run_id: &str,
    files: &[ManifestEntry],
    summary: &crate::ingest::Summary,
    asn: Option<&wisp_udfs::AsnDb>,
    geo: Option<&wisp_udfs::GeoDb>,
) -> Result<(), LakeError> {
    let run = RunManifest {
        run_id: run_id.to_string(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        files: files.to_vec(),
        summary: summary.clone(),
    };
    let mut puts = vec![(
        StorePath::from(format!("_meta/ingest/{run_id}.json")),
        serde_json::to_vec_pretty(&run).expect("serializable"),
    )];
    if asn.is_some() || geo.is_some() {
        let db = |path: &Path, kind: String, epoch: Option<u64>| {
            serde_json::json!({"path": path.display().to_string(), "type": kind, "build_epoch": epoch,
                "build_time": epoch.and_then(|e| chrono::DateTime::from_timestamp(e as i64, 0)).map(|t| t.to_rfc3339())})
        };
        let doc = serde_json::json!({
            "run_id": run_id,
            "asn_db": asn.map(|a| db(a.path(), a.describe(), a.build_epoch())),
            "geo_db": geo.map(|g| db(g.path(), g.describe(), Some(g.build_epoch()))),
        });
        puts.push((
            StorePath::from(format!("_meta/enrichment/{run_id}.json")),
            serde_json::to_vec_pretty(&doc).expect("serializable"),
        ));
    }
    for (path, bytes) in puts {
        let store = lake.store.clone();
        let p = path.clone();
        handle
            .block_on(async move { store.put(&p, PutPayload::from(bytes)).await })
            .map_err(|e| LakeError::Store { url: path.to_string(), source: e })?;
    }
    Ok(())
}

#[cfg(test)]
mod hours_tests {
    use super::*;

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        crate::time::parse_utc(s).unwrap()
    }

    #[test]
    fn spans_of_the_diagnostic_settings_layout() {
        let h = Hours { since: Some(t("2026-11-19T22:00:00Z")), until: Some(t("2026-11-20T02:00:00Z")) };
        let p = |s: &str| format!("insights-logs-signinlogs/tenantId=abc/{s}");
        assert!(h.keeps(&p("y=2026/m=11/d=19/h=22/m=00/PT1H.json")));
        assert!(!h.keeps(&p("y=2026/m=11/d=19/h=21/m=00/PT1H.json")), "an hour before since");
        assert!(h.keeps(&p("y=2026/m=11/d=20/h=01/m=00/PT1H.json")));
        assert!(!h.keeps(&p("y=2026/m=11/d=20/h=02/m=00/PT1H.json")), "until is exclusive");
        assert!(h.keeps(&p("y=2026/m=11")) && h.keeps(&p("y=2026/m=11/d=20")) && !h.keeps(&p("y=2026/m=10")));
        assert!(!h.keeps(&p("y=2025")) && h.keeps(&p("y=2026")));
        assert!(h.keeps("exports/graph-signins.json"), "outside the layout: kept");
        let r = "resourceId=/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV/y=2026/m=12/d=01/h=00/m=00/PT1H.json";
        assert!(!h.keeps(r));
        let open = Hours { since: Some(t("2026-12-01T00:00:00Z")), until: None };
        assert!(open.keeps(r) && !open.keeps(&p("y=2026/m=11/d=30/h=23/m=00/PT1H.json")));
        assert!(Hours::default().keeps(&p("y=1999/m=01/d=01/h=00/m=00/PT1H.json")));
    }

    #[tokio::test]
    async fn listing_prunes_folders_outside_the_hours() {
        use object_store::memory::InMemory;
        let store = InMemory::new();
        let mut n = 0;
        for d in 1..=30 {
            for h in 0..24 {
                let p = format!("c/tenantId=t/y=2026/m=11/d={d:02}/h={h:02}/m=00/PT1H.json");
                store.put(&StorePath::from(p), PutPayload::from_static(b"{}")).await.unwrap();
                n += 1;
            }
        }
        let h = Hours { since: Some(t("2026-11-19T22:00:00Z")), until: Some(t("2026-11-20T02:00:00Z")) };
        let (got, lists) = list_hours(&store, Some(&StorePath::from("c")), &h).await.unwrap();
        let names: Vec<String> = got.iter().map(|o| o.location.to_string()).collect();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.iter().all(|n| n.contains("d=19/h=22") || n.contains("d=19/h=23") || n.contains("d=20/h=0")));
        assert!(lists < 20, "{lists} LIST requests for {n} objects: folders outside the hours were listed");
        let (all, _) = list_hours(&store, Some(&StorePath::from("c")), &Hours::default()).await.unwrap();
        assert_eq!(all.len(), n);
    }
}
