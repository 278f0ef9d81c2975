//! The run ledger: per rule, which scheduled runs are done (`runs/<rule id>.json` in the state
//! folder). Runs end on multiples of the rule's interval since the epoch (UTC-aligned); the ledger
//! holds the end of the next run not yet done, so every due run happens exactly once.
//!
//! For late data it also holds the ingest runs whose files the rule's tables held when it last
//! ran: files of any other ingest run are new arrivals, and those dated before the runs already
//! done make the scheduler re-run the windows they fall in (see `schedule`); and the versions of
//! recently modified files, so that a file rewritten in place is noticed too.

use super::store::{StateDir, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Runs skipped because they were older than `--max-catch-up` when the scheduler came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// First and last skipped run end (RFC 3339).
    pub from: String,
    pub to: String,
    pub runs: u64,
    pub noted_at: String,
}

/// The last run's outcome, for `wisp run status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub window_start: String,
    pub window_end: String,
    pub runs: u64,
    pub reruns: u64,
    pub rows_read: u64,
    pub bytes_read: u64,
    pub alerts_new: u64,
    pub alerts_suppressed: u64,
    pub alerts_known: u64,
    pub alerts_cut: u64,
    pub seconds: f64,
    pub at: String,
}

/// A failed run (the cursor stays; the next tick tries again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub window_end: String,
    pub message: String,
    pub at: String,
}

/// One rule's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub rule_id: String,
    /// The interval the cursor is aligned to (a changed interval re-aligns it, forward).
    pub interval: String,
    /// Where the ledger started (`--since`), RFC 3339.
    pub since: String,
    /// The end of the next run not yet done (microseconds since the epoch, UTC).
    pub next_end_us: i64,
    /// Ingest runs (file-name prefixes) the rule's tables held at the last run.
    pub seen_ingests: BTreeSet<String>,
    /// Compacted files of the rule's tables seen at the last run, with the ingest runs each
    /// holds (read once from its footer).
    #[serde(default)]
    pub compacted: BTreeMap<String, Vec<String>>,
    /// Files rewritten in place (`ingest --reenrich`) are noticed by their modification time:
    /// every version modified at or before this time (microseconds) was in an earlier listing.
    #[serde(default)]
    pub mtime_horizon_us: Option<i64>,
    /// The files modified after the horizon, with the version (e-tag, or time and size) seen.
    #[serde(default)]
    pub recent_files: BTreeMap<String, String>,
    #[serde(default)]
    pub gaps: Vec<Gap>,
    #[serde(default)]
    pub last_run: Option<LastRun>,
    #[serde(default)]
    pub last_error: Option<LastError>,
    #[serde(default)]
    pub runs_done: u64,
}

fn path(rule_id: &str) -> String {
    format!("runs/{rule_id}.json")
}

/// A rule's ledger, if it has one.
pub async fn load(dir: &StateDir, rule_id: &str) -> Result<Option<Ledger>, StoreError> {
    let p = path(rule_id);
    match dir.get(&p).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| StoreError {
            path: p,
            msg: format!("corrupt ledger ({e}); remove it to start the rule anew"),
        }),
    }
}

/// Every ledger in the state folder.
pub async fn load_all(dir: &StateDir) -> Result<Vec<Ledger>, StoreError> {
    let mut out = Vec::new();
    for f in dir.list("runs").await? {
        let Some(id) = f.strip_prefix("runs/").and_then(|n| n.strip_suffix(".json")) else { continue };
        if let Some(l) = load(dir, id).await? {
            out.push(l);
        }
    }
    Ok(out)
}

/// Writes a ledger whole (the commit point of a run).
pub async fn save(dir: &StateDir, l: &Ledger) -> Result<(), StoreError> {
    dir.put(&path(&l.rule_id), serde_json::to_vec_pretty(l).expect("serializable")).await
}
