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

impl WriteLock {
    /// Takes the lake's write lock, waiting while a live process holds it. `what` says who asks
    /// (shown to a writer that waits).
    pub fn acquire(lake: &Lake, what: &str) -> Result<WriteLock, LakeError> {
        match &lake.local_root {
            Some(root) => Self::acquire_file(root.join("_meta").join("write.lock"), "lake's write", what),
            None => Ok(WriteLock { path: None, me: Self::holder(what) }),
        }
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
                    return Ok(WriteLock { path: Some(path), me });
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
