//! `wisp run` as a process: the cron form on the samples, `run status` and `explain`, SIGKILL at
//! several points of a run, two runners on one state folder, and sinks (a JSON Lines file and a
//! webhook whose first attempts fail).

mod common;
use common::*;
use std::collections::{BTreeSet, HashMap};
use std::process::Command;

fn samples_lake() -> std::path::PathBuf {
    let lake = tmp("run-lake");
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(repo().join("data/samples")));
    assert_eq!(code, 0, "{err}");
    lake
}

/// Three rules that alert on the samples: one-pass new_terms, suppression (replayed), daily.
const RULES: [&str; 3] =
    ["sp_unusual_source_asn", "identity_signin_from_suspicious_source", "sp_credential_added_after_signin"];
const SINCE: &str = "2026-11-20T00:00:00Z";
const UNTIL: &str = "2026-11-21T12:00:00Z";

fn run_cmd(lake: &std::path::Path, state: &std::path::Path, until: &str) -> Command {
    let mut c = wisp();
    c.args(["run", "--once", "--format", "jsonl", "--since", SINCE, "--until", until, "--lake"])
        .arg(lake)
        .arg("--state")
        .arg(state);
    for r in RULES {
        c.args(["--rule", r]);
    }
    c
}

/// The sorted alert ids of one uninterrupted run into a fresh state folder: the reference.
fn clean_run_ids(lake: &std::path::Path) -> Vec<String> {
    let (code, out, err) = run(&mut run_cmd(lake, &tmp("run-clean"), UNTIL));
    assert_eq!(code, 0, "{err}");
    let mut want = ids(&out);
    want.sort();
    want
}

fn ids(jsonl: &str) -> Vec<String> {
    jsonl
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alert_id"].as_str().unwrap().to_string())
        .collect()
}

fn stored_ids(state: &std::path::Path) -> Vec<String> {
    let lake = wisp::lake::Lake::open(&state.display().to_string()).unwrap();
    let dir = wisp::detect::store::StateDir::open(&lake, Some(&state.display().to_string())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut out = Vec::new();
        for f in dir.list("alerts").await.unwrap() {
            out.extend(wisp::detect::store::read_alerts(&dir, &f).await.unwrap().into_iter().map(|a| a.alert_id));
        }
        out.sort();
        out
    })
}

#[test]
fn the_cron_form_runs_each_window_once_and_reports_status() {
    let lake = samples_lake();
    let state = tmp("run-state");
    let (code, out, err) = run(&mut run_cmd(&lake, &state, UNTIL));
    assert_eq!(code, 0, "{err}");
    let first = ids(&out);
    assert!(first.len() >= 3, "the samples alert for each rule: {out}\n{err}");
    for r in RULES {
        assert!(err.contains(&format!("{r}: ")), "one line per rule: {err}");
    }
    assert!(err.contains("already known") && err.contains("MB read"), "{err}");
    // Again at the same time: nothing due, nothing sent.
    let (code, out, err) = run(&mut run_cmd(&lake, &state, UNTIL));
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().is_empty(), "{out}");
    // Later: the runs after are due, the earlier alerts are not sent again.
    let (code, out, err) = run(&mut run_cmd(&lake, &state, "2026-11-22T06:00:00Z"));
    assert_eq!(code, 0, "{err}");
    assert!(ids(&out).iter().all(|i| !first.contains(i)), "{out}");
    let mut stored = stored_ids(&state);
    let n = stored.len();
    stored.dedup();
    assert_eq!(stored.len(), n, "each alert once in the store");

    // Status: every rule with its last window, lag and alerts.
    let (code, out, err) = run(wisp()
        .args(["run", "status", "--format", "csv", "--until", "2026-11-22T07:00:00Z", "--lake"])
        .arg(&lake)
        .arg("--state")
        .arg(&state));
    assert_eq!(code, 0, "{err}");
    for r in RULES {
        assert!(out.contains(r), "{out}");
    }
    assert!(out.contains("2026-11-22T06:00:00Z") && out.contains("60m"), "{out}");

    // Explain: the alert and its evidence rows.
    let id = &first[0];
    let (code, out, err) =
        run(wisp().args(["explain", &id[..12], "--format", "csv", "--lake"]).arg(&lake).arg("--state").arg(&state));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(id.as_str()), "{err}");
    assert!(out.lines().count() >= 2 && out.starts_with("table,ts,id,raw"), "{out}");
    let (code, _, err) = run(wisp().args(["explain", "ffffffffffff", "--lake"]).arg(&lake).arg("--state").arg(&state));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no alert ffffffffffff"), "{err}");
}

#[test]
fn killed_runs_and_two_runners_send_each_alert_once() {
    let lake = samples_lake();
    let want = clean_run_ids(&lake);
    assert!(!want.is_empty());

    // SIGKILL at several points, each followed by a restart; then a run to the end.
    let state = tmp("run-killed");
    let jsonl = state.join("sent.jsonl");
    let mut printed = Vec::new();
    for ms in [50u64, 250, 500, 800, 1200, 1800] {
        let mut child = run_cmd(&lake, &state, UNTIL)
            .arg("--sink")
            .arg(format!("jsonl:{}", jsonl.display()))
            .arg("--sink")
            .arg("stdout")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = child.kill();
        let o = child.wait_with_output().unwrap();
        printed.extend(ids(&String::from_utf8_lossy(&o.stdout)));
    }
    let (code, out, err) = run(run_cmd(&lake, &state, UNTIL).arg("--sink").arg(format!("jsonl:{}", jsonl.display())));
    assert_eq!(code, 0, "{err}");
    printed.extend(ids(&out));
    let stored = stored_ids(&state);
    assert_eq!(stored, want, "the store after kills and restarts equals one clean run");
    let file = ids(&std::fs::read_to_string(&jsonl).unwrap_or_default());
    let file_set: BTreeSet<_> = file.iter().cloned().collect();
    assert_eq!(file_set, want.iter().cloned().collect::<BTreeSet<_>>(), "the JSONL sink got every alert");
    let mut seen: HashMap<&String, usize> = HashMap::new();
    for i in &printed {
        *seen.entry(i).or_default() += 1;
    }
    assert!(seen.values().all(|&n| n == 1), "stdout printed an alert twice: {seen:?}");

    // Two runners on one state folder at once: one waits for the other; each alert once.
    let both = tmp("run-both");
    let spawn = || {
        run_cmd(&lake, &both, UNTIL)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success());
    let mut got = ids(&String::from_utf8_lossy(&a.stdout));
    got.extend(ids(&String::from_utf8_lossy(&b.stdout)));
    got.sort();
    assert_eq!(got, want, "two runners: each alert once");
    let errs = format!("{}{}", String::from_utf8_lossy(&a.stderr), String::from_utf8_lossy(&b.stderr));
    assert!(errs.contains("waiting for the scheduler's run lock"), "{errs}");
}

#[test]
fn a_run_killed_at_exact_system_calls_loses_and_repeats_nothing() {
    if !strace_available() {
        return;
    }
    let lake = samples_lake();
    let want = clean_run_ids(&lake);
    assert!(want.len() >= 3);
    // The points: before the first alert file; after a rule's alerts are stored but before its
    // ledger records the run (two rules: one-pass and replayed); after the JSON Lines sink wrote
    // a file's alerts but before they are synced and recorded as delivered (twice).
    let points: [(&str, &str, u32); 5] = [
        ("alerts/day=2026-11-20", "mkdir", 1),
        ("runs/sp_unusual_source_asn.json#1", "rename", 1),
        ("runs/identity_signin_from_suspicious_source.json#1", "rename", 1),
        ("sent.jsonl", "fdatasync", 1),
        ("sent.jsonl", "fdatasync", 2),
    ];
    for (sub, syscall, when) in points {
        let state = tmp("run-strace");
        let jsonl = state.join("sent.jsonl");
        let sink = format!("jsonl:{}", jsonl.display());
        let mut cmd = run_cmd(&lake, &state, UNTIL);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let o =
            wisp_killed_at(Some(&state.join(sub)), syscall, when).args(&args).args(["--sink", &sink]).output().unwrap();
        let point = format!("{syscall} #{when} of {sub}");
        assert!(!o.status.success(), "not killed at {point}: {}", String::from_utf8_lossy(&o.stderr));
        let (code, _, err) = run(cmd.args(["--sink", &sink]));
        assert_eq!(code, 0, "restart after a kill at {point}: {err}");
        assert_eq!(stored_ids(&state), want, "the store after a kill at {point}");
        let mut sent = ids(&std::fs::read_to_string(&jsonl).unwrap_or_default());
        sent.sort();
        assert_eq!(sent, want, "the JSON Lines sink after a kill at {point}: every alert exactly once");
        let debris: Vec<String> = files_under(&state).into_iter().filter(|f| f.contains('#')).collect();
        assert!(debris.is_empty(), "{point}: {debris:?}");
    }
}

/// A local HTTP server that answers 503 to the first `fail` requests and 200 after, recording
/// the bodies it accepted.
fn server(fail: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        let mut n = 0;
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            // Read the head, then Content-Length bytes of body.
            let body = loop {
                let k = s.read(&mut chunk).unwrap_or(0);
                if k == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        break Some(String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string());
                    }
                }
            };
            n += 1;
            let ok = n > fail;
            if ok {
                g.lock().unwrap().push(body.unwrap_or_default());
            }
            let status = if ok { "200 OK" } else { "503 Service Unavailable" };
            let _ =
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
        }
    });
    (url, got)
}

#[test]
fn a_webhook_that_fails_first_gets_every_alert_once() {
    let lake = samples_lake();
    // Fails 6 times: the first run's 3 retries and more — the rest stays in the outbox.
    let (url, got) = server(6);
    let state = tmp("run-hook");
    let hook = format!("webhook:{url}");
    let (code, out, err) = run(run_cmd(&lake, &state, UNTIL).args(["--sink", &hook, "--sink", "stdout"]));
    assert_eq!(code, 4, "a failed delivery is a failed run: {err}");
    assert!(err.contains("kept in the outbox"), "{err}");
    let mut want = ids(&out);
    want.sort();
    assert!(!want.is_empty());
    // The next run sends the outbox first, then nothing new; a third run sends nothing.
    for _ in 0..2 {
        let (code, _, err) = run(run_cmd(&lake, &state, UNTIL).args(["--sink", &hook]));
        assert_eq!(code, 0, "{err}");
    }
    let bodies = got.lock().unwrap().clone();
    let mut sent: Vec<String> = Vec::new();
    for b in &bodies {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        for a in v.as_array().unwrap() {
            assert!(a["@timestamp"].is_string() && a["TimeGenerated"].is_string(), "{a}");
            sent.push(a["alert_id"].as_str().unwrap().to_string());
        }
    }
    sent.sort();
    assert_eq!(sent, want, "every alert once, after the failures");
}

/// An https endpoint (Python's http.server with a self-signed certificate for 127.0.0.1) that
/// appends each POST body as a line to `log`; `None` when openssl or python3 is missing.
fn https_server(dir: &std::path::Path, log: &std::path::Path) -> Option<(Killed, String, std::path::PathBuf)> {
    // A test CA, and a server certificate for 127.0.0.1 signed by it (webpki refuses a
    // self-signed CA certificate as the server's own).
    let (cert, key, ca) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=wisp-test-ca -keyout ca.key -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out cert.pem -extfile leaf.ext
"#;
    let ok = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: openssl is missing (it makes the test certificates)");
        return None;
    }
    // The server binds port 0 and prints the port once it is listening with TLS: no race for a
    // port, no probe that could connect to itself.
    let py = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        with open(sys.argv[2], 'ab') as f:
            f.write(body + b'\n')
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[3], sys.argv[4])
s.socket = c.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", py, "-"])
        .arg(log)
        .arg(&cert)
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let server = Killed(child);
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the https server did not start: {line:?}"));
    Some((server, format!("https://127.0.0.1:{port}/hook"), ca))
}

/// A child process killed when dropped (also when the test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_https_webhook_is_verified_and_gets_every_alert_once() {
    let lake = samples_lake();
    let dir = tmp("run-https");
    let log = dir.join("received.jsonl");
    let Some((server, url, ca)) = https_server(&dir, &log) else { return };
    let state = tmp("run-https-state");
    let hook = format!("webhook:{url}");
    // An untrusted certificate: refused, kept in the outbox, exit 4.
    let (code, out, err) =
        run(run_cmd(&lake, &state, UNTIL).args(["--sink", &hook, "--sink", "stdout"]).env_remove("SSL_CERT_FILE"));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    assert!(!log.exists(), "nothing delivered over an unverified connection");
    let mut want = ids(&out);
    want.sort();
    assert!(!want.is_empty());
    // Trusting the test CA (SSL_CERT_FILE, as for an internal CA): the outbox goes out, once.
    for _ in 0..2 {
        let (code, _, err) = run(run_cmd(&lake, &state, UNTIL).args(["--sink", &hook]).env("SSL_CERT_FILE", &ca));
        assert_eq!(code, 0, "{err}");
    }
    drop(server);
    let mut sent: Vec<String> = Vec::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        sent.extend(v.as_array().unwrap().iter().map(|a| a["alert_id"].as_str().unwrap().to_string()));
    }
    sent.sort();
    assert_eq!(sent, want, "every alert once, over https");
}

#[test]
fn suppression_holds_across_scheduled_runs_as_in_the_backtest() {
    let lake = samples_lake();
    // A rule whose 8-hour window slides: each run that sees an address makes a new alert id (the
    // run's end is in the key), and suppression by address for 8 hours holds the repeats.
    let rules = tmp("run-rules");
    std::fs::write(
        rules.join("wisp_test_suppress.sql"),
        r#"/*
id = "wisp_test_suppress"
name = "First sign-in of an address in 8 hours"
description = "Test rule: repeats across sliding windows."
type = "correlation"
severity = "low"
risk_score = 10
interval = "1h"
lookback = "8h"
suppress_by = ["source_ip"]
suppress_for = "8h"
tables = ["signins"]
alert_key = ["source_ip", "run_end"]
*/
SELECT source_ip, min(ts) AS ts, $window_end AS run_end, count(*) AS n
FROM signins
WHERE ts > $window_start AND ts <= $window_end AND source_ip IS NOT NULL
GROUP BY source_ip
"#,
    )
    .unwrap();
    let mut sent = Vec::new();
    let start = wisp::time::parse_utc(SINCE).unwrap();
    for h in 0..=30 {
        let until = wisp::time::rfc3339(start + chrono::Duration::hours(h));
        let (code, out, err) = run(wisp()
            .args(["run", "--once", "--format", "jsonl", "--since", SINCE, "--until", &until, "--lake"])
            .arg(&lake)
            .arg("--rules-dir")
            .arg(&rules)
            .args(["--rule", "wisp_test_suppress"]));
        assert_eq!(code, 0, "{err}");
        sent.extend(ids(&out));
    }
    let end = wisp::time::rfc3339(start + chrono::Duration::hours(30));
    let (code, out, err) = run(wisp()
        .args(["detect", "--format", "jsonl", "--from", SINCE, "--to", &end, "--lake"])
        .arg(&lake)
        .arg("--rules-dir")
        .arg(&rules)
        .args(["--rule", "wisp_test_suppress"]));
    assert_eq!(code, 0, "{err}");
    let mut want = ids(&out);
    want.sort();
    sent.sort();
    assert!(want.len() >= 2, "{out}");
    assert_eq!(sent, want, "hourly scheduled runs vs the backtest, suppression included");
    // The repeats were held back, and are counted against the alert that stood.
    let (code, out, err) = run(wisp()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&lake)
        .arg("SELECT count(*) AS n, count(DISTINCT suppressed_by) AS stood FROM alerts_suppressed s JOIN alerts a ON s.suppressed_by = a.alert_id"));
    assert_eq!(code, 0, "{err}");
    let row: Vec<i64> = out.lines().nth(1).unwrap().split(',').map(|v| v.parse().unwrap()).collect();
    assert!(row[0] > 0 && row[1] > 0, "{out}");

    // Keyed by the address alone, an alert id would not pin its events (a repeat could lie
    // anywhere in the store): `wisp run` refuses the rule, and `rules lint` says why.
    let text = std::fs::read_to_string(rules.join("wisp_test_suppress.sql")).unwrap();
    let loose = tmp("run-rules-loose");
    std::fs::write(
        loose.join("wisp_test_suppress.sql"),
        text.replace(r#"alert_key = ["source_ip", "run_end"]"#, r#"alert_key = ["source_ip"]"#),
    )
    .unwrap();
    let state = tmp("run-loose-state");
    let (code, out, err) = run(wisp()
        .args(["run", "--once", "--since", SINCE, "--until", SINCE, "--lake"])
        .arg(&lake)
        .arg("--state")
        .arg(&state)
        .arg("--rules-dir")
        .arg(&loose)
        .args(["--rule", "wisp_test_suppress"]));
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("does not pin the alert's events"), "{err}");
    let (code, _, err) = run(wisp().args(["rules", "lint", "--lake"]).arg(&lake).arg("--rules-dir").arg(&loose));
    assert_ne!(code, 0);
    assert!(err.contains("wisp_test_suppress") && err.contains("does not pin"), "{err}");
}

#[test]
fn the_long_running_form_stops_cleanly_on_sigterm() {
    let lake = samples_lake();
    let state = tmp("run-term");
    // No --once: it runs what is due since SINCE, then sleeps until the next hour.
    let mut c = wisp();
    c.args(["run", "--format", "jsonl", "--since", SINCE, "--max-catch-up", "60d", "--rule", "sp_unusual_source_asn"])
        .arg("--lake")
        .arg(&lake)
        .arg("--state")
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let ledger = state.join("runs/sp_unusual_source_asn.json");
    let t0 = std::time::Instant::now();
    while !ledger.exists() && t0.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ledger.exists(), "the first tick committed");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, _, err) = run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    assert_eq!(code, 0, "{err}");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("stopped"), "{err}");
    assert!(!ids(&String::from_utf8_lossy(&o.stdout)).is_empty(), "the catch-up alerted before it slept");
    assert!(!state.join("runs/run.lock").exists(), "the lock was released");
}
