//! Where scheduled alerts go: stdout (the invocation's new alerts), a JSON Lines file, or a
//! webhook. The durable sinks (file, webhook) deliver from the alert store: each keeps in
//! `<state>/outbox/<sink>.json` the alert files it has delivered; any other file is pending and is
//! sent, oldest first, before anything newer — so an alert that failed to go out stays in the
//! outbox and goes first next time, and a delivery that succeeded is never repeated. A crash
//! between a delivery and its outbox record: the JSON Lines sink finds the file's lines already at
//! its end and appends only what is missing (exactly once); the webhook sends that one file again
//! (receivers drop repeats by `alert_id`).
//!
//! Each alert is one JSON object with the `alerts` columns of SCHEMA.md (timestamps RFC 3339 UTC),
//! plus `@timestamp` (the alert's `ts`, for Elastic) and `TimeGenerated` (`detected_at`, for
//! Sentinel's Logs Ingestion API).

use super::alert::Alert;
use super::store::{self, StateDir, StoreError};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// A sink, as `--sink` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum Sink {
    Stdout,
    /// `jsonl:PATH`: appends one line per alert.
    Jsonl(PathBuf),
    /// `webhook:URL`: POSTs a JSON array per committed run.
    Webhook(String),
}

impl std::str::FromStr for Sink {
    type Err = String;
    fn from_str(s: &str) -> Result<Sink, String> {
        if s == "stdout" {
            Ok(Sink::Stdout)
        } else if let Some(p) = s.strip_prefix("jsonl:") {
            Ok(Sink::Jsonl(PathBuf::from(p)))
        } else if let Some(u) = s.strip_prefix("webhook:") {
            if !u.starts_with("http://") && !u.starts_with("https://") {
                return Err(format!("webhook URL '{u}': give an http:// or https:// URL"));
            }
            Ok(Sink::Webhook(u.to_string()))
        } else {
            Err(format!("unknown sink '{s}': use stdout, jsonl:PATH or webhook:https://HOST[:PORT]/PATH"))
        }
    }
}

impl Sink {
    /// The outbox record's name (`None` for stdout, which is not durable).
    fn outbox(&self) -> Option<String> {
        use sha2::Digest;
        let (kind, what) = match self {
            Sink::Stdout => return None,
            Sink::Jsonl(p) => ("jsonl", p.display().to_string()),
            Sink::Webhook(u) => ("webhook", u.clone()),
        };
        let h = sha2::Sha256::digest(what.as_bytes());
        Some(format!("outbox/{kind}-{}.json", h.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()))
    }

    pub fn describe(&self) -> String {
        match self {
            Sink::Stdout => "stdout".into(),
            Sink::Jsonl(p) => format!("jsonl:{}", p.display()),
            Sink::Webhook(u) => format!("webhook:{u}"),
        }
    }
}

/// One alert as sinks send it.
pub fn alert_json(a: &Alert) -> Value {
    let t = |us: i64| crate::time::from_micros(us).map(crate::time::rfc3339).unwrap_or_default();
    json!({
        "alert_id": a.alert_id,
        "rule_id": a.rule_id,
        "rule_name": a.rule_name,
        "severity": a.severity,
        "risk_score": a.risk_score,
        "ts": t(a.ts),
        "window_start": t(a.window_start),
        "window_end": t(a.window_end),
        "detected_at": t(a.detected_at),
        "service_principal_id": a.service_principal_id,
        "service_principal_name": a.service_principal_name,
        "app_id": a.app_id,
        "source_ip": a.source_ip,
        "source_asn": a.source_asn,
        "fields": a.fields,
        "@timestamp": t(a.ts),
        "TimeGenerated": t(a.detected_at),
    })
}

/// A sink's outbox record.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Record {
    sink: String,
    delivered: BTreeSet<String>,
}

/// Every alert file of the store, oldest commit first.
async fn alert_files(dir: &StateDir) -> Result<Vec<String>, StoreError> {
    let mut files: Vec<String> = dir.list("alerts").await?.into_iter().filter(|f| f.ends_with(".parquet")).collect();
    // `<rule>--<next end>-<detected at>.parquet`: commit order is the last number.
    let stamp = |f: &String| -> i64 {
        f.strip_suffix(".parquet").and_then(|s| s.rsplit('-').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    files.sort_by_key(|f| (stamp(f), f.clone()));
    Ok(files)
}

/// Starts a durable sink's outbox at the store's current end, if it has none: a sink added later
/// gets the alerts from then on, not the whole history.
pub async fn init(dir: &StateDir, sink: &Sink) -> Result<(), StoreError> {
    let Some(path) = sink.outbox() else { return Ok(()) };
    if dir.get(&path).await?.is_none() {
        let r = Record { sink: sink.describe(), delivered: alert_files(dir).await?.into_iter().collect() };
        dir.put(&path, serde_json::to_vec_pretty(&r).expect("serializable")).await?;
    }
    Ok(())
}

/// What a delivery did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delivery {
    pub alerts_sent: usize,
    pub files_sent: usize,
    /// Files still in the outbox, and why the first of them failed.
    pub pending: usize,
    pub error: Option<String>,
}

/// Sends a durable sink's pending alert files, oldest first; stops at the first failure (the rest
/// stay pending).
pub async fn deliver(dir: &StateDir, sink: &Sink, retries: &[Duration]) -> Result<Delivery, StoreError> {
    let Some(path) = sink.outbox() else { return Ok(Delivery::default()) };
    let mut rec: Record = match dir.get(&path).await? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| StoreError { path: path.clone(), msg: e.to_string() })?,
        None => Record { sink: sink.describe(), delivered: BTreeSet::new() },
    };
    let pending: Vec<String> = alert_files(dir).await?.into_iter().filter(|f| !rec.delivered.contains(f)).collect();
    let mut d = Delivery { pending: pending.len(), ..Default::default() };
    let mut client: Option<reqwest::Client> = None;
    for f in pending {
        let alerts = store::read_alerts(dir, &f).await?;
        let body: Vec<Value> = alerts.iter().map(alert_json).collect();
        let sent = match sink {
            Sink::Stdout => Ok(()),
            Sink::Jsonl(p) => append_jsonl(p, &body),
            Sink::Webhook(u) => {
                let client = client.get_or_insert_with(http_client);
                let mut r = post(client, u, &Value::Array(body.clone())).await;
                for wait in retries {
                    if r.is_ok() {
                        break;
                    }
                    tokio::time::sleep(*wait).await;
                    r = post(client, u, &Value::Array(body.clone())).await;
                }
                r
            }
        };
        match sent {
            Ok(()) => {
                rec.delivered.insert(f);
                dir.put(&path, serde_json::to_vec_pretty(&rec).expect("serializable")).await?;
                d.alerts_sent += body.len();
                d.files_sent += 1;
                d.pending -= 1;
            }
            Err(e) => {
                d.error = Some(e);
                break;
            }
        }
    }
    Ok(d)
}

/// Appends the rows of one alert file to a JSON Lines file, exactly once. The outbox records a
/// file as delivered only after the append, so a crash in between leaves this file's lines (or a
/// prefix of them, the last one possibly cut) at the end of the file: those are found in the tail,
/// a cut line of ours is removed, and only the missing rows are appended.
fn append_jsonl(p: &PathBuf, rows: &[Value]) -> Result<(), String> {
    let lines: Vec<String> = rows.iter().map(|r| format!("{r}\n")).collect();
    let window = lines.iter().map(String::len).sum::<usize>();
    let ctx = |what: &str, e: std::io::Error| format!("{what} {}: {e}", p.display());
    let mut f =
        std::fs::OpenOptions::new().create(true).read(true).append(true).open(p).map_err(|e| ctx("opening", e))?;
    let tail = read_tail(&mut f, window).map_err(|e| ctx("reading the end of", e))?;
    let mut text = String::new();
    if let Some(cut) = tail.cut {
        if lines.iter().any(|l| l.as_bytes().starts_with(&cut.1)) {
            f.set_len(cut.0).map_err(|e| ctx("removing a cut line from", e))?;
        } else {
            text.push('\n'); // someone else's unterminated line: keep it, start ours on a new one
        }
    }
    for (r, l) in rows.iter().zip(&lines) {
        if !r["alert_id"].as_str().is_some_and(|id| tail.ids.contains(id)) {
            text.push_str(l);
        }
    }
    f.write_all(text.as_bytes()).and_then(|_| f.sync_data()).map_err(|e| ctx("appending to", e))
}

/// The end of a JSON Lines file: the alert ids on its last complete lines, and an unterminated
/// last line (where it starts, its bytes).
struct Tail {
    ids: BTreeSet<String>,
    cut: Option<(u64, Vec<u8>)>,
}

/// Reads the last `window + 1` bytes of `f`: enough to hold one alert file's lines and the newline
/// before them.
fn read_tail(f: &mut std::fs::File, window: usize) -> std::io::Result<Tail> {
    use std::io::Seek;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(window as u64 + 1);
    f.seek(std::io::SeekFrom::Start(start))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    f.take(len - start).read_to_end(&mut tail)?;
    let complete = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let cut = (complete < tail.len()).then(|| (start + complete as u64, tail[complete..].to_vec()));
    // The first line of the tail may be the end of an older one; it parses as nothing.
    let ids = tail[..complete]
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter_map(|v| v["alert_id"].as_str().map(str::to_string))
        .collect();
    Ok(Tail { ids, cut })
}

/// The webhook client: TLS with the system's roots (and `SSL_CERT_FILE` / `SSL_CERT_DIR` when
/// set, as for an internal CA), 30-second timeouts.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("wisp/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// POSTs JSON to an `http://` or `https://` URL; success is a 2xx status.
pub async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<(), String> {
    let r = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| {
            // reqwest's own text is terse; the causes say what failed (DNS, TLS, refused).
            let mut msg = format!("POST {url}: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(c) = src {
                let t = c.to_string();
                if !msg.contains(&t) {
                    msg.push_str(": ");
                    msg.push_str(&t);
                }
                src = c.source();
            }
            msg
        })?;
    match r.status() {
        s if s.is_success() => Ok(()),
        s => Err(format!("POST {url}: HTTP {}", s.as_u16())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ids: &[&str]) -> Vec<Value> {
        ids.iter().map(|i| json!({"alert_id": i, "rule_id": "r", "fields": {"x": "y".repeat(40)}})).collect()
    }

    fn lines(p: &PathBuf) -> Vec<String> {
        std::fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn a_jsonl_append_interrupted_anywhere_is_completed_exactly_once() {
        let dir = std::env::temp_dir().join(format!("wisp-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let earlier = rows(&["e1", "e2"]);
        let batch = rows(&["a1", "a2", "a3"]);
        let whole: String = batch.iter().map(|r| format!("{r}\n")).collect();
        // A crash after any number of bytes of the batch's write: retrying gives each line once.
        for cut in 0..=whole.len() {
            let p = dir.join(format!("cut-{cut}.jsonl"));
            append_jsonl(&p, &earlier).unwrap();
            std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(&whole.as_bytes()[..cut]).unwrap();
            append_jsonl(&p, &batch).unwrap();
            let want: Vec<String> = earlier.iter().chain(&batch).map(|r| r.to_string()).collect();
            assert_eq!(lines(&p), want, "cut after {cut} bytes");
        }
        // Someone else's unterminated line is kept, and ours start on a new line.
        let p = dir.join("foreign.jsonl");
        std::fs::write(&p, "not ours").unwrap();
        append_jsonl(&p, &batch).unwrap();
        assert_eq!(lines(&p)[0], "not ours");
        assert_eq!(lines(&p).len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
