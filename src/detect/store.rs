//! The scheduler's state folder and its alert store.
//!
//! `<state>` is `<lake>/_state/` unless `wisp run --state S` says otherwise. It holds:
//! - `<rule id>/` — first-seen terms of new_terms rules ([`super::state`]);
//! - `runs/<rule id>.json` — the ledger ([`super::ledger`]) and `runs/run.lock`;
//! - `alerts/day=YYYY-MM-DD/<rule id>--<stamp>.parquet` — every alert ever sent, once (the
//!   `alerts` columns of SCHEMA.md plus `suppress_key`), registered as table `alerts`;
//! - `suppressed/day=…/<rule id>--<stamp>.parquet` — suppressed repeats, with the id of the alert
//!   that stood (`suppressed_by`), registered as table `alerts_suppressed`;
//! - `outbox/<sink>.json` — which alert files each durable sink has delivered.
//!
//! A store file appears under its final name only when complete (object-store puts stage and
//! rename), and a run's files are written before its ledger entry: a crash in between makes the
//! restart redo the run, find its alerts known, and send nothing twice.

use super::alert::Alert;
use crate::lake::schema::{stored_alerts_schema, suppressed_alerts_schema};
use crate::lake::{Lake, LakeError, WriteLock};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// A failure reading or writing the state folder.
#[derive(Debug, thiserror::Error)]
#[error("state folder {path}: {msg}")]
pub struct StoreError {
    pub path: String,
    pub msg: String,
}

fn err(path: impl ToString, msg: impl ToString) -> StoreError {
    StoreError { path: path.to_string(), msg: msg.to_string() }
}

/// Where scheduled detection keeps what it must remember: a local folder, or a prefix in an
/// object store (every file there is written whole by one put; the run lock is a lock object
/// taken by a conditional put).
#[derive(Debug, Clone)]
pub struct StateDir {
    pub store: Arc<dyn ObjectStore>,
    /// URL of the folder, ending in `/`.
    pub url: String,
    pub local_root: Option<PathBuf>,
    /// For a folder in an object store: the store's base URL and root, which sessions register
    /// to read the state's files.
    pub remote: Option<(url::Url, Arc<dyn ObjectStore>)>,
    /// As given (or derived from the lake's).
    pub location: String,
}

impl StateDir {
    /// The state folder `state` (a local folder or an object-store URL), or `<lake>/_state/`
    /// (in the lake's object store for a remote lake); a local one is created if missing.
    pub fn open(lake: &Lake, state: Option<&str>) -> Result<StateDir, LakeError> {
        let location = match (state, &lake.local_root) {
            (Some(s), _) => s.to_string(),
            (None, Some(root)) => root.join("_state").display().to_string(),
            (None, None) => format!("{}_state/", lake.url),
        };
        // Opened as a lake is: a local folder created, canonical, with a `file://` URL; a remote
        // one with the same credentials from the environment.
        let l = Lake::open(&location)?;
        Ok(StateDir { store: l.store, url: l.url, local_root: l.local_root, remote: l.remote, location })
    }

    /// Makes the state readable in a session: its object store (for a remote folder) and the
    /// alert store as tables `alerts` and `alerts_suppressed`.
    pub fn attach(&self, ctx: &datafusion::prelude::SessionContext) -> Result<(), crate::session::SessionError> {
        if let Some((base, store)) = &self.remote {
            ctx.register_object_store(base, store.clone());
        }
        crate::session::register_alerts(ctx, self.local_root.as_deref(), &self.url)
    }

    /// The state writers' lock (`runs/run.lock`): one `wisp run` (or `wisp detect --state`) at a
    /// time per state folder; a lock whose process is gone (a lock object whose lease ran out) is
    /// taken over. Holding it, the staging files a killed writer left in a local folder (`name#N`)
    /// are removed; returns the lock and how many.
    pub fn lock(&self, what: &str) -> Result<(WriteLock, usize), LakeError> {
        match &self.local_root {
            Some(root) => {
                let lock = WriteLock::acquire_file(root.join("runs").join("run.lock"), "scheduler's run", what)?;
                Ok((lock, crate::lake::remove_staging(root)))
            }
            None => Ok((WriteLock::acquire_object(&self.location, "runs/run.lock", "scheduler's run", what)?, 0)),
        }
    }

    /// Reads a small file; `None` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        let p = StorePath::from(path);
        match self.store.get(&p).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| err(path, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(path, e)),
        }
    }

    /// Writes a file whole (staged, then renamed to its name).
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.store.put(&StorePath::from(path), PutPayload::from(bytes)).await.map(|_| ()).map_err(|e| err(path, e))
    }

    /// Every file under `prefix` (sorted; staging files left by a crash are not listed).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = StorePath::from(prefix);
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&p));
        while let Some(m) = s.next().await {
            match m {
                Ok(m) => {
                    let name = m.location.to_string();
                    if !name.contains('#') {
                        out.push(name);
                    }
                }
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(err(prefix, e)),
            }
        }
        out.sort();
        Ok(out)
    }
}

/// The rule a store file belongs to: `…/<rule id>--<stamp>.parquet`.
pub fn file_rule(path: &str) -> Option<&str> {
    path.rsplit('/').next()?.split_once("--").map(|(r, _)| r)
}

/// What the store knows of one rule's alerts: every id it sent or suppressed, and per suppression
/// key the latest alert that stood (its run's end and id).
#[derive(Debug, Default)]
pub struct Known {
    pub ids: HashSet<String>,
    pub last_by_key: HashMap<String, (i64, String)>,
}

/// Reads what the store knows of a rule's alerts dated (by `ts`, the store's day partition) in the
/// UTC days of `[from_us, to_us]`: its own files of those days only, so the cost follows the
/// alerts near the ones being judged, not the months of store behind them. Callers widen the span
/// by the rule's horizon ([`horizon_us`]).
pub async fn known(dir: &StateDir, rule_id: &str, from_us: i64, to_us: i64) -> Result<Known, StoreError> {
    let mut k = Known::default();
    const DAY_US: i64 = 86_400_000_000;
    let days: Vec<String> =
        (from_us.div_euclid(DAY_US)..=to_us.div_euclid(DAY_US)).map(|d| crate::time::day_of(d * DAY_US)).collect();
    for folder in ["alerts", "suppressed"] {
        let mut files = Vec::new();
        for day in &days {
            files.extend(dir.list(&format!("{folder}/day={day}")).await?);
        }
        for f in files.into_iter().filter(|f| file_rule(f) == Some(rule_id)) {
            for b in read_file(dir, &f).await? {
                let ids = b.column(0).as_string::<i32>();
                let ends = b.column_by_name("window_end").ok_or_else(|| err(&f, "no window_end"))?;
                let ends = ends.as_primitive::<TimestampMicrosecondType>();
                let keys = b.column_by_name("suppress_key").ok_or_else(|| err(&f, "no suppress_key"))?;
                let keys = keys.as_string::<i32>();
                for i in 0..b.num_rows() {
                    k.ids.insert(ids.value(i).to_string());
                    if folder == "alerts" && keys.is_valid(i) {
                        let e = k.last_by_key.entry(keys.value(i).to_string()).or_insert((i64::MIN, String::new()));
                        if ends.value(i) > e.0 {
                            *e = (ends.value(i), ids.value(i).to_string());
                        }
                    }
                }
            }
        }
    }
    Ok(k)
}

/// How far from an alert's time its earlier copies and the alerts that can suppress it lie: an
/// alert id pins its events (every built-in `alert_key` holds the alert's time or its event's id,
/// and `ts` is an event time inside the run's window), so a repeat of it, or an alert of its
/// suppression key within `suppress_for` between run ends, has a `ts` within the look-back plus
/// `suppress_for` of it; a day more covers a window that straddles midnight.
pub fn horizon_us(lookback_us: i64, suppress_us: i64) -> i64 {
    lookback_us.max(0) + suppress_us.max(0) + 86_400_000_000
}

/// Reads one store file.
pub async fn read_file(dir: &StateDir, path: &str) -> Result<Vec<RecordBatch>, StoreError> {
    let bytes = dir.get(path).await?.ok_or_else(|| err(path, "missing"))?;
    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| err(path, e))?;
    r.collect::<Result<Vec<_>, _>>().map_err(|e| err(path, e))
}

/// The alerts of a store file.
pub async fn read_alerts(dir: &StateDir, path: &str) -> Result<Vec<Alert>, StoreError> {
    let mut out = Vec::new();
    for b in read_file(dir, path).await? {
        out.extend(alerts_of(&b).map_err(|m| err(path, m))?);
    }
    Ok(out)
}

/// Alerts from a batch of the (stored) alerts schema.
pub fn alerts_of(b: &RecordBatch) -> Result<Vec<Alert>, String> {
    let c = |n: &str| b.column_by_name(n).ok_or_else(|| format!("no column {n}"));
    let s = |n: &str| -> Result<Vec<Option<String>>, String> {
        let a = c(n)?;
        let a = a.as_string_opt::<i32>().ok_or_else(|| format!("{n} is not text"))?;
        Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect())
    };
    let t = |n: &str| -> Result<Vec<i64>, String> {
        let a = c(n)?;
        let a = a.as_primitive_opt::<TimestampMicrosecondType>().ok_or_else(|| format!("{n} is not a timestamp"))?;
        Ok((0..a.len()).map(|i| a.value(i)).collect())
    };
    let (id, rule, name, sev, spid, spname, app, ip, fields) = (
        s("alert_id")?,
        s("rule_id")?,
        s("rule_name")?,
        s("severity")?,
        s("service_principal_id")?,
        s("service_principal_name")?,
        s("app_id")?,
        s("source_ip")?,
        s("fields")?,
    );
    let key = if b.column_by_name("suppress_key").is_some() { s("suppress_key")? } else { vec![None; b.num_rows()] };
    let (ts, ws, we, det) = (t("ts")?, t("window_start")?, t("window_end")?, t("detected_at")?);
    let risk = c("risk_score")?;
    let risk = risk.as_primitive_opt::<Int32Type>().ok_or("risk_score is not int32")?;
    let asn = c("source_asn")?;
    let asn = asn.as_primitive_opt::<Int64Type>().ok_or("source_asn is not int64")?;
    Ok((0..b.num_rows())
        .map(|i| Alert {
            alert_id: id[i].clone().unwrap_or_default(),
            rule_id: rule[i].clone().unwrap_or_default(),
            rule_name: name[i].clone().unwrap_or_default(),
            severity: sev[i].clone().unwrap_or_default(),
            risk_score: risk.value(i),
            ts: ts[i],
            window_start: ws[i],
            window_end: we[i],
            detected_at: det[i],
            service_principal_id: spid[i].clone(),
            service_principal_name: spname[i].clone(),
            app_id: app[i].clone(),
            source_ip: ip[i].clone(),
            source_asn: asn.is_valid(i).then(|| asn.value(i)),
            fields: fields[i].clone().unwrap_or_default(),
            suppress_key: key[i].clone(),
        })
        .collect())
}

#[derive(serde::Serialize)]
struct StoredRow<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    suppress_key: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed_by: Option<&'a str>,
}

fn encode<T: serde::Serialize>(schema: arrow::datatypes::SchemaRef, rows: &[T]) -> Result<Vec<u8>, String> {
    let mut d = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    d.serialize(rows).map_err(|e| e.to_string())?;
    let batch = d.flush().map_err(|e| e.to_string())?.unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    let mut buf = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, Some(props)).map_err(|e| e.to_string())?;
    w.write(&batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Commits one run's outcome: the suppressed repeats first, then the alerts that stood, one file
/// per day of their `ts`, named `<rule id>--<stamp>`. Returns the alert files written (what the
/// sinks deliver).
pub async fn commit(
    dir: &StateDir,
    rule_id: &str,
    stamp: &str,
    stood: &[Alert],
    suppressed: &[(Alert, String)],
) -> Result<Vec<String>, StoreError> {
    let mut by_day: BTreeMap<String, Vec<StoredRow>> = BTreeMap::new();
    for (a, by) in suppressed {
        by_day.entry(crate::time::day_of(a.ts)).or_default().push(StoredRow {
            alert: a,
            suppress_key: &a.suppress_key,
            suppressed_by: Some(by),
        });
    }
    for (day, rows) in by_day {
        let path = format!("suppressed/day={day}/{rule_id}--{stamp}.parquet");
        dir.put(&path, encode(suppressed_alerts_schema(), &rows).map_err(|m| err(&path, m))?).await?;
    }
    let mut by_day: BTreeMap<String, Vec<StoredRow>> = BTreeMap::new();
    for a in stood {
        by_day.entry(crate::time::day_of(a.ts)).or_default().push(StoredRow {
            alert: a,
            suppress_key: &a.suppress_key,
            suppressed_by: None,
        });
    }
    let mut files = Vec::new();
    for (day, rows) in by_day {
        let path = format!("alerts/day={day}/{rule_id}--{stamp}.parquet");
        dir.put(&path, encode(stored_alerts_schema(), &rows).map_err(|m| err(&path, m))?).await?;
        files.push(path);
    }
    Ok(files)
}
