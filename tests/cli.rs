//! The command line end to end: the README's demo, exit codes, read-only SQL, pivot.

mod common;
use common::*;
use std::process::Command;

fn wisp() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wisp"))
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
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
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(repo().join("data/samples")));
    assert_eq!(code, 0, "{err}");
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
    let (code, out, _) =
        run(wisp().args(["sql", "--format", "csv", "--lake"]).arg(&lake).arg("SELECT count(*) AS n FROM signins"));
    assert_eq!((code, out.trim()), (0, "n\n9"));
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

#[test]
fn shell_reads_statements_from_stdin() {
    use std::io::Write;
    let lake = tmp("shell");
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(repo().join("data/samples")));
    assert_eq!(code, 0, "{err}");
    let hist = lake.join("history");
    let mut child = wisp()
        .args(["shell", "--format", "csv", "--history"])
        .arg(&hist)
        .arg("--lake")
        .arg(&lake)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
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
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(repo().join("data/samples")));
    assert_eq!(code, 0, "{err}");
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
    let (code, _, err) =
        run(wisp().args(["ingest", "--no-progress", "--lake"]).arg(&lake).arg(repo().join("data/samples")));
    assert_eq!(code, 0, "{err}");
    for format in ["jsonl", "csv", "table", "json"] {
        let mut child = wisp()
            .args(["sql", "--format", format, "--lake"])
            .arg(&lake)
            .arg("SELECT value, 'a row long enough to fill the pipe quickly' AS pad FROM generate_series(1, 3000000)")
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
