//! Lakes and inputs in object stores, against real emulators started here on loopback: the S3
//! API of `moto_server` (PyPI `moto[server]`) and Azure Blob Storage of Azurite (npm `azurite`).
//! The exports are uploaded to one bucket/container, ingested from there into a lake in another,
//! and every detection's backtest, a query and a re-ingest are compared with the same on a local
//! lake. Two ingests racing on one remote lake are serialized by the lock object (conditional
//! puts), so nothing is written twice. Scheduled detection keeps its state in the remote lake and
//! sends what it sends on the local one, each alert once, also with two runners at once.
//!
//! Without the emulators the tests say SKIPPED, unless `WISP_REQUIRE_EMULATORS` is set (`.ci/run`
//! installs both and sets it), where their absence fails.

mod common;
use common::*;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// A bucket of the moto server at `endpoint`.
fn s3(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .unwrap(),
    )
}

/// A container of the Azurite at `endpoint` (its well-known account and `key`).
fn azurite(endpoint: &str, key: &str, container: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::azure::MicrosoftAzureBuilder::new()
            .with_endpoint(format!("{endpoint}/devstoreaccount1"))
            .with_allow_http(true)
            .with_account("devstoreaccount1")
            .with_access_key(key)
            .with_container_name(container)
            .build()
            .unwrap(),
    )
}

/// Uploads every bundled sample under `prefix` of `store`.
async fn upload_samples(store: &Arc<dyn ObjectStore>, prefix: &str) {
    for f in files_under(&repo().join("data/samples")) {
        let bytes = std::fs::read(repo().join("data/samples").join(&f)).unwrap();
        let p = object_store::path::Path::from(format!("{prefix}/{f}"));
        store.put(&p, PutPayload::from(bytes)).await.unwrap();
    }
}

/// The alert ids of every detection's backtest over the samples, sorted.
fn alert_ids(lake: &str, env: &[(&str, String)]) -> Vec<String> {
    let (code, out, err) = run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args([
        "detect",
        "--from",
        "2026-11-15T00:00:00Z",
        "--to",
        "2026-11-22T00:00:00Z",
        "--format",
        "jsonl",
        "--lake",
        lake,
    ]));
    assert_eq!(code, 0, "{err}");
    let mut v: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alert_id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// `wisp sql --format csv` on `lake`: its output (the command must succeed).
fn sql_csv(lake: &str, env: &[(&str, String)], q: &str) -> String {
    let (code, out, err) =
        run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args(["sql", "--format", "csv", "--lake", lake, q]));
    assert_eq!(code, 0, "{err}");
    out
}

fn counts(lake: &str, env: &[(&str, String)]) -> String {
    let q = "SELECT 'signins' AS t, count(*) AS n FROM signins UNION ALL SELECT 'audit', count(*) FROM audit \
             UNION ALL SELECT 'o365_audit', count(*) FROM o365_audit UNION ALL SELECT 'resource_logs', count(*) FROM resource_logs \
             ORDER BY t";
    sql_csv(lake, env, q)
}

/// Plants a lock object as another process would hold it, with a lease ending at `until_us`.
fn plant_lock(store: &Arc<dyn ObjectStore>, key: &str, until_us: i64) {
    let body = serde_json::json!({
        "pid": 4_000_000_000u32, "host": "elsewhere", "since": "2026-11-30T00:00:00Z", "what": "wisp ingest",
        "lease_until_us": until_us,
    });
    let p = object_store::path::Path::from(key);
    tokio::runtime::Handle::current()
        .block_on(store.put(&p, PutPayload::from(serde_json::to_vec(&body).unwrap())))
        .unwrap();
}

/// The round trip on one store: `inputs` holds the uploaded samples, `lake` is an empty location
/// whose lock object is `lock_key` in `store`.
fn round_trip(inputs: &str, lake: &str, env: &[(&str, String)], store: &Arc<dyn ObjectStore>, lock_key: &str) {
    let local = tmp("os-local");
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&local).arg(repo().join("data/samples")));
    assert_eq!(code, 0, "{err}");
    let local = local.display().to_string();

    // A lake that does not exist yet is an error for readers, not an empty result.
    let (code, _, err) = run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args(["sql", "--lake", lake, "SELECT 1"]));
    assert_ne!(code, 0);
    assert!(err.contains("no lake at"), "{err}");

    // Two ingests of the remote inputs into the remote lake at once: the lock object serializes
    // them; the second finds every input in the manifest (or every record a duplicate).
    let spawn = || {
        wisp()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["ingest", "--no-progress", "--lake", lake, inputs])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        // Exit 3 is not possible (no --strict); the bundled samples hold one intended reject.
        assert_eq!(o.status.code(), Some(0), "{err}");
    }
    assert_eq!(counts(lake, env), counts(&local, &[]), "rows of the remote lake vs the local one");
    assert_eq!(alert_ids(lake, env), alert_ids(&local, &[]), "every detection's backtest");
    assert!(!alert_ids(&local, &[]).is_empty());

    // Ingesting again reads nothing new (the manifest lives in the remote lake too).
    let (code, _, err) =
        run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args(["ingest", "--no-progress", "--lake", lake, inputs]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("unchanged"), "{err}");
    assert_eq!(counts(lake, env), counts(&local, &[]));

    // A lock object whose lease ran out (its holder was killed) is taken over; a live one is
    // waited for until it is released or its lease ends.
    let now = chrono::Utc::now().timestamp_micros();
    plant_lock(store, lock_key, now - 1);
    let (code, _, err) =
        run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args(["ingest", "--no-progress", "--lake", lake, inputs]));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("waiting for"), "{err}");
    plant_lock(store, lock_key, now + 4_000_000);
    let t0 = std::time::Instant::now();
    let (code, _, err) =
        run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args(["ingest", "--no-progress", "--lake", lake, inputs]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("waiting for the lake's write lock"), "{err}");
    assert!(t0.elapsed() >= std::time::Duration::from_secs(2), "it waited for the lease: {:?}", t0.elapsed());
    let left = tokio::runtime::Handle::current().block_on(store.head(&object_store::path::Path::from(lock_key)));
    assert!(matches!(left, Err(object_store::Error::NotFound { .. })), "released: {left:?}");

    footers_are_fetched_once(lake, env);
    scheduled_detection(lake, env, store, lock_key, &local);
    databases_watchlists_and_rules_by_url(lake, inputs, env, store, lock_key, &local);

    // Compaction stays local for now: a clear error, not silence.
    let (code, _, err) = run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args(["compact", "--lake", lake]));
    assert_ne!(code, 0);
    assert!(err.contains("not supported on an object-store lake"), "{err}");
    let _ = std::fs::remove_dir_all(&local);
}

/// `wisp run` on the remote lake keeps its state (ledgers, first-seen state, alert store, run
/// lock) in `<lake>/_state/` in the object store: it sends what the same schedule sends on the
/// local lake, nothing twice — also with two runners started at once and after a stale run lock.
fn scheduled_detection(lake: &str, env: &[(&str, String)], store: &Arc<dyn ObjectStore>, lock_key: &str, local: &str) {
    let runner = |lake: &str, until: &str| {
        let mut c = wisp();
        c.envs(env.iter().map(|(k, v)| (k, v))).args([
            "run",
            "--once",
            "--format",
            "jsonl",
            "--since",
            "2026-11-20T00:00:00Z",
            "--until",
            until,
            "--lake",
            lake,
        ]);
        c
    };
    let ids = |out: &str| -> Vec<String> {
        let mut v: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alert_id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let sent = |lake: &str, until: &str| {
        let (code, out, err) = run(&mut runner(lake, until));
        assert_eq!(code, 0, "{err}");
        ids(&out)
    };
    let first = sent(lake, "2026-11-21T00:00:00Z");
    assert!(!first.is_empty(), "the samples alert");
    assert_eq!(first, sent(local, "2026-11-21T00:00:00Z"), "remote state vs local state");
    assert!(sent(lake, "2026-11-21T00:00:00Z").is_empty(), "nothing due, nothing sent again");
    // `--state` names another place in the store: a new ledger there sends the same alerts again
    // (its own store of what it sent), and again at the same time nothing.
    let bucket: String = lake.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    let elsewhere = format!("{bucket}/other-state");
    let with_state = |until: &str| {
        let (code, out, err) = run(runner(lake, until).args(["--state", &elsewhere]));
        assert_eq!(code, 0, "{err}");
        ids(&out)
    };
    assert_eq!(with_state("2026-11-21T00:00:00Z"), first, "--state {elsewhere}");
    assert!(with_state("2026-11-21T00:00:00Z").is_empty());
    let state_lock = lock_key.replace("_meta/write.lock", "_state/runs/run.lock");
    let held =
        tokio::runtime::Handle::current().block_on(store.head(&object_store::path::Path::from(state_lock.as_str())));
    assert!(matches!(held, Err(object_store::Error::NotFound { .. })), "the run lock is released: {held:?}");

    // A run lock left by a killed runner (lease over) is taken over; then two runners at once:
    // one runs the due windows, the other finds them done. Every id once, as on the local lake.
    plant_lock(store, &state_lock, chrono::Utc::now().timestamp_micros() - 1);
    let spawn = || runner(lake, "2026-11-22T00:00:00Z").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let mut later = Vec::new();
    for c in [a, b] {
        let o = c.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        later.extend(ids(&String::from_utf8_lossy(&o.stdout)));
    }
    later.sort();
    assert_eq!(later, sent(local, "2026-11-22T00:00:00Z"), "two runners on one remote state");
    let all: std::collections::BTreeSet<&String> = first.iter().chain(&later).collect();
    assert_eq!(all.len(), first.len() + later.len(), "an alert id was sent twice");

    // The alert store is the table `alerts` of the remote lake, and `run status` reads the ledgers.
    let out = sql_csv(lake, env, "SELECT count(*) AS n, count(DISTINCT alert_id) AS d FROM alerts");
    let n = all.len();
    assert_eq!(out.lines().nth(1), Some(format!("{n},{n}").as_str()), "{out}");
    let (code, out, err) = run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args(["run", "status", "--lake", lake]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sp_unusual_source_asn") && out.contains("2026-11-22T00:00:00"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_lake_and_inputs_on_moto_equal_a_local_lake() {
    if !available("moto_server", "pip install 'moto[server]'") {
        return;
    }
    let port = free_port();
    let _moto = start(Command::new("moto_server").args(["-H", "127.0.0.1", "-p", &port.to_string()]), port);
    let endpoint = format!("http://127.0.0.1:{port}");
    // Buckets: object_store cannot create them; moto takes an unsigned PUT.
    for bucket in ["wisp-exports", "wisp-lake"] {
        let put = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let resp = http(port, &put).unwrap_or_else(|e| panic!("creating bucket {bucket} on moto at {port}: {e}"));
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
    let store = s3(&endpoint, "wisp-exports");
    upload_samples(&store, "exports").await;
    let env = [
        ("AWS_ENDPOINT", endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let lake_store = s3(&endpoint, "wisp-lake");
    tokio::task::spawn_blocking(move || {
        round_trip(
            "s3://wisp-exports/exports/",
            "s3://wisp-lake/tenant/lake",
            &env,
            &lake_store,
            "tenant/lake/_meta/write.lock",
        );
        transient_failures_are_retried(port);
    })
    .await
    .unwrap();
}

/// Requests that fail with 503 (here every third, from a proxy in front of moto) are retried with
/// backoff: ingest and detection through the proxy give what they give without it.
fn transient_failures_are_retried(moto_port: u16) {
    let dir = tmp("os-flaky");
    let log = dir.join("failed.log");
    let py = r#"
import http.server, socketserver, sys, threading, urllib.request, urllib.error
target, log = sys.argv[1], sys.argv[2]
n = [0]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def any(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                body += self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            n[0] += 1
            fail = n[0] % 3 == 0
        if fail:
            with open(log, "a") as f:
                f.write(self.command + " " + self.path + "\n")
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        skip = ("content-length", "connection", "transfer-encoding", "expect")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        # urllib would add a form content type, which makes the emulator parse the body away.
        headers.setdefault("Content-Type", self.headers.get("Content-Type") or "application/octet-stream")
        req = urllib.request.Request(target + self.path, data=body if self.command in ("PUT", "POST") else None,
                                     method=self.command, headers=headers)
        try:
            r = urllib.request.urlopen(req)
        except urllib.error.HTTPError as e:
            r = e
        data = r.read()
        self.send_response(r.status)
        for k, v in r.headers.items():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = any
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = Command::new("python3")
        .args(["-c", py, &format!("http://127.0.0.1:{moto_port}")])
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let _proxy = Emulator(child, dir.join("none"));
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the proxy did not start: {line:?}"));
    let env = [
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let lake = "s3://wisp-lake/flaky";
    let (code, _, err) = run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args([
        "ingest",
        "--no-progress",
        "--lake",
        lake,
        "s3://wisp-exports/exports/",
    ]));
    assert_eq!(code, 0, "{err}");
    let failed = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(failed.lines().count() >= 5, "the proxy failed requests: {failed}");
    assert_eq!(
        counts(lake, &env),
        counts("s3://wisp-lake/tenant/lake", &env[..]),
        "rows through the flaky proxy: {err}"
    );
    assert_eq!(alert_ids(lake, &env), alert_ids("s3://wisp-lake/tenant/lake", &env), "detections through it");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_lake_and_inputs_on_azurite_equal_a_local_lake() {
    if !available("azurite-blob", "npm install -g azurite") {
        return;
    }
    let has_sdk = Command::new("python3")
        .args(["-c", "import azure.storage.blob"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !required(
        has_sdk,
        "the Python package azure-storage-blob",
        "pip install azure-storage-blob; it creates the containers",
    ) {
        return;
    }
    let port = free_port();
    let _azurite = start(
        Command::new("azurite-blob").args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
        ]),
        port,
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={endpoint}/devstoreaccount1;"
    );
    let py = format!(
        "from azure.storage.blob import BlobServiceClient as C\nc = C.from_connection_string('{conn}')\nfor n in ('insights-logs', 'lake'):\n    c.create_container(n)\n"
    );
    let (code, _, err) = run(Command::new("python3").args(["-c", &py]));
    assert_eq!(code, 0, "creating containers: {err}");
    let store = azurite(&endpoint, key, "insights-logs");
    upload_samples(&store, "tenantId=00000000/exports").await;
    let lake_store = azurite(&endpoint, key, "lake");
    let env = [
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
        ("AZURITE_BLOB_STORAGE_URL", endpoint.clone()),
        ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1".into()),
    ];
    tokio::task::spawn_blocking(move || {
        round_trip(
            "az://insights-logs/tenantId=00000000/exports",
            "az://lake/tenant",
            &env,
            &lake_store,
            "tenant/_meta/write.lock",
        );
        // The https and abfss forms name the same containers.
        let env2 = env.clone();
        assert_eq!(
            counts("abfss://lake@devstoreaccount1.dfs.core.windows.net/tenant", &env2),
            counts("az://lake/tenant", &env)
        );
        diagnostic_settings_append_blobs(&conn, &env);
    })
    .await
    .unwrap();
}

/// A sign-in record as diagnostic settings write it (one JSON object per line of PT1H.json).
fn diag_signin(id: &str, time: &str) -> String {
    serde_json::json!({"time": time, "category": "ServicePrincipalSignInLogs", "tenantId": "t1",
        "callerIpAddress": "45.0.0.1", "properties": {"id": id, "createdDateTime": time, "servicePrincipalId": "sp-1",
        "servicePrincipalName": "app", "appId": "app-1", "ipAddress": "45.0.0.1", "status": {"errorCode": 0}}})
    .to_string()
}

/// A container laid out exactly as diagnostic settings write it — append blobs at
/// `tenantId=…/y=…/m=…/d=…/h=…/m=00/PT1H.json` that grow during their hour — ingested by time
/// range (only those hours' folders), then again after blocks were appended: only the appended
/// tail is read.
fn diagnostic_settings_append_blobs(conn: &str, env: &[(&str, String)]) {
    let blob = |d: u32, h: u32| format!("tenantId=t1/y=2026/m=11/d={d:02}/h={h:02}/m=00/PT1H.json");
    let lines = |ids: &[(&str, &str)]| ids.iter().map(|(id, t)| diag_signin(id, t) + "\n").collect::<String>();
    // Python: creates the container and appends blocks to append blobs (object_store has no
    // append; diagnostic settings use append blobs).
    let append = |name: &str, body: &str| {
        let py = format!(
            "from azure.storage.blob import BlobServiceClient as C\n\
             c = C.from_connection_string('{conn}').get_container_client('insights-logs-serviceprincipalsigninlogs')\n\
             try:\n    c.create_container()\nexcept Exception:\n    pass\n\
             b = c.get_blob_client({name:?})\n\
             if not b.exists():\n    b.create_append_blob()\n\
             b.append_block({body:?}.encode())\n"
        );
        let (code, _, err) = run(Command::new("python3").args(["-c", &py]));
        assert_eq!(code, 0, "appending to {name}: {err}");
    };
    append(
        &blob(20, 9),
        &lines(&[("a1", "2026-11-20T09:01:00Z"), ("a2", "2026-11-20T09:20:00Z"), ("a3", "2026-11-20T09:59:00Z")]),
    );
    append(&blob(20, 10), &lines(&[("b1", "2026-11-20T10:05:00Z"), ("b2", "2026-11-20T10:06:00Z")]));
    let day19 = lines(&[("c1", "2026-11-19T10:30:00Z")]);
    append(&blob(19, 10), &day19);
    let source = "az://insights-logs-serviceprincipalsigninlogs/";
    let lake = "az://lake/diag";
    let ingest = |extra: &[&str]| {
        let (code, _, err) = run(wisp()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["ingest", "--no-progress", "--lake", lake, source])
            .args(extra));
        assert_eq!(code, 0, "{err}");
        err
    };
    let day = ["--since", "2026-11-20T00:00:00Z", "--until", "2026-11-20T23:59:59Z"];
    let err = ingest(&day);
    assert!(err.contains("read 5 records from 2 files"), "the 20th only: {err}");
    // The hour goes on: blocks appended to the open blob; the next ingest reads only them.
    let tail = lines(&[("b3", "2026-11-20T10:40:00Z"), ("b4", "2026-11-20T10:41:00Z")]);
    append(&blob(20, 10), &tail);
    let err = ingest(&day);
    let want = format!("read 2 records from 2 files ({} bytes; 1 unchanged files skipped)", tail.len());
    assert!(err.contains(&want), "only the tail is fetched: {err}");
    let err = ingest(&[]);
    let want = format!("read 1 records from 3 files ({} bytes; 2 unchanged", day19.len());
    assert!(err.contains(&want), "the 19th, outside the range before: {err}");
    let out = sql_csv(lake, env, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM signins");
    assert_eq!(out.lines().nth(1), Some("8,8"), "{out}");
}

/// `--asn-db`, `--watchlist NAME=URL`, `--rules-dir URL` and the remote lake's own
/// `_watchlists/` are read from the object store, with the same results as local files.
fn databases_watchlists_and_rules_by_url(
    lake: &str,
    inputs: &str,
    env: &[(&str, String)],
    store: &Arc<dyn ObjectStore>,
    lock_key: &str,
    local: &str,
) {
    let bucket: String = lake.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    let lake_prefix = lock_key.strip_suffix("/_meta/write.lock").unwrap();
    let put = |key: &str, body: &str| {
        let p = object_store::path::Path::from(key);
        tokio::runtime::Handle::current().block_on(store.put(&p, PutPayload::from(body.as_bytes().to_vec()))).unwrap();
    };
    let files = tmp("os-config");
    let both = |key: &str, body: &str| {
        put(key, body);
        let f = files.join(key.replace('/', "_"));
        std::fs::write(&f, body).unwrap();
        (format!("{bucket}/{key}"), f.display().to_string())
    };
    let (asn_url, asn_file) =
        both("config/asn.csv", "start_ip,end_ip,asn,organization\n52.160.0.0,52.160.255.255,64999,Remote Net\n");
    let (bad_url, bad_file) = both("config/bad.csv", "ip_or_range\n52.160.10.1\n");
    let rule = r#"/*
id = "wisp_remote_rule"
name = "Sign-in from a listed address"
description = "Test rule read from an object-store rules folder."
type = "query"
severity = "low"
risk_score = 10
interval = "1h"
lookback = "1h"
tables = ["signins"]
alert_key = ["id"]
*/
SELECT ts, id, source_ip FROM signins
WHERE ts > $window_start AND ts <= $window_end AND in_watchlist(source_ip, 'Bad')
"#;
    let (rules_url, _) = both("config/rules/wisp_remote_rule.sql", rule);
    let rules_dir = files.join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("wisp_remote_rule.sql"), rule).unwrap();
    let rules_url = rules_url.strip_suffix("/wisp_remote_rule.sql").unwrap().to_string();
    put(&format!("{lake_prefix}/_watchlists/LakeList.csv"), "ip_or_range\n10.9.0.0/16\n");
    std::fs::create_dir_all(std::path::Path::new(local).join("_watchlists")).unwrap();
    std::fs::write(std::path::Path::new(local).join("_watchlists/LakeList.csv"), "ip_or_range\n10.9.0.0/16\n").unwrap();

    let q = "SELECT asn_number('52.160.10.1') AS a, in_watchlist('52.160.10.1', 'Bad') AS b, \
             in_watchlist('10.9.1.1', 'LakeList') AS c, in_watchlist('10.8.1.1', 'LakeList') AS d";
    let (code, out, err) = run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args([
        "sql",
        "--format",
        "csv",
        "--lake",
        lake,
        "--asn-db",
        &asn_url,
        "--watchlist",
        &format!("Bad={bad_url}"),
        q,
    ]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().nth(1), Some("64999,true,true,false"), "{out}");
    let detect = |lake: &str, rules: &str, bad: &str| {
        let (code, out, err) = run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args([
            "detect",
            "--format",
            "jsonl",
            "--from",
            "2026-11-15T00:00:00Z",
            "--to",
            "2026-11-22T00:00:00Z",
            "--rules-dir",
            rules,
            "--rule",
            "wisp_remote_rule",
            "--watchlist",
            &format!("Bad={bad}"),
            "--lake",
            lake,
        ]));
        assert_eq!(code, 0, "{err}");
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let remote = detect(lake, &rules_url, &bad_url);
    assert!(!remote.is_empty(), "the listed address signs in in the samples");
    let ids = |v: &[String]| -> Vec<String> {
        v.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alert_id"].to_string()).collect()
    };
    assert_eq!(ids(&remote), ids(&detect(local, &rules_dir.display().to_string(), &bad_file)));
    // Enrichment at ingest from a database in the store: a new lake, the same ASNs as a local one.
    let remote2 = format!("{bucket}/enriched");
    let (code, _, err) = run(wisp().envs(env.iter().map(|(k, v)| (k, v))).args([
        "ingest",
        "--no-progress",
        "--asn-db",
        &asn_url,
        "--lake",
        &remote2,
        inputs,
    ]));
    assert_eq!(code, 0, "{err}");
    let local2 = tmp("os-enriched");
    let (code, _, err) = run(wisp()
        .args(["ingest", "--no-progress", "--asn-db", &asn_file, "--lake"])
        .arg(&local2)
        .arg(repo().join("data/samples")));
    assert_eq!(code, 0, "{err}");
    let listed = |lake: &str, env: &[(&str, String)]| {
        sql_csv(lake, env, "SELECT count(*) AS n FROM signins WHERE source_asn = 64999")
    };
    let n = listed(&remote2, env);
    assert_ne!(n.lines().nth(1), Some("0"), "{n}");
    assert_eq!(n, listed(&local2.display().to_string(), &[]));
    let _ = std::fs::remove_dir_all(&files);
    let _ = std::fs::remove_dir_all(&local2);
}

/// `WISP_STORE_STATS=1` counts what a command asked of the store. A query that scans the sign-ins
/// twice makes fewer reads than two queries that scan them once: the second scan reuses the
/// Parquet footers already fetched (DataFusion's per-process file-metadata cache).
fn footers_are_fetched_once(lake: &str, env: &[(&str, String)]) {
    let requests = |q: &str| -> (u64, String) {
        let (code, _, err) = run(wisp()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("WISP_STORE_STATS", "1")
            .args(["sql", "--format", "csv", "--lake", lake, q]));
        assert_eq!(code, 0, "{err}");
        let line = err.lines().find(|l| l.starts_with("object store: ")).unwrap_or_else(|| panic!("{err}"));
        // Reads: GET + ranged GET + HEAD.
        let inner = &line[line.find('(').unwrap() + 1..line.find(')').unwrap()];
        let count = |kind: &str| -> u64 {
            inner
                .split(", ")
                .find(|p| p.ends_with(kind) && p.len() == p.find(' ').unwrap() + 1 + kind.len())
                .map_or(0, |p| p.split(' ').next().unwrap().parse().unwrap())
        };
        (count("GET") + count("ranged GET") + count("HEAD"), line.to_string())
    };
    let (one, l1) = requests("SELECT count(DISTINCT correlation_id) AS n FROM signins");
    let (two, l2) = requests(
        "SELECT (SELECT count(DISTINCT correlation_id) FROM signins) + (SELECT count(DISTINCT app_id) FROM signins) AS n",
    );
    eprintln!("one scan: {l1}\ntwo scans: {l2}");
    assert!(l1.contains("MB fetched") && one > 0, "{l1}");
    assert!(two < 2 * one, "the second scan re-fetched the footers: {l1} / {l2}");
}
