//! The command line end to end: the README's demo, exit codes, read-only SQL, pivot, writers racing
//! and killed, closed pipes, bad databases. One file on purpose: every test drives the wisp
//! binary through the same `run`/`tmp` helpers.

mod common;
use common::*;

/// Ingests the bundled samples into `lake` through the CLI.
fn ingest_samples(lake: &std::path::Path) {
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(lake).arg(repo().join("data/samples")));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn demo_finds_every_detection_in_the_samples() {
    let lake = tmp("demo");
    let (code, out, err) = run(wisp().args(["demo", "--lake"]).arg(&lake));
    assert_eq!(code, 0, "{err}");
    for id in [
        "sp_unusual_source_asn",
        "sp_rare_action_multiple_ips",
        "sp_failed_signins",
        "sp_credential_added_after_signin",
        "sp_risk_event_stacking",
        "identity_signin_from_suspicious_source",
    ] {
        let line =
            out.lines().find(|l| l.trim_start().starts_with(id)).unwrap_or_else(|| panic!("{id} missing:\n{out}"));
        assert!(!line.contains(" 0 alert"), "{line}");
    }
    assert!(out.contains("critical"), "{out}");
}

#[test]
fn demo_without_lake_removes_its_temporary_lake() {
    // Its lake goes in the temporary directory (TMPDIR here) and is removed at exit, when the
    // demo went well and when it failed.
    let tmpdir = tmp("demo-tmpdir");
    let (code, out, err) = run(wisp().env("TMPDIR", &tmpdir).arg("demo"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(temporary, removed at exit; --lake DIR keeps one)"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("sp_failed_signins")), "{out}");
    let left: Vec<_> = std::fs::read_dir(&tmpdir).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let (code, _, err) = run(wisp().env("TMPDIR", &tmpdir).args(["demo", "--data"]).arg(tmpdir.join("nothing")));
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("samples could not be read") && err.contains("--data"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&tmpdir).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left behind after an error: {left:?}");
}

#[test]
fn ingest_exit_codes_and_summary_json() {
    let lake = tmp("cli-lake");
    let dir = tmp("cli-in");
    std::fs::write(dir.join("bad.json"), "{\"truncated\": \n").unwrap();
    let summary = dir.join("s.json");
    let (code, _, err) = run(wisp()
        .args(["ingest", "--no-progress", "--lake"])
        .arg(&lake)
        .arg(dir.join("bad.json"))
        .arg(dir.join("missing.json"))
        .arg("--summary-json")
        .arg(&summary));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.json"), "{err}");
    let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    for k in ["read", "written", "rejected", "duplicates"] {
        assert!(s.get(k).is_some(), "{k} missing in {s}");
    }
    assert_eq!(s["read"], 1);
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--strict", "--lake"]).arg(&lake).arg(dir.join("bad.json")));
    assert_eq!(code, 0, "unchanged file: nothing read, nothing rejected: {err}");
    std::fs::write(dir.join("bad2.json"), "not json at all\n").unwrap();
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--strict", "--lake"]).arg(&lake).arg(dir.join("bad2.json")));
    assert_eq!(code, 3, "{err}");
}

#[test]
fn sql_is_read_only_and_formats_work() {
    let lake = tmp("cli-sql");
    ingest_samples(&lake);
    for q in [
        "CREATE TABLE x AS SELECT 1",
        "INSERT INTO signins SELECT * FROM signins",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let (code, _, err) = run(wisp().args(["sql", "--lake"]).arg(&lake).arg(q));
        assert_eq!(code, 1, "{q} should be refused");
        assert!(err.contains("not supported") || err.contains("not allowed") || err.contains("read"), "{q}: {err}");
    }
    let (code, out, err) = run(wisp()
        .args(["sql", "--format", "jsonl", "--lake"])
        .arg(&lake)
        .arg("SELECT id, source_ip FROM signins WHERE id = 'g-sp-0001'"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), r#"{"id":"g-sp-0001","source_ip":"185.220.101.45"}"#);
    let (code, out, err) =
        run(wisp().args(["sql", "--format", "csv", "--lake"]).arg(&lake).arg("SELECT count(*) AS n FROM signins"));
    assert_eq!((code, out.trim()), (0, "n\n9"));
    // The summary says how long the query took and how much of it was planning.
    let summary = err.lines().last().unwrap_or_default();
    let secs = |after: &str| -> f64 {
        let rest =
            &summary[summary.find(after).unwrap_or_else(|| panic!("no '{after}' in {summary:?}")) + after.len()..];
        rest[..rest.find('s').unwrap()].parse().unwrap_or_else(|e| panic!("{e}: {summary:?}"))
    };
    let (total, planning) = (secs(" in "), secs("(planning "));
    assert!(summary.starts_with("1 row(s), read ") && summary.ends_with("s)"), "{summary}");
    assert!(planning > 0.0 && planning <= total, "{summary}");
    let (code, out, err) = run(wisp()
        .args(["detect", "--rule", "sp_failed_signins", "--at", "2026-11-21T00:00:00Z", "--format", "jsonl", "--lake"])
        .arg(&lake));
    assert_eq!(code, 0, "{err}");
    let alert: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(alert["rule_id"], "sp_failed_signins");
    assert_eq!(alert["window_start"], "2026-11-20T00:00:00Z");
    // Each run says what it read.
    assert!(err.contains("read ") && err.contains(" rows, ") && err.contains(" file(s)"), "{err}");
    // With first-seen state: the same alerts; the state is built once, then current.
    let ids = |out: &str| {
        let mut v: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["alert_id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let at = ["detect", "--at", "2026-11-19T16:00:00Z", "--format", "jsonl", "--lake"];
    let (_, plain, _) = run(wisp().args(at).arg(&lake));
    let (code, first, err) = run(wisp().args(at).arg(&lake).arg("--state"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("sp_unusual_source_asn: first-seen state Built"), "{err}");
    let (_, again, err) = run(wisp().args(at).arg(&lake).arg("--state"));
    assert!(err.contains("first-seen state Current"), "{err}");
    assert_eq!(ids(&first), ids(&plain));
    assert_eq!(ids(&again), ids(&plain));
    assert!(lake.join("_state/sp_unusual_source_asn/state.json").exists());
    let (code, _, err) = run(wisp().args(["rules", "lint"]));
    assert_eq!(code, 0, "{err}");
}

/// DataFusion options set from the environment reach the session; a bad one is an error that
/// names it.
#[test]
fn datafusion_options_from_the_environment() {
    let lake = tmp("cli-df-options");
    ingest_samples(&lake);
    let q = "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'";
    let (code, out, err) = run(wisp()
        .env("WISP_DATAFUSION_OPTIONS", " datafusion.execution.batch_size = 123 , datafusion.optimizer.max_passes=2")
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&lake)
        .arg(q));
    assert_eq!((code, out.trim()), (0, "value\n123"), "{err}");
    for bad in ["datafusion.execution.no_such_option=1", "datafusion.execution.batch_size=many", "batch_size"] {
        let (code, _, err) =
            run(wisp().env("WISP_DATAFUSION_OPTIONS", bad).args(["sql", "--lake"]).arg(&lake).arg("SELECT 1"));
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(err.contains("WISP_DATAFUSION_OPTIONS") && err.contains(bad), "{bad}: {err}");
    }
}

#[test]
fn pivot_fills_audit_caller_ip_from_the_matching_signin() {
    let dir = tmp("pivot-in");
    let lines = [
        r#"{"time":"2026-05-01T10:00:00Z","category":"ServicePrincipalSignInLogs","correlationId":"c-1","properties":{"id":"s1","createdDateTime":"2026-05-01T10:00:00Z","servicePrincipalId":"sp-1","servicePrincipalName":"builder","appId":"app-1","ipAddress":"45.1.1.1","correlationId":"c-1","status":{"errorCode":0}}}"#,
        r#"{"time":"2026-05-01T10:01:00Z","category":"AuditLogs","correlationId":"c-1","properties":{"id":"a1","activityDisplayName":"Add member to role","activityDateTime":"2026-05-01T10:01:00Z","result":"success","correlationId":"c-1","initiatedBy":{"app":{"appId":"app-1","servicePrincipalId":"sp-1","displayName":"builder"}},"targetResources":[{"id":"u-9","type":"User","displayName":"victim"}]}}"#,
        r#"{"time":"2026-05-01T11:00:00Z","category":"AuditLogs","correlationId":"c-2","properties":{"id":"a2","activityDisplayName":"Update application","activityDateTime":"2026-05-01T11:00:00Z","result":"success","correlationId":"c-2","initiatedBy":{"app":{"appId":"app-1","servicePrincipalId":"sp-1","displayName":"builder"}},"targetResources":[{"id":"obj-1","type":"Application","displayName":"other"}]}}"#,
    ];
    std::fs::write(dir.join("PT1H.json"), lines.join("\n")).unwrap();
    let lake = tmp("pivot-lake");
    let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(dir.join("PT1H.json")));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(wisp()
        .args([
            "pivot",
            "sp",
            "BUILDER",
            "--from",
            "2026-05-01T00:00:00Z",
            "--to",
            "2026-05-02T00:00:00Z",
            "--format",
            "jsonl",
            "--lake",
        ])
        .arg(&lake));
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[1]["source_ip"], "45.1.1.1");
    assert_eq!(rows[1]["ip_from"], "sign-in with the same correlation id");
    assert_eq!(rows[2]["source_ip"], "45.1.1.1");
    assert_eq!(rows[2]["ip_from"], "latest earlier sign-in");
}

/// `wisp shell` over `lake` with CSV results, its history in the lake's folder, all three streams
/// piped.
fn spawn_shell(lake: &std::path::Path) -> std::process::Child {
    wisp()
        .args(["shell", "--format", "csv", "--history"])
        .arg(lake.join("history"))
        .arg("--lake")
        .arg(lake)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn shell_reads_statements_from_stdin() {
    use std::io::Write;
    let lake = tmp("shell");
    ingest_samples(&lake);
    let hist = lake.join("history");
    let mut child = spawn_shell(&lake);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(*) AS n\n  FROM signins;\nDROP TABLE signins;\nSELECT 'still' AS alive;\n\\q\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("n\n9"), "{out}");
    assert!(out.contains("alive\nstill"), "{out}");
    assert!(err.contains("error:"), "DROP must be refused: {err}");
    assert!(std::fs::read_to_string(&hist).unwrap().contains("SELECT count(*)"));
}

/// A shell open while an ingest and a compaction run sees the lake as it is at each statement:
/// DataFusion's default list-files cache (kept for the runtime's life) would answer the second
/// statement from the first one's listing — the new rows missing, the compacted-away files named.
#[test]
fn a_shell_sees_what_was_ingested_and_compacted_since_it_opened() {
    use std::io::{BufRead, Write};
    let lake = tmp("shell-live");
    let samples = repo().join("data/samples");
    let ingest = |file: &str| {
        let (code, _, err) = run(wisp()
            .args(["ingest", "--no-progress", "--compact-after", "0", "--lake"])
            .arg(&lake)
            .arg(samples.join(file)));
        assert_eq!(code, 0, "{err}");
    };
    ingest("graph-signins.json");
    let mut child = spawn_shell(&lake);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut count = |stdin: &mut std::process::ChildStdin| -> String {
        stdin.write_all(b"SELECT count(*) AS n FROM signins;\n").unwrap();
        stdin.flush().unwrap();
        let mut header = String::new();
        out.read_line(&mut header).unwrap();
        assert_eq!(header.trim(), "n");
        let mut n = String::new();
        out.read_line(&mut n).unwrap();
        n.trim().to_string()
    };
    let first = count(&mut stdin);
    ingest("la-AADServicePrincipalSignInLogs.json");
    let second = count(&mut stdin);
    let (code, _, err) = run(wisp().args(["compact", "--force", "--lake"]).arg(&lake));
    assert_eq!(code, 0, "{err}");
    let third = count(&mut stdin);
    stdin.write_all(b"\\q\n").unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("error"), "{err}");
    let (first, second): (u64, u64) = (first.parse().unwrap(), second.parse().unwrap());
    assert!(first > 0 && second > first, "the rows ingested since the shell opened: {first} then {second}");
    assert_eq!(third, second.to_string(), "the compacted lake's rows");
}

#[test]
fn read_only_commands_refuse_a_missing_lake_and_misused_flags() {
    let missing = tmp("no-lake-parent").join("lakee");
    let cmds: Vec<Vec<&str>> = vec![
        vec!["sql", "SELECT 1"],
        vec!["detect"],
        vec!["hunt", "sp_rare_action_multiple_ips"],
        vec!["pivot", "sp", "someone"],
        vec!["shell"],
        vec!["rules", "lint"],
    ];
    for c in &cmds {
        let (code, out, err) = run(wisp().args(c).arg("--lake").arg(&missing));
        assert_eq!(code, 1, "{c:?}: {err}");
        assert!(err.contains("no lake at") && err.contains("wisp ingest"), "{c:?}: {err}");
        assert!(out.is_empty(), "{c:?}: {out}");
        assert!(!missing.exists(), "{c:?} created the lake folder");
    }
    let empty = tmp("empty-folder");
    let (code, _, err) = run(wisp().args(["sql", "SELECT 1", "--lake"]).arg(&empty));
    assert_eq!(code, 1);
    assert!(err.contains("is not a wisp lake"), "{err}");

    let lake = tmp("cli-flags");
    ingest_samples(&lake);
    for (args, want) in [
        (vec!["detect", "--from", "2026-11-21T00:00:00Z", "--to", "2026-11-20T00:00:00Z"], "is after --to"),
        (
            vec!["hunt", "sp_failed_signins", "--from", "2026-11-21T00:00:00Z", "--to", "2026-11-20T00:00:00Z"],
            "is after",
        ),
        (vec!["detect", "--to", "2026-11-20T00:00:00Z"], "--to needs --from"),
        (vec!["detect", "--at", "2026-11-20T00:00:00Z", "--last", "1d"], "exclude each other"),
        (vec!["detect", "--last", "99999999d"], "outside the range"),
        (vec!["hunt", "sp_failed_signins", "--last", "99999999d"], "outside the range"),
        (vec!["pivot", "sp", "x", "--last", "99999999d"], "outside the range"),
        (vec!["detect", "--at", "9999-12-31T23:59:59Z"], "outside the range"),
        (vec!["detect", "--last", "5x"], "bad duration"),
        (vec!["detect", "--no-such-flag"], "unexpected argument"),
    ] {
        let (code, _, err) = run(wisp().args(&args).arg("--lake").arg(&lake));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Every subcommand's help ends with worked examples.
    for c in ["ingest", "sql", "demo", "detect", "rules", "hunt", "pivot", "shell", "gen"] {
        let (code, out, _) = run(wisp().args([c, "--help"]));
        assert_eq!(code, 0);
        let tail = &out[out.find("Examples:").unwrap_or_else(|| panic!("{c}: no examples\n{out}"))..];
        assert!(tail.lines().filter(|l| l.trim_start().starts_with("wisp ")).count() >= 2, "{c}: {tail}");
    }
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::io::{BufRead, BufReader};
    let lake = tmp("cli-pipe");
    ingest_samples(&lake);
    for format in ["jsonl", "csv", "table", "json"] {
        let mut child = wisp()
            .args(["sql", "--format", format, "--lake"])
            .arg(&lake)
            .arg("SELECT value, 'a row long enough to fill the pipe quickly' AS pad FROM generate_series(1, 200000)")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(!first.is_empty());
        // The reader is gone (as `| head -1` does); wisp exits quietly with 0.
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{format}: {err}");
        assert!(!err.contains("error") && !err.contains("panicked"), "{format}: {err}");
    }
    let mut child = wisp().args(["rules", "list"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Raw exports of a small generated tenant plus a file of bad records: input for the writer tests.
fn writer_input(name: &str) -> std::path::PathBuf {
    let out = tmp(name);
    let (code, _, err) =
        run(wisp().args(["gen", "--profile", "small", "--days", "3", "--no-progress", "--out"]).arg(&out));
    assert_eq!(code, 0, "{err}");
    let bad: String = (0..200).map(|i| format!("{{\"broken\": {i}\n")).collect();
    std::fs::write(out.join("raw/bad.json"), bad).unwrap();
    out.join("raw")
}

/// Rows per table, distinct keys per table, and rejected records: what a lake holds.
fn lake_counts(lake: &std::path::Path) -> (String, usize) {
    let sql = "SELECT 'signins' AS t, count(*) AS n, count(DISTINCT _key) AS k FROM signins \
               UNION ALL SELECT 'audit', count(*), count(DISTINCT _key) FROM audit \
               UNION ALL SELECT 'o365', count(*), count(DISTINCT _key) FROM o365_audit \
               UNION ALL SELECT 'graph', count(*), count(DISTINCT _key) FROM graph_activity ORDER BY t";
    let (code, out, err) = run(wisp().args(["sql", "--format", "csv", "--lake"]).arg(lake).arg(sql));
    assert_eq!(code, 0, "{err}");
    let mut rejects = 0;
    for f in files_under(&lake.join("_rejected")) {
        rejects += std::fs::read_to_string(lake.join("_rejected").join(f)).unwrap().lines().count();
    }
    (out, rejects)
}

#[test]
fn two_ingests_at_once_write_each_row_once() {
    let raw = writer_input("race-in");
    let clean = tmp("race-clean");
    let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&clean).arg(&raw));
    assert_eq!(code, 0, "{err}");
    let lake = tmp("race-lake");
    let spawn = || {
        wisp()
            .args(["ingest", "--no-progress", "--lake"])
            .arg(&lake)
            .arg(&raw)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let waited =
        [&a, &b].iter().any(|o| String::from_utf8_lossy(&o.stderr).contains("waiting for the lake's write lock"));
    let (counts, rejects) = lake_counts(&lake);
    assert_eq!((counts.clone(), rejects), lake_counts(&clean), "waited: {waited}");
    for line in counts.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[1], f[2], "duplicate keys in {line}");
    }
    assert!(!lake.join("_meta/write.lock").exists());
}

#[test]
fn a_killed_ingest_rerun_gives_the_clean_lake() {
    let raw = writer_input("kill-in");
    let clean = tmp("kill-clean");
    let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&clean).arg(&raw));
    assert_eq!(code, 0, "{err}");
    let want = lake_counts(&clean);
    for delay_ms in [150u64, 400, 900] {
        let lake = tmp("kill-lake");
        let mut child = wisp()
            .args(["ingest", "--no-progress", "--lake"])
            .arg(&lake)
            .arg(&raw)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // Debris a kill at a rename leaves, and rejects of a run that never wrote its manifest.
        std::fs::create_dir_all(lake.join("signins/day=2026-11-19")).unwrap();
        std::fs::write(lake.join("signins/day=2026-11-19/x-00001.parquet#1"), b"half").unwrap();
        std::fs::create_dir_all(lake.join("_rejected/day=2026-11-29")).unwrap();
        std::fs::write(lake.join("_rejected/day=2026-11-29/20261129T000000.000000Z-1-00001.jsonl"), "{}\n").unwrap();
        let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(&raw));
        assert_eq!(code, 0, "{err}");
        assert_eq!(lake_counts(&lake), want, "killed after {delay_ms} ms: {err}");
        assert!(!lake.join("signins/day=2026-11-19/x-00001.parquet#1").exists());
        // A second re-run writes nothing and rejects nothing twice.
        let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(&raw));
        assert_eq!(code, 0, "{err}");
        assert_eq!(lake_counts(&lake), want, "after a second re-run");
    }
}

/// A mapped input that shrinks while it is ingested stops the process with the advice to run again
/// (or with `--no-mmap`), not a bare bus error; run again once the file is stable, the lake is the
/// clean one. The first mapping of the input (after its length is taken) is held for two seconds
/// by strace; the file is cut to a few lines while it is held, so the chunks mapped next lie past
/// its end.
#[test]
fn a_mapped_input_cut_short_while_ingested_stops_with_advice() {
    if !strace_available() {
        return;
    }
    let dir = tmp("sigbus-in");
    let input = dir.join("PT1H.json");
    let line = |i: usize| {
        format!(
            r#"{{"time":"2026-11-19T10:00:00Z","category":"ServicePrincipalSignInLogs","properties":{{"id":"sb-{i}","servicePrincipalId":"sp-1","ipAddress":"203.0.113.7","createdDateTime":"2026-11-19T10:00:00Z"}}}}"#
        )
    };
    let text: String = (0..40_000).map(|i| line(i) + "\n").collect();
    std::fs::write(&input, &text).unwrap();
    let lake = tmp("sigbus-lake");
    let child = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-P"])
        .arg(&input)
        .args(["-etrace=mmap", "-einject=mmap:delay_exit=2000000:when=1", "--"])
        .arg(env!("CARGO_BIN_EXE_wisp"))
        .args(["ingest", "--no-progress", "--threads", "1", "--lake"])
        .arg(&lake)
        .arg(&input)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the input's first mapping (in some process's maps), then cut the file short.
    let name = input.display().to_string();
    let mapped = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("maps")).is_ok_and(|m| m.lines().any(|l| l.ends_with(&name)))
        })
    };
    let t0 = std::time::Instant::now();
    while !mapped() {
        assert!(t0.elapsed().as_secs() < 60, "the input was never mapped");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let short: String = (0..3).map(|i| line(i) + "\n").collect();
    std::fs::write(&input, &short).unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("shrank") && err.contains("--no-mmap"), "{err}");
    // Run again over the file as it now is: its three records, nothing else.
    let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(&input));
    assert_eq!(code, 0, "{err}");
    let count = "SELECT count(*) AS n FROM signins";
    let (code, out, err) = run(wisp().args(["sql", "--format", "csv", "--lake"]).arg(&lake).arg(count));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "n\n3", "{err}");
}

#[test]
fn an_ingest_killed_at_exact_system_calls_reruns_to_the_clean_lake() {
    if !strace_available() {
        return;
    }
    let raw = writer_input("strace-in");
    let clean = tmp("strace-clean");
    let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&clean).arg(&raw));
    assert_eq!(code, 0, "{err}");
    let want = lake_counts(&clean);
    assert!(want.1 > 0, "the input has rejects");
    // The points, in a run's order: the first file's rename (its staging file stays), the first
    // time any thread renames its second file, after every table file but before the rejects,
    // and after the rejects but before the manifest. The two folders are made by the run itself.
    type Point = (Option<&'static str>, &'static str, u32);
    let points: [Point; 4] =
        [(None, "rename", 1), (None, "rename", 2), (Some("_rejected"), "mkdir", 1), (Some("_meta/ingest"), "mkdir", 1)];
    for (sub, syscall, when) in points {
        let lake = tmp("strace-lake");
        let at = sub.map(|s| lake.join(s));
        let o = wisp_killed_at(at.as_deref(), syscall, when)
            .args(["ingest", "--no-progress", "--lake"])
            .arg(&lake)
            .arg(&raw)
            .output()
            .unwrap();
        let point = format!("{syscall} #{when} {}", sub.unwrap_or(""));
        assert!(!o.status.success(), "not killed at {point}: {}", String::from_utf8_lossy(&o.stderr));
        let files = files_under(&lake);
        assert!(!files.iter().any(|f| f.starts_with("_meta/ingest/")), "no manifest after a kill at {point}");
        if sub == Some("_meta/ingest") {
            assert!(files.iter().any(|f| f.starts_with("_rejected/")), "rejects before the manifest: {files:?}");
        }
        let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(&raw));
        assert_eq!(code, 0, "{err}");
        assert_eq!(lake_counts(&lake), want, "killed at {point}, then re-run: {err}");
        assert!(!files_under(&lake).iter().any(|f| f.contains('#')), "staging debris after a kill at {point}");
        if syscall == "rename" || sub == Some("_meta/ingest") {
            assert!(err.contains("repaired what an interrupted ingest left"), "{point}: {err}");
        }
    }
}

#[test]
fn bad_databases_and_partly_read_inputs_are_named() {
    let dir = tmp("db-in");
    std::fs::write(dir.join("empty.mmdb"), b"").unwrap();
    std::fs::write(dir.join("empty.csv"), b"start_ip,end_ip,asn,organization\n").unwrap();
    std::fs::write(dir.join("random.mmdb"), (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>()).unwrap();
    let line = r#"{"time":"2026-01-02T03:04:05Z","category":"AuditLogs","properties":{"id":"ID","activityDateTime":"2026-01-02T03:04:05Z"}}"#;
    std::fs::write(dir.join("a.json"), line).unwrap();
    for (flag, db, want) in [
        ("--asn-db", "empty.mmdb", "neither a MaxMind database"),
        ("--asn-db", "empty.csv", "holds no address ranges"),
        ("--asn-db", "random.mmdb", "neither a MaxMind database"),
        ("--geo-db", "random.mmdb", "is not a MaxMind database"),
    ] {
        let lake = tmp("db-parent").join("new-lake");
        let (code, _, err) = run(wisp()
            .args(["ingest", "--no-progress", flag])
            .arg(dir.join(db))
            .arg("--lake")
            .arg(&lake)
            .arg(dir.join("a.json")));
        assert_eq!(code, 1, "{db}: {err}");
        assert!(err.contains(want) && err.contains(db), "{db}: {err}");
        assert!(!lake.exists(), "{db}: a failed ingest left {}", lake.display());
    }
    // A gzip cut short after some records: those are taken and the input is named as read partly.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    use std::io::Write;
    for i in 0..2000 {
        writeln!(gz, "{}", line.replace("\"ID\"", &format!("\"id-{i}\""))).unwrap();
    }
    let bytes = gz.finish().unwrap();
    std::fs::write(dir.join("cut.json.gz"), &bytes[..bytes.len() / 2]).unwrap();
    let lake = tmp("db-cut");
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(dir.join("cut.json.gz")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cut.json.gz: read partly ("), "{err}");
    let (_, out, _) =
        run(wisp().args(["sql", "--format", "csv", "--lake"]).arg(&lake).arg("SELECT count(*) AS n FROM audit"));
    let n: usize = out.lines().nth(1).unwrap().parse().unwrap();
    assert!(n > 0 && n < 2000, "{n}");
}

#[test]
fn csv_output_writes_lists_and_structs_as_json_text() {
    let lake = tmp("cli-csv");
    ingest_samples(&lake);
    let (code, out, err) = run(wisp().args(["sql", "--format", "csv", "--lake"]).arg(&lake).arg("SELECT * FROM audit"));
    assert_eq!(code, 0, "{err}");
    let mut rdr = csv::Reader::from_reader(out.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let ti = headers.iter().position(|h| h == "targets").unwrap();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    assert!(!rows.is_empty());
    let with_targets = rows.iter().find(|r| !r[ti].is_empty()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&with_targets[ti]).unwrap();
    assert!(v.is_array() && v[0].get("modified_properties").is_some(), "{v}");
    let (code, _, err) = run(wisp()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&lake)
        .arg("SELECT named_struct('a', 1, 'b', [1, 2]) AS s, CAST(NULL AS INT[]) AS l"));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_rule_missing_its_enrichment_says_so_with_the_fix() {
    let detect_asn = |lake: &std::path::Path| {
        run(wisp()
            .args([
                "detect",
                "--rule",
                "sp_unusual_source_asn",
                "--at",
                "2026-11-20T11:00:00Z",
                "--format",
                "jsonl",
                "--lake",
            ])
            .arg(lake))
    };
    let dir = tmp("noasn-in");
    std::fs::write(
        dir.join("PT1H.json"),
        r#"{"time":"2026-11-20T10:00:00Z","category":"ServicePrincipalSignInLogs","properties":{"id":"s1","createdDateTime":"2026-11-20T10:00:00Z","servicePrincipalId":"sp-1","servicePrincipalName":"builder","appId":"app-1","ipAddress":"45.1.1.1","autonomousSystemNumber":8075,"status":{"errorCode":0}}}"#,
    )
    .unwrap();
    let lake = tmp("noasn-lake");
    let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(&dir));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(wisp()
        .args(["detect", "--rule", "sp_unusual_source_asn", "--at", "2026-11-20T11:00:00Z", "--lake"])
        .arg(&lake));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: sp_unusual_source_asn needs asn enrichment") && err.contains("--asn-db"), "{err}");
    let (code, _, err) = run(wisp().args(["rules", "lint", "--lake"]).arg(&lake));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warn  sp_unusual_source_asn needs asn enrichment"), "{err}");
    let asn = dir.join("asn.csv");
    std::fs::write(&asn, "start_ip,end_ip,asn,organization\n45.1.1.0,45.1.1.255,8075,Microsoft Corporation\n").unwrap();
    // Re-enriching the lake on purpose fixes it in place: same rows, no duplicates; the second
    // time nothing changes and nothing is rewritten.
    for want in
        ["re-enriched 1 rows (1 changed), 1 files rewritten", "re-enriched 1 rows (0 changed), 0 files rewritten"]
    {
        let (code, _, err) =
            run(wisp().args(["ingest", "--no-progress", "--reenrich", "--asn-db"]).arg(&asn).arg("--lake").arg(&lake));
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(want), "{err}");
    }
    let (_, out, _) = run(wisp()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&lake)
        .arg("SELECT count(*) AS n, count(DISTINCT _key) AS k, max(source_as_org) AS org FROM signins"));
    assert_eq!(out.lines().nth(1), Some("1,1,Microsoft Corporation"), "{out}");
    let (code, out, err) = detect_asn(&lake);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning") && out.trim().is_empty(), "{err}\n{out}");
    let (code, _, err) = run(wisp().args(["ingest", "--no-progress", "--reenrich", "--lake"]).arg(&lake));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--reenrich needs a database"), "{err}");
    // With the database at ingest, no warning.
    let lake2 = tmp("asn-lake");
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--asn-db"]).arg(&asn).arg("--lake").arg(&lake2).arg(&dir));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = detect_asn(&lake2);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
    assert!(out.trim().is_empty(), "Microsoft's network is excluded once the organization is known: {out}");
}

#[test]
fn pivot_shows_the_resource_log_actions_of_a_principal() {
    let lake = tmp("cli-pivot-rl");
    ingest_samples(&lake);
    let (code, out, err) = run(wisp()
        .args(["pivot", "sp", "payroll-sync", "--from", "2026-11-20T00:00:00Z", "--to", "2026-11-21T00:00:00Z"])
        .args(["--format", "jsonl", "--lake"])
        .arg(&lake));
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let rl: Vec<&serde_json::Value> = rows.iter().filter(|r| r["dataset"] == "resource_logs").collect();
    assert_eq!(rl.len(), 4, "two Key Vault reads and a blob read in both export shapes: {out}");
    assert!(rl.iter().any(|r| r["action"].as_str().unwrap().contains("SecretGet on KV-PAYROLL")), "{out}");
    assert!(rl.iter().any(|r| r["action"].as_str().unwrap().contains("GetBlob on sapayroll")), "{out}");
}

#[test]
fn compact_force_rewrites_compacted_days_in_the_current_layout() {
    let lake = tmp("compact-force");
    ingest_samples(&lake);
    let signin_files = || -> Vec<String> { files_under(&lake.join("signins")) };
    let before = signin_files();
    let (rows_before, _) = lake_counts(&lake);
    // One file per day: nothing to compact without --force.
    let (code, _, err) = run(wisp().args(["compact", "--lake"]).arg(&lake));
    assert_eq!(code, 0, "{err}");
    assert_eq!(signin_files(), before);
    let (code, _, err) = run(wisp().args(["compact", "--table", "signins", "--force", "--lake"]).arg(&lake));
    assert_eq!(code, 0, "{err}");
    let after = signin_files();
    assert!(after.iter().all(|f| wisp::lake::compact::is_compacted(f)), "{after:?}");
    // A file per day, category and outcome: the samples' failed sign-ins got files of their own.
    let sql =
        "SELECT count(*) AS parts FROM (SELECT DISTINCT day, category, coalesce(error_code, 0) <> 0 FROM signins)";
    let (code, out, err) = run(wisp().args(["sql", "--format", "csv", "--lake"]).arg(&lake).arg(sql));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("parts\n{}", after.len()), "{after:?}");
    let (code, out, err) = run(wisp()
        .args(["sql", "--format", "csv", "--lake"])
        .arg(&lake)
        .arg("SELECT count(*) FROM signins WHERE error_code <> 0"));
    assert_eq!(code, 0, "{err}");
    assert_ne!(out.lines().nth(1), Some("0"), "the samples hold failures");
    assert!(after.len() > before.len(), "{before:?} → {after:?}");
    assert_eq!(lake_counts(&lake).0, rows_before, "compaction changed rows");
    // Forced again: the same layout, the same rows.
    let (code, _, err) = run(wisp().args(["compact", "--table", "signins", "--force", "--lake"]).arg(&lake));
    assert_eq!(code, 0, "{err}");
    assert_eq!(signin_files().len(), after.len());
    assert_eq!(lake_counts(&lake).0, rows_before);
}

/// `wisp hunt --backtest` runs a rule's one-pass backtest query over the range: a row per alert
/// of every scheduled run (each with its `run_end_us`), as many as `wisp detect` reports over the
/// same range; a rule file without a backtest section says so.
#[test]
fn hunt_backtest_runs_the_one_pass_query() {
    let lake = tmp("cli-hunt-backtest");
    ingest_samples(&lake);
    let range = ["--from", "2026-11-18T00:00:00Z", "--to", "2026-11-21T00:00:00Z", "--format", "jsonl", "--lake"];
    let rule = "sp_keyvault_read_from_new_source";
    let (code, out, err) = run(wisp().args(["hunt", rule, "--backtest"]).args(range).arg(&lake));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("backtest of {rule} over [2026-11-18T00:00:00+00:00")), "{err}");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["run_end_us"].is_i64()), "{out}");
    let (code, alerts, err) = run(wisp().args(["detect", "--rule", rule]).args(range).arg(&lake));
    assert_eq!(code, 0, "{err}");
    assert_eq!(alerts.lines().count(), rows.len(), "{alerts}\n{out}");

    let text = std::fs::read_to_string(repo().join("sql/sp_failed_signins.sql")).unwrap();
    let main_only = &text[..text.find("-- @backtest").expect("the rule has a backtest")];
    let file = tmp("cli-hunt-backtest-rule").join("no_backtest.sql");
    std::fs::write(&file, main_only).unwrap();
    let (code, out, err) = run(wisp().arg("hunt").arg(&file).arg("--backtest").args(range).arg(&lake));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("has no one-pass backtest") && err.contains("drop --backtest"), "{err}");
    assert!(out.is_empty(), "{out}");
}
