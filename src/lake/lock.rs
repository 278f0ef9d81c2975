//! One writer at a time per lake, and the repairs a writer makes when it starts.
//!
//! `wisp ingest` (and the generator's lake output) holds `<lake>/_meta/write.lock` for its whole
//! run: the file is created exclusively and names the process. A second writer waits for it; a
//! lock whose process is gone (killed, crashed) is stale and is taken over. Holding the lock, a
//! writer removes what a killed writer left: object-store staging files (`name#N`) and the rejected
//! records of runs that never wrote their manifest (the re-run rejects them again, once).
//!
//! Local lakes only: object stores coordinate with conditional writes (the storage issue).

use super::{Lake, LakeError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Who holds the lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    pub since: String,
    pub what: String,
}

/// The lake's write lock, released when dropped.
#[derive(Debug)]
pub struct WriteLock {
    path: Option<PathBuf>,
    me: Holder,
    remote: Option<RemoteLock>,
}

/// A lock object in an object store: created with a conditional put (`PutMode::Create`), held
/// under a lease that a heartbeat thread renews (`PutMode::Update` on the version it wrote); a
/// holder whose lease ran out (a killed process) is taken over with a conditional update, so of
/// two processes that both find it stale only one wins.
#[derive(Debug)]
struct RemoteLock {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    beat: Option<std::thread::JoinHandle<()>>,
}

/// How long a lock object holds without renewal.
pub const LEASE: Duration = Duration::from_secs(60);

/// What a lock holds: its holder, and for a lock object the end of its lease (a lock file has
/// none; its holder's process tells whether it is live).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Leased {
    #[serde(flatten)]
    holder: Holder,
    /// Microseconds since the epoch after which a lock object is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until_us: Option<i64>,
}

fn leased(me: &Holder) -> Vec<u8> {
    let until = chrono::Utc::now().timestamp_micros() + LEASE.as_micros() as i64;
    serde_json::to_vec_pretty(&Leased { holder: me.clone(), lease_until_us: Some(until) }).expect("serializable")
}

fn version(e_tag: Option<String>, version: Option<String>) -> object_store::UpdateVersion {
    object_store::UpdateVersion { e_tag, version }
}

/// Takes the lock object `key` of the lake at `location` (waiting for a live holder).
fn acquire_remote(location: &str, key: &str, kind: &str, me: &Holder) -> Result<RemoteLock, LakeError> {
    use object_store::{ObjectStoreExt, PutMode, PutOptions};
    let path = object_store::path::Path::from(key);
    let (loc, p, m) = (location.to_string(), path.clone(), me.clone());
    let kind = kind.to_string();
    // Take it, and keep the version we wrote for the heartbeat.
    let first = super::run_async(async move {
        let lake = super::Lake::open(&loc)?;
        let err = |e: object_store::Error| LakeError::Store { url: format!("{loc}{p}"), source: e };
        let mut told = false;
        loop {
            let put = PutOptions { mode: PutMode::Create, ..Default::default() };
            match lake.store.put_opts(&p, leased(&m).into(), put).await {
                Ok(r) => return Ok(version(r.e_tag, r.version)),
                Err(object_store::Error::AlreadyExists { .. }) | Err(object_store::Error::Precondition { .. }) => {}
                Err(e) => return Err(err(e)),
            }
            let got = match lake.store.get(&p).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => continue, // released meanwhile
                Err(e) => return Err(err(e)),
            };
            let v = version(got.meta.e_tag.clone(), got.meta.version.clone());
            let body = got.bytes().await.map_err(err)?;
            let held = serde_json::from_slice::<Leased>(&body).ok();
            let stale = held
                .as_ref()
                .and_then(|h| h.lease_until_us)
                .is_none_or(|until| until < chrono::Utc::now().timestamp_micros());
            if stale {
                let put = PutOptions { mode: PutMode::Update(v), ..Default::default() };
                match lake.store.put_opts(&p, leased(&m).into(), put).await {
                    Ok(r) => return Ok(version(r.e_tag, r.version)),
                    Err(object_store::Error::Precondition { .. }) | Err(object_store::Error::AlreadyExists { .. }) => {
                        continue
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            if !told {
                if let Some(h) = &held {
                    eprintln!(
                        "waiting for the {kind} lock ({loc}{p}): held by {} (pid {} on {}, since {})",
                        h.holder.what, h.holder.pid, h.holder.host, h.holder.since
                    );
                }
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })?;
    // The heartbeat renews the lease on the version it last wrote, on a runtime of its own.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (loc, p, m, st) = (location.to_string(), path.clone(), me.clone(), stop.clone());
    let beat = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let Ok(lake) = super::Lake::open(&loc) else { return };
            let mut v = first;
            let mut last = std::time::Instant::now();
            while !st.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if last.elapsed() < LEASE / 4 {
                    continue;
                }
                let put = PutOptions { mode: PutMode::Update(v.clone()), ..Default::default() };
                match lake.store.put_opts(&p, leased(&m).into(), put).await {
                    Ok(r) => {
                        v = version(r.e_tag, r.version);
                        last = std::time::Instant::now();
                    }
                    Err(e) => {
                        eprintln!("warning: renewing the lock {loc}{p} failed: {e}");
                        last = std::time::Instant::now();
                    }
                }
            }
            // Released: remove it if it is still ours.
            if let Ok(g) = lake.store.get(&p).await {
                if let Ok(b) = g.bytes().await {
                    if serde_json::from_slice::<Leased>(&b).is_ok_and(|l| l.holder == m) {
                        let _ = lake.store.delete(&p).await;
                    }
                }
            }
        })
    });
    Ok(RemoteLock { stop, beat: Some(beat) })
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// True unless we can tell the holder's process is gone (same host, no such process).
fn alive(h: &Holder) -> bool {
    if h.host != host() || !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{}", h.pid)).exists()
}

/// The writer (ingest, compaction, re-enrichment) holding the lake's write lock now, if any: when
/// it took the lock (microseconds since the epoch; a live holder of the lock file, or a lock
/// object whose lease has not run out). A lock that cannot be read whole counts as held since now
/// (its writer may be writing it).
pub async fn writer_since(lake: &Lake) -> Result<Option<i64>, LakeError> {
    let now = chrono::Utc::now().timestamp_micros();
    let p = object_store::path::Path::from("_meta/write.lock");
    let body = match object_store::ObjectStoreExt::get(&lake.store, &p).await {
        Ok(r) => r.bytes().await,
        Err(e) => Err(e),
    };
    let since = |h: &Holder| chrono::DateTime::parse_from_rfc3339(&h.since).map_or(now, |t| t.timestamp_micros());
    match body {
        Ok(b) => Ok(match serde_json::from_slice::<Leased>(&b) {
            Ok(Leased { lease_until_us: Some(until), holder }) => (until >= now).then(|| since(&holder)),
            Ok(Leased { holder, .. }) => alive(&holder).then(|| since(&holder)),
            Err(_) => Some(now),
        }),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(LakeError::Read { path: format!("{}/_meta/write.lock", lake.location), msg: e.to_string() }),
    }
}

impl WriteLock {
    /// Takes the lake's write lock, waiting while a live process holds it. `what` says who asks
    /// (shown to a writer that waits).
    pub fn acquire(lake: &Lake, what: &str) -> Result<WriteLock, LakeError> {
        match &lake.local_root {
            Some(root) => Self::acquire_file(root.join("_meta").join("write.lock"), "lake's write", what),
            None => Self::acquire_object(&lake.location, "_meta/write.lock", "lake's write", what),
        }
    }

    /// Takes the lock object `key` under the object-store location `location` (see [`RemoteLock`]).
    pub fn acquire_object(location: &str, key: &str, kind: &str, what: &str) -> Result<WriteLock, LakeError> {
        let me = Self::holder(what);
        let remote = acquire_remote(location, key, kind, &me)?;
        Ok(WriteLock { path: None, me, remote: Some(remote) })
    }

    fn holder(what: &str) -> Holder {
        Holder { pid: std::process::id(), host: host(), since: chrono::Utc::now().to_rfc3339(), what: what.to_string() }
    }

    /// Takes the lock held by the file at `path` (same rules: wait for a live holder, take over a
    /// stale one). `kind` names the lock in the message a waiting process prints.
    pub fn acquire_file(path: PathBuf, kind: &str, what: &str) -> Result<WriteLock, LakeError> {
        let me = Self::holder(what);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LakeError::Create { path: dir.to_path_buf(), source: e })?;
        }
        let body = serde_json::to_vec_pretty(&me).expect("serializable");
        let mut told = false;
        loop {
            use std::io::Write;
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(&body)
                        .and_then(|_| f.sync_all())
                        .map_err(|e| LakeError::Create { path: path.clone(), source: e })?;
                    return Ok(WriteLock { path: Some(path), me, remote: None });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Holder>(&b).ok());
                    match holder {
                        Some(h) if alive(&h) => {
                            if !told {
                                eprintln!(
                                    "waiting for the {kind} lock ({}): held by {} (pid {} on {}, since {})",
                                    path.display(),
                                    h.what,
                                    h.pid,
                                    h.host,
                                    h.since
                                );
                                told = true;
                            }
                        }
                        // A dead holder, or a lock file half written by a writer that was killed
                        // while creating it: stale once it is old enough to be sure.
                        Some(_) => {
                            let _ = std::fs::remove_file(&path);
                            continue;
                        }
                        None => {
                            let old = std::fs::metadata(&path)
                                .and_then(|m| m.modified())
                                .ok()
                                .and_then(|t| t.elapsed().ok())
                                .is_some_and(|age| age > Duration::from_secs(5));
                            if old {
                                let _ = std::fs::remove_file(&path);
                                continue;
                            }
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(LakeError::Create { path, source: e }),
            }
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        if let Some(r) = &mut self.remote {
            r.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(b) = r.beat.take() {
                let _ = b.join();
            }
        }
        if let Some(p) = &self.path {
            // Only our own lock: never one taken over after ours was judged stale.
            let ours = std::fs::read(p).ok().and_then(|b| serde_json::from_slice::<Holder>(&b).ok());
            if ours.as_ref() == Some(&self.me) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// True for an object-store staging file (`name#N`) that a killed writer left.
fn is_staging(name: &str) -> bool {
    name.rsplit_once('#').is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// Removes the staging files (`name#N`) that killed writers left anywhere under `dir`; returns
/// how many. Call it holding the lock that guards `dir`.
pub fn remove_staging(dir: &Path) -> usize {
    let mut files = Vec::new();
    files_under(dir, &mut files);
    files
        .iter()
        .filter(|f| f.file_name().and_then(|n| n.to_str()).is_some_and(is_staging))
        .filter(|f| std::fs::remove_file(f).is_ok())
        .count()
}

/// What a starting writer cleaned up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repairs {
    pub staging_files: usize,
    pub uncommitted_reject_files: usize,
}

/// Removes staging debris under the folders ingest writes (tables, `_meta`, `_rejected`), and the
/// rejected-record files of runs whose manifest is not among `committed` run ids. Call it holding
/// the write lock.
pub fn repair(lake: &Lake, committed: &HashSet<String>) -> Repairs {
    let mut r = Repairs::default();
    let Some(root) = &lake.local_root else { return r };
    // A compaction that did not finish: its staging folder (new files, or old ones after the swap).
    r.staging_files += super::compact::remove_staging_folders(lake);
    let mut files = Vec::new();
    for t in super::ALL_TABLES {
        files_under(&root.join(t.name()), &mut files);
    }
    files_under(&root.join("_meta"), &mut files);
    files_under(&root.join("_rejected"), &mut files);
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let stale = is_staging(name)
            || (f.starts_with(root.join("_rejected"))
                && name.ends_with(".jsonl")
                && reject_run_id(name).is_some_and(|run| !committed.contains(run)));
        if stale && std::fs::remove_file(&f).is_ok() {
            if is_staging(name) {
                r.staging_files += 1;
            } else {
                r.uncommitted_reject_files += 1;
            }
        }
    }
    r
}

/// The run id of a rejected-records file `<run_id>-<seq>.jsonl`.
fn reject_run_id(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".jsonl")?;
    let (run, seq) = stem.rsplit_once('-')?;
    seq.bytes().all(|b| b.is_ascii_digit()).then_some(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_staging("x.parquet#1") && is_staging("run.json#23"));
        assert!(!is_staging("x.parquet") && !is_staging("a#b") && !is_staging("a#"));
        assert_eq!(reject_run_id("20261129T180000.000000Z-123-00001.jsonl"), Some("20261129T180000.000000Z-123"));
        assert_eq!(
            reject_run_id("20261129T180000.000000Z-123-gen-00002.jsonl"),
            Some("20261129T180000.000000Z-123-gen")
        );
        assert_eq!(reject_run_id("notes.txt"), None);
    }

    #[test]
    fn a_stale_lock_is_taken_over_and_a_live_one_waited_for() {
        let dir = std::env::temp_dir().join(format!("wisp-lock-{}", std::process::id()));
        let lake = Lake::open(&dir.display().to_string()).unwrap();
        let path = dir.join("_meta/write.lock");
        // A holder that cannot exist (pid beyond any pid_max) on this host: stale.
        let dead = Holder { pid: u32::MAX - 1, host: host(), since: "then".into(), what: "ingest".into() };
        std::fs::create_dir_all(dir.join("_meta")).unwrap();
        std::fs::write(&path, serde_json::to_vec(&dead).unwrap()).unwrap();
        let lock = WriteLock::acquire(&lake, "test").unwrap();
        let held: Holder = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(held.pid, std::process::id());
        // A second writer waits until the first lets go.
        let lake2 = lake.clone();
        let t0 = std::time::Instant::now();
        let waiter = std::thread::spawn(move || WriteLock::acquire(&lake2, "second").map(|_| t0.elapsed()));
        std::thread::sleep(Duration::from_millis(400));
        drop(lock);
        let waited = waiter.join().unwrap().unwrap();
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        assert!(!path.exists(), "released when dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
