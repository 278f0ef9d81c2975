//! The same detections and hunts on an Apache Ballista cluster: a scheduler and two executors
//! (`wisp cluster …`, child processes on loopback) run every detection's backtest, a hunt,
//! scheduled detection and queries with wisp's functions and a watchlist over a generated small
//! tenant; each result equals the in-process engine's. An executor killed mid-query gives a
//! failed command with the reason, or (Ballista ran its tasks again) the complete result — never
//! a partial one reported as complete.
#![cfg(feature = "cluster")]

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cluster process, killed when dropped; its log is a file.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(args: &[String], log: PathBuf, env: &[(&str, String)]) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = wisp()
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `text` (the process must stay up meanwhile).
    fn wait_for(&mut self, text: &str) {
        let t0 = Instant::now();
        while !self.log().contains(text) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the process exited ({status}) before logging '{text}':\n{}", self.log());
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "no '{text}' within 60 s:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    engine: String,
    scheduler: Proc,
    executors: Vec<Proc>,
}

impl Cluster {
    fn logs(&self) -> String {
        let mut s = format!("--- scheduler\n{}", self.scheduler.log());
        for (i, e) in self.executors.iter().enumerate() {
            s.push_str(&format!("\n--- executor {i}\n{}", e.log()));
        }
        s
    }
}

/// A scheduler and `n` executors on loopback, each with `functions` (the same flags everywhere).
fn cluster(dir: &Path, n: usize, functions: &[String]) -> Cluster {
    cluster_with_env(dir, n, functions, &[])
}

/// A cluster whose processes get `env` (object-store credentials, say).
fn cluster_with_env(dir: &Path, n: usize, functions: &[String], env: &[(&str, String)]) -> Cluster {
    let port = free_port();
    let mut args: Vec<String> =
        ["cluster", "scheduler", "--bind", &format!("127.0.0.1:{port}"), "--executor-timeout-secs", "5"]
            .map(String::from)
            .to_vec();
    args.extend(functions.iter().cloned());
    let mut scheduler = Proc::start(&args, dir.join("scheduler.log"), env);
    scheduler.wait_for("listening on");
    let mut executors = Vec::new();
    for i in 0..n {
        let work = dir.join(format!("executor-{i}"));
        std::fs::create_dir_all(&work).unwrap();
        let mut args: Vec<String> = vec![
            "cluster".into(),
            "executor".into(),
            "--scheduler".into(),
            format!("127.0.0.1:{port}"),
            "--bind".into(),
            format!("127.0.0.1:{}", free_port()),
            "--grpc-port".into(),
            free_port().to_string(),
            "--concurrent-tasks".into(),
            "2".into(),
            "--heartbeat-secs".into(),
            "1".into(),
            "--work-dir".into(),
            work.display().to_string(),
        ];
        args.extend(functions.iter().cloned());
        let mut e = Proc::start(&args, dir.join(format!("executor-{i}.log")), env);
        e.wait_for("Connected to scheduler");
        executors.push(e);
    }
    Cluster { engine: format!("ballista://127.0.0.1:{port}"), scheduler, executors }
}

/// A lake of the small generated tenant (3 days ending 2026-11-20) and a watchlist file.
fn tenant(name: &str) -> (PathBuf, PathBuf) {
    let out = tmp(name);
    let (code, _, err) = run(wisp()
        .args(["gen", "--profile", "small", "--days", "3", "--as", "lake", "--no-progress", "--out"])
        .arg(&out));
    assert_eq!(code, 0, "{err}");
    let lake = out.join("lake");
    // The allowlist holds a range of the tenant's own addresses, so it changes what rules see.
    let (code, ips, err) = run(wisp()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&lake)
        .arg("SELECT DISTINCT source_ip FROM signins WHERE source_ip IS NOT NULL ORDER BY source_ip LIMIT 40"));
    assert_eq!(code, 0, "{err}");
    let list = out.join("allow.csv");
    let entries: Vec<&str> = ips.lines().skip(1).step_by(2).collect();
    std::fs::write(&list, format!("ip_or_range,comment\n{}\n10.0.0.0/8,lab\n", entries.join(",x\n") + ",x")).unwrap();
    (lake, list)
}

/// A command on the lake, with `engine` (`None`: in-process); its stdout (it must succeed).
fn on(engine: Option<&str>, lake: &Path, args: &[&str]) -> String {
    let mut cmd = wisp();
    cmd.args(args).arg("--lake").arg(lake);
    if let Some(e) = engine {
        cmd.args(["--engine", e]);
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "wisp {args:?} (engine {engine:?}) failed: {err}");
    out
}

/// JSON lines without the fields that are the time of the run or of sending, sorted.
fn alerts(jsonl: &str) -> Vec<String> {
    let mut v: Vec<String> = jsonl
        .lines()
        .map(|l| {
            let mut j: serde_json::Value = serde_json::from_str(l).unwrap();
            j.as_object_mut().unwrap().remove("detected_at");
            j.as_object_mut().unwrap().remove("TimeGenerated");
            j.to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn detections_hunts_and_queries_on_a_cluster_equal_the_local_engine() {
    let (lake, list) = tenant("cluster-tenant");
    let wl = format!("NetworkAllowlist={}", list.display());
    let functions = vec!["--watchlist".to_string(), wl.clone()];
    let dir = tmp("cluster-procs");
    let c = cluster(&dir, 2, &functions);
    let engine = Some(c.engine.as_str());
    let check = |what: &str, local: String, remote: String| {
        assert!(
            local == remote,
            "{what}: the cluster's result differs\nlocal:\n{local}\ncluster:\n{remote}\n{}",
            c.logs()
        );
    };

    // Every detection's backtest over the three days.
    let detect = [
        "detect",
        "--from",
        "2026-11-17T00:00:00Z",
        "--to",
        "2026-11-20T00:00:00Z",
        "--format",
        "jsonl",
        "--watchlist",
        &wl,
    ];
    let local = alerts(&on(None, &lake, &detect));
    let remote = alerts(&on(engine, &lake, &detect));
    assert!(local.len() > 10, "the tenant should alert: {local:?}");
    for rule in [
        "sp_unusual_source_asn",
        "sp_credential_added_after_signin",
        "sp_keyvault_read_from_new_source",
        "identity_signin_from_suspicious_source",
    ] {
        assert!(local.iter().any(|a| a.contains(&format!("\"rule_id\":\"{rule}\""))), "no {rule} alert");
    }
    check("detect backtest", local.join("\n"), remote.join("\n"));

    // One scheduled run (each rule over its own window).
    let at = ["detect", "--at", "2026-11-19T16:00:00Z", "--format", "jsonl", "--watchlist", &wl];
    check("detect --at", alerts(&on(None, &lake, &at)).join("\n"), alerts(&on(engine, &lake, &at)).join("\n"));

    // A hunt, ordered as the hunt orders it.
    let hunt = [
        "hunt",
        "sp_rare_action_multiple_ips",
        "--from",
        "2026-11-17T00:00:00Z",
        "--to",
        "2026-11-20T00:00:00Z",
        "--format",
        "csv",
        "--watchlist",
        &wl,
    ];
    let local = on(None, &lake, &hunt);
    assert!(local.lines().count() > 1, "the hunt should find rows: {local}");
    check("hunt", local, on(engine, &lake, &hunt));

    // Queries: the watchlist as a function and as a table, the IP functions, a join and a sort.
    let q = "SELECT service_principal_id, count(*) AS n, \
             sum(CASE WHEN in_watchlist(source_ip, 'NetworkAllowlist') THEN 1 ELSE 0 END) AS allowed, \
             sum(CASE WHEN is_private_ip(source_ip) THEN 1 ELSE 0 END) AS private, \
             count(DISTINCT to_ip(source_ip)) AS ips \
             FROM signins s JOIN (SELECT DISTINCT range_start FROM NetworkAllowlist) w ON s.source_ip >= w.range_start \
             GROUP BY service_principal_id ORDER BY n DESC, service_principal_id LIMIT 50";
    let sql = ["sql", "--format", "csv", "--watchlist", &wl, q];
    let local = on(None, &lake, &sql);
    assert!(local.lines().count() > 5, "{local}");
    check("sql", local, on(engine, &lake, &sql));

    // Scheduled detection: the same alerts sent, each once.
    let state_local = tmp("cluster-run-local");
    let state_remote = tmp("cluster-run-remote");
    let run_args = |state: &Path, out: &Path| {
        vec![
            "run".to_string(),
            "--once".into(),
            "--since".into(),
            "2026-11-19T12:00:00Z".into(),
            "--until".into(),
            "2026-11-20T00:00:00Z".into(),
            "--state".into(),
            state.display().to_string(),
            "--sink".into(),
            format!("jsonl:{}", out.display()),
            "--watchlist".into(),
            wl.clone(),
        ]
    };
    let sent = |state: &Path, engine: Option<&str>| {
        let out = state.join("sent.jsonl");
        let args = run_args(state, &out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        on(engine, &lake, &args);
        alerts(&std::fs::read_to_string(&out).unwrap_or_default())
    };
    let local = sent(&state_local, None);
    assert!(!local.is_empty());
    check("run", local.join("\n"), sent(&state_remote, engine).join("\n"));

    // The shell: statements from stdin, on the cluster.
    let shell = |engine: Option<&str>| {
        use std::io::Write;
        let mut cmd = wisp();
        cmd.args(["shell", "--format", "csv", "--watchlist", &wl, "--lake"]).arg(&lake);
        if let Some(e) = engine {
            cmd.args(["--engine", e]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stmt =
            b"SELECT day, count(*) AS n, count(DISTINCT app_id) AS apps FROM signins GROUP BY day ORDER BY day;\n\\q\n";
        child.stdin.take().unwrap().write_all(stmt).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let local = shell(None);
    assert!(local.contains("2026-11-19"), "{local}");
    check("shell", local, shell(engine));

    // A command whose watchlists differ from the cluster's is refused, naming both.
    let (code, _, err) = run(wisp().args(["sql", "--engine", &c.engine, "--lake"]).arg(&lake).arg("SELECT 1"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("loaded other functions") && err.contains("NetworkAllowlist (21 entries"), "{err}");

    // Both executors did work.
    for (i, e) in c.executors.iter().enumerate() {
        assert!(e.log().contains("Execute task"), "executor {i} ran no task:\n{}", c.logs());
    }
}

#[test]
fn an_executor_lost_mid_query_never_gives_a_partial_result() {
    let (lake, _) = tenant("cluster-kill-tenant");
    let dir = tmp("cluster-kill-procs");
    let mut c = cluster(&dir, 2, &[]);
    // Long enough to be cut: every pair of sign-ins of a principal within a day.
    let q = "SELECT a.service_principal_id, count(*) AS pairs FROM signins a JOIN signins b \
             ON a.service_principal_id = b.service_principal_id AND a.day = b.day \
             GROUP BY a.service_principal_id ORDER BY a.service_principal_id";
    let local = on(None, &lake, &["sql", "--format", "csv", q]);
    let mut child = wisp()
        .args(["sql", "--format", "csv", "--engine", &c.engine, "--lake"])
        .arg(&lake)
        .arg(q)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill one executor once it runs a task of the query.
    let t0 = Instant::now();
    while !c.executors[0].log().contains("Execute task") && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    c.executors[0].kill();
    assert!(
        child.try_wait().unwrap().is_none(),
        "the query ended before the executor was killed: nothing was tested\n{}",
        c.logs()
    );
    let t1 = Instant::now();
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        assert!(t1.elapsed() < Duration::from_secs(240), "the query neither failed nor finished:\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        assert_eq!(stdout, local, "a complete result after the loss must equal the local one\n{stderr}");
        eprintln!("the cluster ran the lost tasks again: complete result");
    } else {
        assert!(stderr.contains("error"), "a failure must say why: {stderr}");
        assert!(
            stdout.lines().count() <= 1 || stdout != local,
            "a failed query must not print the full result as if complete"
        );
        eprintln!("the query failed with: {stderr}");
    }
}

#[test]
fn a_missing_watchlist_or_database_stops_a_cluster_process_at_start() {
    for role in [
        vec!["cluster", "scheduler", "--bind", "127.0.0.1:1"],
        vec!["cluster", "executor", "--scheduler", "127.0.0.1:1"],
    ] {
        for flag in [["--watchlist", "NetworkAllowlist=/nonexistent/allow.csv"], ["--asn-db", "/nonexistent/asn.mmdb"]]
        {
            let t0 = Instant::now();
            let (code, _, err) = run(wisp().args(&role).args(flag));
            assert_eq!(code, 1, "{role:?} {flag:?}: {err}");
            assert!(err.contains("/nonexistent/"), "the error must name the file: {err}");
            assert!(t0.elapsed() < Duration::from_secs(10), "must fail at start, not after connecting");
        }
    }
    let (code, _, err) = run(wisp().args(["sql", "--lake", "/nonexistent", "--engine", "127.0.0.1:50050", "SELECT 1"]));
    assert_eq!(code, 1);
    assert!(err.contains("ballista://"), "{err}");
}

/// The lake in an object store (the S3 API of `moto_server`, started here on loopback): the
/// scheduler lists it and the executors read it with credentials from their environment, and the
/// detections equal those of the same exports ingested into a local lake. SKIPPED without
/// moto_server unless WISP_REQUIRE_EMULATORS is set (`.ci/run` installs it and sets it).
#[test]
fn executors_read_a_lake_in_an_object_store() {
    if !available("moto_server", "pip install 'moto[server]'") {
        return;
    }
    let dir = tmp("cluster-s3");
    let port = free_port();
    let _moto = start(Command::new("moto_server").args(["-H", "127.0.0.1", "-p", &port.to_string()]), port);
    // The bucket: an unsigned PUT.
    let put =
        format!("PUT /wisp-lake HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let resp = http(port, &put).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let env: Vec<(&str, String)> = vec![
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
    ];
    let ingest = |lake: &str| {
        let (code, _, err) = run(wisp()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["ingest", "--no-progress", "--lake", lake])
            .arg(repo().join("data/samples")));
        assert_eq!(code, 0, "{err}");
    };
    let local = dir.join("lake");
    ingest(local.to_str().unwrap());
    let remote = "s3://wisp-lake/tenant";
    ingest(remote);
    let c = cluster_with_env(&dir, 2, &[], &env);
    let detect = |lake: &str, engine: Option<&str>| {
        let mut cmd = wisp();
        cmd.envs(env.iter().map(|(k, v)| (k, v))).args([
            "detect",
            "--from",
            "2026-11-15T00:00:00Z",
            "--to",
            "2026-11-22T00:00:00Z",
            "--format",
            "jsonl",
            "--lake",
            lake,
        ]);
        if let Some(e) = engine {
            cmd.args(["--engine", e]);
        }
        let (code, out, err) = run(&mut cmd);
        assert_eq!(code, 0, "{err}\n{}", c.logs());
        alerts(&out)
    };
    let want = detect(local.to_str().unwrap(), None);
    assert!(!want.is_empty());
    let got = detect(remote, Some(&c.engine));
    assert!(want == got, "the cluster's alerts over the S3 lake differ:\n{want:?}\n{got:?}\n{}", c.logs());
    for (i, e) in c.executors.iter().enumerate() {
        assert!(e.log().contains("Execute task"), "executor {i} ran no task:\n{}", c.logs());
    }
}
