//! Ingest: conformance over the real fixtures, field checks, messy input, idempotence, append
//! blobs, crash safety of files, and a round trip through DataFusion.

mod common;
use common::*;
use std::io::Write;

/// The fixture files that hold records (the rest are databases, their sources, and licences).
fn fixture_inputs(root: &std::path::Path) -> Vec<String> {
    ["azure", "graph", "o365"].iter().map(|d| root.join(d).display().to_string()).collect()
}

#[tokio::test]
async fn conformance_every_fixture_ingests_without_rejects() {
    let Some(fx) = fixtures() else { return };
    let lake = tmp("conf");
    let mut o = opts(fixture_inputs(&fx));
    o.asn_db = Some(fx.join("mmdb/GeoLite2-ASN-Test.mmdb"));
    let s = ingest_into(&lake, o).await;
    assert!(s.rejected.is_empty(), "unexpected rejects: {:?}", s.rejected);
    assert!(s.unreadable.is_empty(), "{:?}", s.unreadable);
    for t in ["signins", "audit", "sp_risk_events", "graph_activity", "o365_audit", "azure_activity", "user_risk"] {
        assert!(s.written.get(t).copied().unwrap_or(0) > 0, "nothing written to {t}: {s:?}");
    }
    // Known records.
    let sp = query_text(
        &lake,
        "SELECT service_principal_id, app_id, error_code, source_ip, source_asn, source_as_org \
        FROM signins WHERE id = 'd5935dca-86f2-4ac9-a42c-3593b00af801' AND category = 'ServicePrincipalSignInLogs'",
    )
    .await;
    assert!(sp.contains("b029d485-a308-4311-8720-fb3192e5284e"), "{sp}");
    assert!(sp.contains("6131d760-7fda-4db5-8bb1-b771898e9f15"), "{sp}");
    assert!(sp.contains("| 0          | 1.128.3.4 | 1221       | Telstra Pty Ltd |"), "{sp}");
    let mi = query_text(
        &lake,
        "SELECT count(*) AS n, count(source_ip) AS with_ip FROM signins WHERE category = 'ManagedIdentitySignInLogs'",
    )
    .await;
    assert!(mi.contains("| 10 | 0       |"), "{mi}");
    let failed =
        query_text(&lake, "SELECT error_code FROM signins WHERE id = '22222222-5ec0-4795-bf9f-9017bcc32f00'").await;
    assert!(failed.contains("7000222"), "{failed}");
    // Log Analytics AuditLogs export: targets and modified properties parsed from JSON strings.
    let la = query_text(
        &lake,
        "SELECT target_name, target_type, initiated_by_upn, \
        targets[1]['modified_properties'][1]['name'] AS prop FROM audit \
        WHERE id = 'Directory_10065ffb-8199-48bc-8ff5-912cb5b8295a_AUMVX_13992832'",
    )
    .await;
    assert!(
        la.contains("SimuLandApp")
            && la.contains("Application")
            && la.contains("KeyDescription")
            && la.contains("pgustavo@simulandlabs.com"),
        "{la}"
    );
    // The IPv6 caller and the malformed one (NULL, kept in raw).
    let v6 = query_text(
        &lake,
        "SELECT source_ip FROM audit WHERE correlation_id = '87979703-118b-498f-99c2-ccd1a56f1a5a' ORDER BY source_ip",
    )
    .await;
    assert!(v6.contains("2a02:cf40:add:4002:91f2:a9b2:e09a:6fc6"), "{v6}");
    // Graph risk detection with a stray ')' in its timestamp.
    let risk =
        query_text(&lake, "SELECT risk_event_type, CAST(last_updated AS VARCHAR) AS lu FROM sp_risk_events").await;
    assert!(risk.contains("investigationsThreatIntelligence") && risk.contains("2021-10-26T16:28:17.820297"), "{risk}");
    // US-locale times.
    let ur = query_text(&lake, "SELECT CAST(min(ts) AS VARCHAR) AS t FROM user_risk WHERE category = 'UserRiskEvents'")
        .await;
    assert!(ur.contains("2022-08-22T18:05:06.133"), "{ur}");
    // O365: outcome and the client IP.
    let o365 =
        query_text(&lake, "SELECT DISTINCT outcome, source_ip FROM o365_audit WHERE operation = 'UserLoggedIn'").await;
    assert!(o365.contains("success") && o365.contains("67.43.156.15"), "{o365}");
}

#[tokio::test]
async fn bundled_samples_ingest_with_only_the_intended_reject() {
    let lake = tmp("samples");
    let s = ingest_into(&lake, opts(vec![repo().join("data/samples").display().to_string()])).await;
    assert_eq!(s.rejected.get("not an alert"), Some(&1), "{s:?}");
    assert_eq!(s.rejected_total(), 1, "{s:?}");
    assert_eq!(s.written.get("signins"), Some(&9));
    // Log Analytics CSV with a bracketed IPv6 and port, US-locale time.
    let csv =
        query_text(&lake, "SELECT source_ip, CAST(ts AS VARCHAR) AS t, country FROM signins WHERE id = 'la-csv-0001'")
            .await;
    assert!(csv.contains("2001:db8:10::5") && csv.contains("2026-11-20T10:15:30.500") && csv.contains("NL"), "{csv}");
    // ::ffff: folded, Graph category from signInEventTypes, ECS ASN kept, O365 port stripped.
    let g =
        query_text(&lake, "SELECT category, source_ip FROM signins WHERE id IN ('g-sp-0001','g-mi-0001') ORDER BY id")
            .await;
    assert!(
        g.contains("ManagedIdentitySignInLogs") && g.contains("ServicePrincipalSignInLogs | 185.220.101.45"),
        "{g}"
    );
    let e = query_text(
        &lake,
        "SELECT source_asn, source_as_org, CAST(ingested_at AS VARCHAR) AS i FROM signins WHERE id = 'ecs-sp-0001'",
    )
    .await;
    assert!(e.contains("64511") && e.contains("Example Transit") && e.contains("2026-11-20T11:51:02"), "{e}");
    let m = query_text(&lake, "SELECT source_ip, outcome FROM o365_audit WHERE operation = 'MailItemsAccessed'").await;
    assert!(m.contains("185.220.101.45 | success"), "{m}");
    // Risk event versions are all kept; the view keeps the newest.
    let v = query_text(&lake, "SELECT (SELECT count(*) FROM sp_risk_events) AS all_rows, (SELECT count(*) FROM sp_risk_events_latest) AS latest, \
        (SELECT risk_state FROM sp_risk_events_latest WHERE id = 'risk-0001') AS state").await;
    assert!(v.contains("| 3        | 2      | confirmedCompromised |"), "{v}");
}

#[tokio::test]
async fn messy_input_every_record_is_placed_and_counted() {
    let dir = tmp("messy-in");
    let good = r#"{"time":"2026-01-02T03:04:05Z","category":"ServicePrincipalSignInLogs","properties":{"id":"m-1","createdDateTime":"2026-01-02T03:04:05Z","servicePrincipalId":"sp-1","ipAddress":"1.2.3.4","status":{"errorCode":0}}}"#;
    let bad_ip = r#"{"time":"2026-01-02T03:04:06Z","category":"ServicePrincipalSignInLogs","properties":{"id":"m-2","createdDateTime":"2026-01-02T03:04:06Z","servicePrincipalId":"sp-1","ipAddress":"300.1.2.3","status":{"errorCode":0}}}"#;
    let no_time = r#"{"time":"","category":"AuditLogs","properties":{"id":"m-3","activityDisplayName":"x"}}"#;
    let unknown = r#"{"time":"2026-01-02T03:04:07Z","category":"SomethingNew","properties":{"id":"m-4"}}"#;
    let truncated = r#"{"time":"2026-01-02T03:04:08Z","category":"AuditLogs","prop"#;
    let mut f = std::fs::File::create(dir.join("messy.json")).unwrap();
    writeln!(f, "{good}\n{truncated}\n{bad_ip}\n\n{no_time}\n{unknown}").unwrap();
    f.write_all(b"\x00\x9f\x92\x96garbage\xff\n").unwrap();
    writeln!(f, "{good}").unwrap(); // a duplicate of line 1
    drop(f);
    std::fs::write(dir.join("empty.json"), b"").unwrap();
    std::fs::write(dir.join("zero.json.gz"), b"").unwrap();
    let lake = tmp("messy-lake");
    let s = ingest_into(&lake, opts(vec![dir.display().to_string()])).await;
    assert_eq!(s.read, 7, "{s:?}");
    assert_eq!(s.written.get("signins"), Some(&2));
    assert_eq!(s.duplicates, 1);
    assert_eq!(s.rejected.get("truncated JSON"), Some(&1), "{s:?}");
    assert_eq!(s.rejected.get("invalid JSON"), Some(&1), "{s:?}");
    assert_eq!(s.rejected.get("missing or unparsable timestamp"), Some(&1), "{s:?}");
    assert_eq!(s.rejected.get("unknown category"), Some(&1), "{s:?}");
    assert!(s.unreadable.is_empty(), "{:?}", s.unreadable);
    // The bad IP is NULL in the table and intact in raw.
    let t = query_text(
        &lake,
        "SELECT source_ip IS NULL AS null_ip, raw LIKE '%300.1.2.3%' AS kept FROM signins WHERE id = 'm-2'",
    )
    .await;
    assert!(t.contains("| true    | true |"), "{t}");
    // Rejected records carry source, line and reason.
    let rej: Vec<serde_json::Value> = std::fs::read_dir(lake.join("_rejected"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .flat_map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(rej.len(), 4);
    let trunc = rej.iter().find(|r| r["reason"].as_str().unwrap().starts_with("truncated")).unwrap();
    assert_eq!(trunc["line"], 2);
    assert!(trunc["source"].as_str().unwrap().ends_with("messy.json"));
    assert!(rej.iter().any(|r| r["line"] == 7 && r["reason"].as_str().unwrap().contains("not UTF-8")));
}

#[tokio::test]
async fn unreadable_input_is_named_and_others_still_ingest() {
    let dir = tmp("unread");
    std::fs::write(dir.join("a.json"), br#"{"time":"2026-01-02T03:04:05Z","category":"AuditLogs","properties":{"id":"u-1","activityDateTime":"2026-01-02T03:04:05Z"}}"#).unwrap();
    let lake = tmp("unread-lake");
    let s = ingest_into(
        &lake,
        opts(vec![dir.join("a.json").display().to_string(), dir.join("missing.json").display().to_string()]),
    )
    .await;
    assert_eq!(s.written.get("audit"), Some(&1));
    assert_eq!(s.unreadable.len(), 1);
    assert!(s.unreadable[0].contains("missing.json"), "{:?}", s.unreadable);
    // A corrupt gzip is an unreadable input too.
    std::fs::write(dir.join("bad.json.gz"), b"\x1f\x8b\x08\x00garbage-not-deflate").unwrap();
    let s = ingest_into(&lake, opts(vec![dir.join("bad.json.gz").display().to_string()])).await;
    assert_eq!(s.unreadable.len(), 1, "{s:?}");
    // Inside a folder, a broken link is named as a missing path on the command line is, the walk
    // goes on, a linked folder is followed once (no loop), and a record dated outside the accepted
    // range is rejected with its reason.
    let tree = tmp("unread-tree");
    std::fs::create_dir_all(tree.join("a/b")).unwrap();
    std::fs::write(tree.join("a/b/x.json"), br#"{"time":"2026-01-02T03:04:05Z","category":"AuditLogs","properties":{"id":"u-2","activityDateTime":"2026-01-02T03:04:05Z"}}
{"time":"9999-12-31T23:59:59Z","category":"AuditLogs","properties":{"id":"u-3","activityDateTime":"9999-12-31T23:59:59Z"}}
{"time":"0000-01-01T00:00:00Z","category":"AuditLogs","properties":{"id":"u-4","activityDateTime":"0000-01-01T00:00:00Z"}}"#).unwrap();
    std::os::unix::fs::symlink(tree.join("nowhere.json"), tree.join("a/dangling.json")).unwrap();
    std::os::unix::fs::symlink(tree.join("a"), tree.join("a/b/loop")).unwrap();
    let lake2 = tmp("unread-tree-lake");
    let s = ingest_into(&lake2, opts(vec![tree.display().to_string()])).await;
    assert_eq!(s.unreadable.len(), 1, "{s:?}");
    assert!(s.unreadable[0].contains("dangling.json") && s.unreadable[0].contains("broken symbolic link"), "{s:?}");
    assert_eq!(s.files, 1, "the linked folder is walked once: {s:?}");
    assert_eq!(s.written.get("audit"), Some(&1), "{s:?}");
    assert_eq!(s.rejected.get("timestamp out of range"), Some(&2), "{s:?}");
    assert_eq!(s.rejected_total(), 2, "{s:?}");
    let n = query_text(&lake2, "SELECT count(*) AS n, min(ts) AS lo, max(ts) AS hi FROM audit").await;
    assert!(n.contains("| 1 "), "{n}");
}

#[tokio::test]
async fn rerun_writes_nothing_and_a_grown_append_blob_adds_only_new_records() {
    let dir = tmp("append");
    let line = |i: u32| {
        format!(
            r#"{{"time":"2026-01-02T03:04:{i:02}Z","category":"ServicePrincipalSignInLogs","properties":{{"id":"a-{i}","servicePrincipalId":"sp","status":{{"errorCode":0}}}}}}"#
        )
    };
    let p = dir.join("PT1H.json");
    std::fs::write(&p, format!("{}\n{}\n", line(1), line(2))).unwrap();
    let lake = tmp("append-lake");
    let s1 = ingest_into(&lake, opts(vec![p.display().to_string()])).await;
    assert_eq!(s1.written.get("signins"), Some(&2));
    let s2 = ingest_into(&lake, opts(vec![p.display().to_string()])).await;
    assert_eq!((s2.read, s2.files_unchanged, s2.parquet_files), (0, 1, 0), "{s2:?}");
    let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
    writeln!(f, "{}", line(3)).unwrap();
    drop(f);
    let s3 = ingest_into(&lake, opts(vec![p.display().to_string()])).await;
    assert_eq!((s3.read, s3.written.get("signins").copied()), (1, Some(1)), "{s3:?}");
    // The same records under another file name are duplicates, not new rows.
    let copy = dir.join("copy.json");
    std::fs::copy(&p, &copy).unwrap();
    let s4 = ingest_into(&lake, opts(vec![copy.display().to_string()])).await;
    assert_eq!((s4.read, s4.duplicates, s4.written_total()), (3, 3, 0), "{s4:?}");
    let n = query_text(&lake, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM signins").await;
    assert!(n.contains("| 3 | 3 |"), "{n}");
}

#[tokio::test]
async fn round_trip_schema_matches_the_contract_and_files_are_sorted() {
    let lake = tmp("rt");
    ingest_into(&lake, opts(vec![repo().join("data/samples").display().to_string()])).await;
    let l = wisp::lake::Lake::open(&lake.display().to_string()).unwrap();
    let ctx = wisp::session::open(&l, &Default::default()).await.unwrap();
    for t in wisp::lake::ALL_TABLES {
        let df = ctx.table(t.name()).await.unwrap();
        let got: Vec<(String, String)> =
            df.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect();
        let want: Vec<(String, String)> =
            t.table_schema().fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect();
        assert_eq!(got, want, "{}", t.name());
    }
    let types = query_text(&lake, "SELECT arrow_typeof(ts) AS ts_t, arrow_typeof(source_asn) AS asn_t, arrow_typeof(error_code) AS e_t FROM signins LIMIT 1").await;
    assert!(
        types.contains("Timestamp(µs, \"UTC\")") || types.contains("Timestamp(Microsecond, Some(\"UTC\"))"),
        "{types}"
    );
    // No temporary or partial files are visible; every file is complete Parquet.
    for entry in walk(&lake) {
        let name = entry.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.starts_with('.') && !name.contains("#"), "temporary file visible: {}", entry.display());
        if name.ends_with(".parquet") {
            let bytes = std::fs::read(&entry).unwrap();
            assert_eq!(&bytes[bytes.len() - 4..], b"PAR1");
            assert!(entry.parent().unwrap().file_name().unwrap().to_string_lossy().starts_with("day="));
            // Statistics on every column but `raw` (no query bounds the original records); a
            // bloom filter on `id`.
            use parquet::file::reader::FileReader;
            let reader =
                parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&entry).unwrap()).unwrap();
            for rg in reader.metadata().row_groups() {
                for c in rg.columns() {
                    let name = c.column_path().string();
                    assert_eq!(c.statistics().is_some(), name != "raw", "{name} in {}", entry.display());
                    if name == "id" {
                        assert!(c.bloom_filter_offset().is_some(), "{}", entry.display());
                    }
                }
            }
        }
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

#[tokio::test]
async fn geo_db_fills_location_when_the_log_has_none_and_meta_records_versions() {
    let Some(fx) = fixtures() else { return };
    let dir = tmp("geo-in");
    let rec = |id: &str, ip: &str, loc: &str| {
        format!(
            r#"{{"time":"2026-01-02T03:04:05Z","category":"ServicePrincipalSignInLogs","properties":{{"id":"{id}","createdDateTime":"2026-01-02T03:04:05Z","servicePrincipalId":"sp","ipAddress":"{ip}","status":{{"errorCode":0}}{loc}}}}}"#
        )
    };
    std::fs::write(
        dir.join("PT1H.json"),
        [
            rec("no-loc", "81.2.69.144", ""),
            rec("has-loc", "81.2.69.145", r#","location":{"countryOrRegion":"DE","city":"Hannover"}"#),
            rec("asn", "1.128.3.4", ""),
        ]
        .join("\n"),
    )
    .unwrap();
    let lake = tmp("geo-lake");
    let mut o = opts(vec![dir.display().to_string()]);
    o.geo_db = Some(fx.join("mmdb/GeoLite2-City-Test.mmdb"));
    o.asn_db = Some(fx.join("mmdb/GeoLite2-ASN-Test.mmdb"));
    ingest_into(&lake, o).await;
    let t = query_text(&lake, "SELECT id, country, city, source_asn FROM signins ORDER BY id").await;
    assert!(t.contains("| has-loc | DE      | Hannover |"), "{t}");
    assert!(t.contains("| no-loc  | GB      | London   |"), "{t}");
    assert!(t.contains("| asn     |") && t.contains("1221"), "{t}");
    let meta: Vec<serde_json::Value> = std::fs::read_dir(lake.join("_meta/enrichment"))
        .unwrap()
        .map(|f| serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(meta.len(), 1);
    assert!(meta[0]["asn_db"]["build_epoch"].as_u64().unwrap() > 1_000_000_000, "{}", meta[0]);
    assert!(meta[0]["geo_db"]["type"].as_str().unwrap().contains("City"), "{}", meta[0]);
}

#[tokio::test]
async fn a_large_json_array_streams_and_counts_by_record() {
    let dir = tmp("array");
    let mut body = String::from("[\n");
    for i in 0..5000 {
        if i > 0 {
            body.push_str(",\n");
        }
        body.push_str(&format!(
            r#"{{"TimeGenerated":"2026-01-02T03:04:05Z","Type":"AADServicePrincipalSignInLogs","Id":"arr-{i}","ServicePrincipalId":"sp","IPAddress":"1.2.3.{}","ResultType":"0","Note":"a string with ] and [ and \" and }} inside"}}"#,
            i % 250
        ));
    }
    body.push_str(",\n{\"broken\": \n]");
    std::fs::write(dir.join("export.json"), body).unwrap();
    let lake = tmp("array-lake");
    let s = ingest_into(&lake, opts(vec![dir.display().to_string()])).await;
    assert_eq!(s.written.get("signins"), Some(&5000), "{s:?}");
    assert_eq!(s.read, 5001, "{s:?}");
    assert_eq!(s.rejected_total(), 1, "{s:?}");
}

/// Resource logs of both shapes (diagnostic settings and the Log Analytics AzureDiagnostics export)
/// land in `resource_logs` with the caller's identity; an Entra audit record written with its audit
/// category at the top and a Microsoft.aadiam resource id is an audit event.
#[tokio::test]
async fn resource_logs_of_key_vault_storage_and_logic_apps() {
    let lake = tmp("resource-lake");
    let dir = tmp("resource-in");
    std::fs::write(
        dir.join("asn.csv"),
        "start_ip,end_ip,asn,organization\n185.220.101.0,185.220.101.255,60729,Tor Exit Hosting\n",
    )
    .unwrap();
    let mut o = opts(vec![
        repo().join("data/samples/diag-resource-logs.jsonl").display().to_string(),
        repo().join("data/samples/la-AzureDiagnostics.json").display().to_string(),
        repo().join("data/samples/la-StorageBlobLogs-and-LogicApps.json").display().to_string(),
    ]);
    o.asn_db = Some(dir.join("asn.csv"));
    let s = ingest_into(&lake, o).await;
    assert_eq!(s.rejected_total(), 0, "{s:?}");
    assert_eq!(s.written.get("resource_logs"), Some(&6), "{s:?}");
    assert_eq!(s.written.get("audit"), Some(&1), "{s:?}");
    let t = query_text(
        &lake,
        "SELECT category, operation_name, resource_provider, resource_name, result_type, status_code, duration_ms, caller_ip, \
         caller_object_id, caller_app_id, source_asn FROM resource_logs ORDER BY ts",
    )
    .await;
    for want in [
        "| AuditEvent      | SecretGet",
        "| AuditEvent      | SecretList",
        "| StorageRead     | GetBlob",
        "| WorkflowRuntime | Microsoft.Logic/workflows/workflowActionCompleted",
        "KV-PAYROLL",
        "sapayroll",
        "LA-PAYROLL-EXPORT",
        "5f3e0000-aaaa-4bbb-8ccc-000000000001",
        "0a1b2c3d-1111-4111-8111-000000000001",
        "60729",
    ] {
        assert!(t.contains(want), "{want} missing:\n{t}");
    }
    // The port is stripped from Storage's caller address; the AzureDiagnostics flattened claims are read.
    let t = query_text(
        &lake,
        "SELECT count(*) AS n FROM resource_logs WHERE caller_ip = '185.220.101.45' AND caller_object_id IS NOT NULL",
    )
    .await;
    assert!(t.contains("| 4 "), "{t}");
    // Both shapes of Storage and Logic Apps: the Log Analytics export's Requester* columns and
    // AzureDiagnostics' resource columns.
    let t = query_text(
        &lake,
        "SELECT category, count(*) AS n, count(caller_app_id) AS apps, count(resource_provider) AS providers \
         FROM resource_logs GROUP BY category ORDER BY category",
    )
    .await;
    for want in
        ["| AuditEvent      | 2 | 2    | 2 ", "| StorageRead     | 2 | 2    | 2 ", "| WorkflowRuntime | 2 | 0    | 2 "]
    {
        assert!(t.contains(want), "{want} missing:\n{t}");
    }
    let t = query_text(&lake, "SELECT operation_name, target_id, target_type FROM audit").await;
    assert!(t.contains("Add service principal credentials") && t.contains("ServicePrincipal"), "{t}");
}

/// Everything an ingest leaves that does not depend on when it ran: every table's rows (without
/// `ingested_at`) and the rejected records with their positions and reasons, each sorted.
async fn lake_contents(lake: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let mut tables = Vec::new();
    for t in wisp::lake::ALL_TABLES {
        if !lake.join(t.name()).is_dir() {
            continue;
        }
        let b = query(lake, &format!("SELECT * EXCLUDE (ingested_at) FROM {} ORDER BY _key, ts", t.name())).await;
        tables.push(format!("{}:\n{}", t.name(), arrow::util::pretty::pretty_format_batches(&b).unwrap()));
    }
    let mut rejects: Vec<String> = files_under(&lake.join("_rejected"))
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(lake.join("_rejected").join(f)).unwrap();
            text.lines().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    rejects.sort();
    (tables, rejects)
}

/// JSON lines are mapped by several threads in chunks and committed in input order: any number
/// of threads and any chunk size give the same rows, counts, rejects (with their line numbers)
/// and resume point of a grown append blob as one thread does.
#[tokio::test]
async fn threads_and_chunk_sizes_do_not_change_what_is_ingested() {
    let signin = |i: u32, ip: &str| {
        format!(
            r#"{{"time":"2026-01-0{d}T03:04:{s:02}Z","category":"ServicePrincipalSignInLogs","properties":{{"id":"p-{i}","createdDateTime":"2026-01-0{d}T03:04:{s:02}Z","servicePrincipalId":"sp-{m}","ipAddress":"{ip}","status":{{"errorCode":{e}}}}}}}"#,
            d = 1 + i % 2,
            s = i % 60,
            m = i % 7,
            e = if i.is_multiple_of(5) { 7000215 } else { 0 }
        )
    };
    let mut text = String::new();
    for i in 0..600u32 {
        let line = match i % 12 {
            0 => String::new(),
            8 => r#"{"time":"2026-01-02T03:04:08Z","category":"AuditLogs","prop"#.to_string(),
            // A record seen a few lines (and often a chunk) earlier: a duplicate.
            2 if i > 24 => signin(i - 15, "10.0.0.1"),
            3 => format!(r#"{{"records":[{},{}]}}"#, signin(10_000 + i, "198.51.100.7"), signin(20_000 + i, "::1")),
            4 => format!(
                r#"{{"time":"2026-01-01T05:00:00Z","category":"AuditLogs","properties":{{"id":"a-{i}","activityDateTime":"2026-01-01T05:00:{:02}Z","activityDisplayName":"Add service principal credentials","targetResources":[{{"id":"sp-1","type":"ServicePrincipal","modifiedProperties":[{{"displayName":"KeyDescription","newValue":"[\"k{i}\"]"}}]}}]}}}}"#,
                i % 60
            ),
            5 => {
                format!(r#"{{"time":"2026-01-02T03:04:07Z","category":"SomethingNew","properties":{{"id":"n-{i}"}}}}"#)
            }
            6 => "\u{feff}   ".to_string(),
            _ => signin(i, &format!("203.0.113.{}", i % 250)),
        };
        text.push_str(&line);
        text.push('\n');
    }
    // An unterminated, broken last line: rejected, not consumed (a grown blob re-reads it).
    text.push_str(
        r#"{"time":"2026-01-02T04:00:00Z","category":"ServicePrincipalSignInLogs","properties":{"id":"tail""#,
    );
    // The blob is mapped (a local file) unless `mmap` is off: read, the same lake.
    let configs = [
        (1, 2 << 20, true),
        (1, 97, true),
        (3, 97, true),
        (2, 1, true),
        (2, 4096, true),
        (1, 97, false),
        (2, 4096, false),
    ];
    type Seen = (wisp::ingest::Summary, wisp::ingest::Summary, (Vec<String>, Vec<String>));
    let mut first: Option<Seen> = None;
    for (threads, chunk, mmap) in configs {
        let input = tmp("par-blob");
        let blob = input.join("PT1H.json");
        std::fs::write(&blob, &text).unwrap();
        let samples = repo().join("data/samples").display().to_string();
        let o = |inputs: Vec<String>| wisp::ingest::IngestOptions { threads, chunk_bytes: chunk, mmap, ..opts(inputs) };
        let lake = tmp("par-lake");
        let mut s1 = ingest_into(&lake, o(vec![blob.display().to_string(), samples])).await;
        assert!(s1.read > 500 && s1.duplicates > 40 && s1.rejected_total() > 100, "{threads}/{chunk}: {s1:?}");
        // The blob grows: its broken last line completed, one more line.
        let mut f = std::fs::OpenOptions::new().append(true).open(&blob).unwrap();
        writeln!(f, r#","servicePrincipalId":"sp-9","ipAddress":"192.0.2.1"}}}}"#).unwrap();
        writeln!(f, "{}", signin(99_999, "192.0.2.2")).unwrap();
        drop(f);
        let s2 = ingest_into(&lake, o(vec![blob.display().to_string()])).await;
        assert_eq!((s2.read, s2.written_total()), (2, 2), "{threads}/{chunk}: {s2:?}");
        let mut contents = lake_contents(&lake).await;
        let here = input.display().to_string();
        contents.1.iter_mut().for_each(|r| *r = r.replace(&here, "<in>"));
        contents.1.sort();
        s1.unreadable.iter_mut().for_each(|u| *u = u.replace(&here, "<in>"));
        match &first {
            None => first = Some((s1, s2, contents)),
            Some((f1, f2, fc)) => {
                assert_eq!(&s1, f1, "threads {threads}, chunk {chunk}: summary of the first ingest");
                assert_eq!(&s2, f2, "threads {threads}, chunk {chunk}: summary of the resumed ingest");
                let differ: Vec<&str> = contents
                    .0
                    .iter()
                    .zip(&fc.0)
                    .filter(|(a, b)| a != b)
                    .map(|(a, _)| a.split(':').next().unwrap_or_default())
                    .collect();
                assert!(
                    differ.is_empty() && contents.0.len() == fc.0.len(),
                    "threads {threads}, chunk {chunk}: rows differ from one thread's in {differ:?}"
                );
                assert_eq!(contents.1, fc.1, "threads {threads}, chunk {chunk}: rejects");
            }
        }
    }
}

/// Scans over many days skip the time test on the days inside the range (`lake::days`): the rows
/// are exactly those of the range, at every edge (midnight, a microsecond either side, bounds of
/// each kind and on either side of the comparison, other time units), and the plan shows the test.
#[tokio::test]
async fn time_ranges_over_days_keep_exactly_their_rows() {
    use chrono::{DateTime, Duration, Utc};
    let dir = tmp("days");
    let day0 = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z").unwrap().with_timezone(&Utc);
    let mut times = Vec::new();
    for d in 0..6 {
        for off in
            [Duration::zero(), Duration::microseconds(1), Duration::hours(12), Duration::microseconds(86_399_999_999)]
        {
            times.push(day0 + Duration::days(d) + off);
        }
    }
    let mut lines = String::new();
    for (k, t) in times.iter().enumerate() {
        let iso = t.format("%Y-%m-%dT%H:%M:%S%.6fZ");
        lines.push_str(&format!(
            "{{\"time\":\"{iso}\",\"category\":\"ServicePrincipalSignInLogs\",\"operationName\":\"Sign-in activity\",\"resultType\":\"0\",\
             \"properties\":{{\"id\":\"00000000-0000-0000-0000-{k:012}\",\"createdDateTime\":\"{iso}\",\"servicePrincipalId\":\"sp\",\
             \"appId\":\"app\",\"ipAddress\":\"203.0.113.7\",\"status\":{{\"errorCode\":0}}}}}}\n"
        ));
    }
    let input = dir.join("in.json");
    std::fs::write(&input, lines).unwrap();
    let lake = dir.join("lake");
    let s = ingest_into(&lake, opts(vec![input.display().to_string()])).await;
    assert_eq!(s.written.values().sum::<u64>(), times.len() as u64, "{s:?}");
    let at = move |d: i64, us: i64| day0 + Duration::days(d) + Duration::microseconds(us);
    let lit = |t: DateTime<Utc>| format!("TIMESTAMP '{}'", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
    type Keep = Box<dyn Fn(&DateTime<Utc>) -> bool>;
    let cases: Vec<(String, Keep)> = vec![
        (format!("ts > {} AND ts <= {}", lit(at(0, 0)), lit(at(5, 0))), Box::new(move |t| *t > at(0, 0) && *t <= at(5, 0))),
        (format!("ts >= {} AND ts < {}", lit(at(1, 0)), lit(at(4, 0))), Box::new(move |t| *t >= at(1, 0) && *t < at(4, 0))),
        (format!("ts > {} AND ts < {}", lit(at(1, -1)), lit(at(4, 1))), Box::new(move |t| *t > at(1, -1) && *t < at(4, 1))),
        (format!("{} < ts AND {} >= ts", lit(at(0, 43_200_000_000)), lit(at(3, 1))), Box::new(move |t| *t > at(0, 43_200_000_000) && *t <= at(3, 1))),
        (format!("ts BETWEEN {} AND {}", lit(at(1, 1)), lit(at(5, -1))), Box::new(move |t| *t >= at(1, 1) && *t <= at(5, -1))),
        (format!("ts > {}", lit(at(2, 86_399_999_999))), Box::new(move |t| *t > at(2, 86_399_999_999))),
        (format!("ts < {}", lit(at(2, 0))), Box::new(move |t| *t < at(2, 0))),
        (
            "ts >= arrow_cast('2026-11-02T00:00:00Z', 'Timestamp(Millisecond, None)') AND ts <= arrow_cast('2026-11-04T12:00:00Z', 'Timestamp(Nanosecond, Some(\"UTC\"))')".to_string(),
            Box::new(move |t| *t >= at(1, 0) && *t <= at(3, 43_200_000_000)),
        ),
        (
            format!("ts > {} AND ts <= {} AND day >= '2026-11-02' AND day < '2026-11-05'", lit(at(0, 0)), lit(at(5, 0))),
            Box::new(move |t| *t >= at(1, 0) && *t < at(4, 0)),
        ),
    ];
    for (pred, keep) in &cases {
        let want: Vec<String> =
            times.iter().filter(|t| keep(t)).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()).collect();
        let sql = format!("SELECT to_char(ts, '%Y-%m-%dT%H:%M:%S%.6fZ') AS t FROM signins WHERE {pred} ORDER BY ts");
        let got: Vec<String> = query(&lake, &sql)
            .await
            .iter()
            .flat_map(|b| {
                use arrow::array::Array;
                let a = b.column(0).as_any().downcast_ref::<arrow::array::StringArray>().unwrap().clone();
                (0..a.len()).map(move |i| a.value(i).to_string()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(got, want, "{pred}");
        // And the scan lists the files of exactly the days holding those rows: each day's file
        // holds its first and last microsecond, so statistics tell every other day apart before
        // it is opened (the day partition and the `ts` bounds together).
        let plan = query_text(&lake, &format!("EXPLAIN SELECT ts FROM signins WHERE {pred}")).await;
        let listed: std::collections::BTreeSet<String> =
            plan.split("day=").skip(1).map(|s| s[..10].to_string()).collect();
        let holding: std::collections::BTreeSet<String> = want.iter().map(|t| t[..10].to_string()).collect();
        assert_eq!(listed, holding, "{pred}\n{plan}");
    }
    // The scan's predicate carries the day tests (the rule ran).
    let plan = query_text(&lake, &format!("EXPLAIN SELECT count(*) FROM signins WHERE {}", cases[0].0)).await;
    assert!(plan.contains("day@") && plan.contains("> 2026-11-01 OR ts@0 >"), "{plan}");
}

/// A session over a lake of `data/samples`, ingested into a fresh folder named `name`.
async fn samples_session(name: &str) -> datafusion::prelude::SessionContext {
    let dir = tmp(name);
    let s = ingest_into(&dir, opts(vec![repo().join("data/samples").display().to_string()])).await;
    assert!(s.written.values().sum::<u64>() > 0, "{s:?}");
    let lake = wisp::lake::Lake::open(&dir.display().to_string()).unwrap();
    wisp::session::open(&lake, &Default::default()).await.unwrap()
}

/// `VARCHAR` in SQL is `Utf8`, the lake's type, and so is every string column of a pivot's
/// timeline (a `Utf8View` column gathered by a sort points into every batch it came from, and the
/// sort is charged for all of them: a 30-day pivot on large ran out of the pool). The pivot
/// resolves a name among the window's events, and over the whole lake when the window knows none.
#[tokio::test]
async fn sql_strings_and_the_pivot_timeline_are_utf8_and_names_resolve_outside_the_window() {
    use arrow::datatypes::DataType;
    let ctx = samples_session("pivot-types").await;
    let df = ctx.sql("SELECT CAST(1 AS VARCHAR) AS a, 'x' || CAST(2 AS TEXT) AS b").await.unwrap();
    for f in df.schema().fields() {
        assert_eq!(f.data_type(), &DataType::Utf8, "{f}");
    }
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&chrono::Utc);
    let (from, to) = (at("2026-11-20T00:00:00Z"), at("2026-11-21T00:00:00Z"));
    let id = wisp::pivot::resolve(&ctx, "PAYROLL-SYNC", from, to).await.unwrap();
    assert!(id.sp_ids.contains("5f3e0000-aaaa-4bbb-8ccc-000000000001"), "{id:?}");
    assert!(id.app_ids.contains("0a1b2c3d-1111-4111-8111-000000000001"), "{id:?}");
    let before = wisp::pivot::resolve(&ctx, "payroll-sync", at("2020-01-01T00:00:00Z"), at("2020-01-02T00:00:00Z"));
    assert_eq!(before.await.unwrap(), id, "an empty window falls back to the whole lake");
    let df = wisp::pivot::timeline(&ctx, &id, from, to).await.unwrap();
    let schema = df.schema().as_arrow().clone();
    let batches = df.collect().await.unwrap();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert!(rows > 5, "{rows}");
    for f in batches.iter().flat_map(|b| b.schema().fields().to_vec()).chain(schema.fields().to_vec()) {
        assert_ne!(f.data_type(), &DataType::Utf8View, "{f}");
    }
}

/// `lake::views`: scans decode strings as views, and every query still sees `Utf8` and returns
/// what a scan without the rule returns, for the string predicates the scan evaluates itself
/// (equality, IN, LIKE, IS NULL, functions) and a join's dynamic filter.
#[tokio::test]
async fn string_views_in_scans_change_no_result_and_no_type() {
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;
    let with = samples_session("views").await;
    // The session's lake scan rule (day bounds and views in one walk) replaced by the day bounds
    // alone.
    let rules: Vec<_> = with
        .state()
        .physical_optimizers()
        .iter()
        .map(|r| match r.name() {
            "wisp_lake_scans" => std::sync::Arc::new(wisp::lake::days::DayBounds) as _,
            _ => r.clone(),
        })
        .collect();
    assert!(
        with.state().physical_optimizers().iter().any(|r| r.name() == "wisp_lake_scans"),
        "the session runs the rule"
    );
    let without = SessionContext::new_with_state(
        SessionStateBuilder::new_from_existing(with.state()).with_physical_optimizer_rules(rules).build(),
    );
    let queries = [
        "SELECT id, service_principal_id, source_ip, arrow_typeof(service_principal_name) AS t FROM signins \
         WHERE category = 'ServicePrincipalSignInLogs' ORDER BY id",
        "SELECT id, app_id FROM signins WHERE service_principal_name IN ('a', 'b') OR app_id LIKE '%0%' ORDER BY id",
        "SELECT id FROM signins WHERE user_principal_name IS NULL AND lower(category) <> 'x' ORDER BY id",
        "SELECT a.id, s.id AS signin FROM audit a JOIN signins s ON s.service_principal_id = a.target_id \
         ORDER BY 1, 2",
        "SELECT operation_name, count(*) AS n, min(source_ip) AS ip FROM audit GROUP BY 1 ORDER BY 1",
    ];
    for sql in queries {
        let df = with.sql(sql).await.unwrap();
        let schema = df.schema().as_arrow().clone();
        let a = df.collect().await.unwrap();
        let b = without.sql(sql).await.unwrap().collect().await.unwrap();
        let text = |b: &[arrow::array::RecordBatch]| arrow::util::pretty::pretty_format_batches(b).unwrap().to_string();
        assert_eq!(text(&a), text(&b), "{sql}");
        assert!(a.iter().map(|b| b.num_rows()).sum::<usize>() > 0, "{sql} found nothing");
        for f in a.iter().flat_map(|b| b.schema().fields().to_vec()).chain(schema.fields().to_vec()) {
            assert_ne!(f.data_type(), &arrow::datatypes::DataType::Utf8View, "{sql}: {f}");
        }
        if sql.contains("arrow_typeof") {
            assert!(text(&a).contains("| Utf8 "), "{}", text(&a));
        }
    }
    // The scans read through the rule's reader factory, and adapt their predicates (the join's
    // dynamic filter among them) with `lake::view_filters`' adapter.
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::datasource::physical_plan::{FileScanConfig, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    let plan = with.sql(queries[3]).await.unwrap().create_physical_plan().await.unwrap();
    let (mut factories, mut adapters) = (Vec::new(), Vec::new());
    plan.apply(|node| {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>() {
            let config = exec.data_source().downcast_ref::<FileScanConfig>().unwrap();
            let parquet = config.file_source().downcast_ref::<ParquetSource>().unwrap();
            factories.push(format!("{:?}", parquet.parquet_file_reader_factory()));
            adapters.push(format!("{:?}", config.expr_adapter_factory));
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    assert!(factories.len() == 2 && factories.iter().all(|f| f.contains("ViewReaderFactory")), "{factories:?}");
    assert!(adapters.iter().all(|a| a.contains("ViewFilterAdapterFactory")), "{adapters:?}");
}

/// A file that cannot be stored (every day's folder of `signins` is a file) fails the
/// ingest with the store's error, whatever the number of mapping and encoding threads, whether
/// the failure is met at a flush or while a reopened day waits for its files; it never hangs.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_cannot_be_stored_fails_the_ingest_whatever_the_threads() {
    let dir = tmp("store-fail-in");
    let line = |day: u32, id: &str| {
        format!(
            r#"{{"time":"2026-01-{day:02}T03:04:05Z","category":"ServicePrincipalSignInLogs","properties":{{"id":"{id}","servicePrincipalId":"sp","ipAddress":"1.2.3.4","status":{{"errorCode":0}}}}}}"#
        )
    };
    // Days of sign-ins, then the first day again: the writer keeps 48 days open, so the first is
    // flushed, forgotten and reopened, waiting for the files written of it.
    let mut lines: Vec<String> = (0..60).map(|d| line(1 + d % 28, &format!("id-{d}"))).collect();
    lines.extend((0..60).map(|d| line(1 + d % 28, &format!("feb-{d}")).replace("2026-01-", "2026-02-")));
    lines.push(line(1, "again"));
    std::fs::write(dir.join("PT1H.json"), lines.join("\n")).unwrap();
    for threads in [1, 2, 4] {
        let lake_dir = tmp("store-fail-lake");
        // Listing a day finds no Parquet file there; storing one in it fails.
        std::fs::create_dir_all(lake_dir.join("signins")).unwrap();
        for m in 1..=2 {
            for d in 1..=28 {
                std::fs::write(lake_dir.join(format!("signins/day=2026-{m:02}-{d:02}")), "not a folder").unwrap();
            }
        }
        let lake = wisp::lake::Lake::open(&lake_dir.display().to_string()).unwrap();
        let mut o = opts(vec![dir.display().to_string()]);
        o.threads = threads;
        let res = tokio::time::timeout(std::time::Duration::from_secs(120), wisp::ingest::ingest(&lake, &o))
            .await
            .unwrap_or_else(|_| panic!("the ingest hung with {threads} threads"));
        let err = res.expect_err("nothing could be stored").to_string();
        assert!(err.contains("signins"), "{threads} threads: {err}");
    }
}

/// Of two records with one id, the first in the input is kept whatever their times (a later
/// version with an earlier time is a duplicate), by the typed reader's sign-ins and the general
/// path's audit records alike, within a chunk and across chunks; a file's rows are in time
/// order, records with one time in input order.
#[tokio::test]
async fn the_first_of_two_records_with_one_id_is_kept_whatever_their_times() {
    let signin = |id: &str, t: &str, ip: &str| {
        format!(
            r#"{{"time":"2026-01-01T{t}Z","category":"ServicePrincipalSignInLogs","properties":{{"id":"{id}","createdDateTime":"2026-01-01T{t}Z","servicePrincipalId":"sp-1","ipAddress":"{ip}","status":{{"errorCode":0}}}}}}"#
        )
    };
    let audit = |id: &str, t: &str, name: &str| {
        format!(
            r#"{{"time":"2026-01-01T{t}Z","category":"AuditLogs","properties":{{"id":"{id}","activityDateTime":"2026-01-01T{t}Z","activityDisplayName":"{name}"}}}}"#
        )
    };
    let lines = [
        signin("dup", "10:00:00", "203.0.113.1"),
        audit("a-dup", "10:00:00", "first"),
        signin("s-late", "11:00:00", "203.0.113.3"),
        signin("same-1", "09:30:00", "203.0.113.4"),
        signin("dup", "08:00:00", "203.0.113.2"),
        audit("a-dup", "07:00:00", "second"),
        signin("same-2", "09:30:00", "203.0.113.5"),
        signin("same-3", "09:30:00", "203.0.113.6"),
    ];
    let input = tmp("first-of-dups");
    let blob = input.join("PT1H.json");
    std::fs::write(&blob, lines.join("\n") + "\n").unwrap();
    for (threads, chunk) in [(1, 2 << 20), (2, 1), (1, 700)] {
        let lake = tmp("first-of-dups-lake");
        let o = wisp::ingest::IngestOptions { threads, chunk_bytes: chunk, ..opts(vec![blob.display().to_string()]) };
        let s = ingest_into(&lake, o).await;
        assert_eq!((s.read, s.duplicates, s.written_total()), (8, 2, 6), "{threads}/{chunk}: {s:?}");
        let b = query(&lake, "SELECT id, source_ip FROM signins WHERE id = 'dup'").await;
        let t = arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string();
        assert!(t.contains("203.0.113.1") && !t.contains("203.0.113.2"), "{threads}/{chunk}:\n{t}");
        let b = query(&lake, "SELECT operation_name FROM audit").await;
        let t = arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string();
        assert!(t.contains("first") && !t.contains("second"), "{threads}/{chunk}:\n{t}");
        // The sign-ins' file, read in its own order.
        let files: Vec<String> =
            files_under(&lake.join("signins")).into_iter().filter(|f| f.ends_with(".parquet")).collect();
        let mut ids = Vec::new();
        for f in &files {
            let file = std::fs::File::open(lake.join("signins").join(f)).unwrap();
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
            // The file declares the table's columns (its `raw`, written from views, as `Utf8`).
            assert_eq!(builder.schema().fields(), wisp::lake::Table::Signins.schema().fields(), "{f}");
            let reader = builder.build().unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch.column_by_name("id").unwrap();
                let col = arrow::array::AsArray::as_string::<i32>(col.as_ref());
                ids.extend(col.iter().map(|v| v.unwrap().to_string()));
            }
        }
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(ids, ["same-1", "same-2", "same-3", "dup", "s-late"], "{threads}/{chunk}");
    }
}
