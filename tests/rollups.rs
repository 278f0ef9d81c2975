//! Rollups (`src/rollups.rs`): the rules reading rollups give exactly what they give over the
//! events alone — on windows of whole days, unaligned edges, a single hour and less —
//! and a day whose files changed after its summary was written is read raw until the summary is
//! written again.

mod common;
use chrono::{DateTime, Utc};
use common::*;
use wisp::gen::{generate, GenOptions, GenOutput, Profile};
use wisp::lake::Lake;
use wisp::rules::{self, Rule};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

const WINDOWS: [(&str, &str); 6] = [
    ("2026-11-17T00:00:00Z", "2026-11-20T00:00:00Z"),
    ("2026-11-17T07:13:00Z", "2026-11-19T21:47:00Z"),
    ("2026-11-17T16:00:00Z", "2026-11-18T16:00:00Z"),
    ("2026-11-18T10:00:00Z", "2026-11-18T11:00:00Z"),
    ("2026-11-18T10:20:00Z", "2026-11-18T10:50:00Z"),
    ("2026-11-18T00:00:00Z", "2026-11-19T00:00:00.000001Z"),
];

/// Windows of the rules with a ten-day history (the ASN, credential-failure and Key Vault rules)
/// besides `WINDOWS`, whose history (the ten days before the window's end, up to its start) is two
/// minutes long (an hour row can reach past both of its ends, so the events are read), twelve
/// hours from 06:00 (a day row can reach past both ends, so hours are read), a day ending at
/// midnight, from 13:00 on the first day to 09:00 on the third (the first day's and the last day's
/// 'day' rows each reach past one end of it), or empty (a window longer than the history).
const HISTORY_WINDOWS: [(&str, &str); 5] = [
    ("2026-11-18T06:31:00Z", "2026-11-28T06:29:00Z"),
    ("2026-11-18T18:00:00Z", "2026-11-28T06:00:00Z"),
    ("2026-11-19T00:00:00Z", "2026-11-28T00:00:00Z"),
    ("2026-11-19T09:00:00Z", "2026-11-27T13:00:00Z"),
    ("2026-11-16T00:00:00Z", "2026-11-27T00:00:00Z"),
];

/// The rules that read rollups, each over every window: their rows, sorted (the failure rule's
/// output has no order of its own).
async fn hunt(lake: &std::path::Path) -> Vec<String> {
    hunt_with(lake, false).await
}

/// The plan of the out-of-memory retry (`query::spilling_joins`, sort-merge joins as Ballista
/// plans them too), with every equi-join sort-merge, also those with a small build side; and
/// small batches, so the joins compare keys across batches as they do on a large lake (DataFusion
/// 55's semi and anti sort-merge joins then fail on a key that is a time with a zone, which a
/// tiny lake in one batch does not show).
fn sort_merge(df: datafusion::dataframe::DataFrame) -> datafusion::dataframe::DataFrame {
    wisp::query::with_own_options(wisp::query::spilling_joins(df), |o| {
        o.optimizer.hash_join_single_partition_threshold = 0;
        o.optimizer.hash_join_single_partition_threshold_rows = 0;
        o.execution.batch_size = datafusion::config::ConfigNonZeroUsize::try_new(64).unwrap();
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap()
}

/// `hunt`, with sort-merge joins when `merge` is set.
async fn hunt_with(lake: &std::path::Path, merge: bool) -> Vec<String> {
    let joins = |df| if merge { sort_merge(df) } else { df };
    let l = Lake::open(&lake.display().to_string()).unwrap();
    let ctx = wisp::session::open(&l, &Default::default()).await.unwrap();
    let mut out = Vec::new();
    for id in RULES {
        let r: Rule = rules::load_all(None).unwrap().into_iter().find(|r| r.meta.id == id).unwrap();
        let extra: &[(&str, &str)] = if [ASN, FAILURES, KEYVAULT].contains(&id) { &HISTORY_WINDOWS } else { &[] };
        for &(s, e) in WINDOWS.iter().chain(extra) {
            let w = rules::RunWindow { start: t(s), end: t(e) };
            let rows = joins(r.plan(&ctx, &w).await.unwrap()).collect().await.unwrap();
            let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort();
            out.push(format!("{id} {s} {e}\n{}", lines.join("\n")));
            if let Some(df) =
                r.plan_backtest(&ctx, &w).await.unwrap().filter(|_| [CREDENTIAL, ASN, FAILURES, KEYVAULT].contains(&id))
            {
                let rows = joins(df).collect().await.unwrap();
                let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
                let mut lines: Vec<&str> = text.lines().collect();
                lines.sort();
                out.push(format!("{id} backtest {s} {e}\n{}", lines.join("\n")));
            }
        }
    }
    out
}

/// The credential rule's alerts over the first window, each checked against the sign-ins table
/// directly (not through the rollup or its view): the number of successful sign-ins of the
/// matched principal in the change's look-back (from its minute, three days back, to the change)
/// and the last of them. Returns how many alerts were checked.
async fn credential_alerts_match_signins(lake: &std::path::Path) -> usize {
    let l = Lake::open(&lake.display().to_string()).unwrap();
    let ctx = wisp::session::open(&l, &Default::default()).await.unwrap();
    let r: Rule = rules::load_all(None).unwrap().into_iter().find(|r| r.meta.id == CREDENTIAL).unwrap();
    let w = rules::RunWindow { start: t(WINDOWS[0].0), end: t(WINDOWS[0].1) };
    let alerts = r.plan(&ctx, &w).await.unwrap().collect().await.unwrap();
    let n: usize = alerts.iter().map(|b| b.num_rows()).sum();
    let table = datafusion::datasource::MemTable::try_new(alerts[0].schema(), vec![alerts]).unwrap();
    ctx.register_table("checked_alerts", std::sync::Arc::new(table)).unwrap();
    let sql = "SELECT a.audit_id, a.matched_by, a.prior_signins, a.last_signin, count(s.ts) AS n, max(s.ts) AS last
               FROM checked_alerts a LEFT JOIN signins s
                 ON s.category = 'ServicePrincipalSignInLogs' AND s.error_code = 0
                AND s.ts < a.ts AND s.ts >= date_trunc('minute', a.ts) - INTERVAL '3 days'
                AND ((a.matched_by = 'service_principal_id' AND s.service_principal_id = a.target_id)
                     OR (a.matched_by = 'app_id' AND s.app_id = a.app_id))
               GROUP BY a.audit_id, a.matched_by, a.prior_signins, a.last_signin
               HAVING count(s.ts) <> a.prior_signins OR max(s.ts) IS DISTINCT FROM a.last_signin";
    let wrong = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&wrong).unwrap().to_string();
    assert!(wrong.iter().all(|b| b.num_rows() == 0), "alerts whose look-back differs from the sign-ins:\n{text}");
    n
}

/// The risk stacking rule's alerts over every window, each checked against the sign-ins table
/// directly (not through the rollup or its view): the stacked principal's sign-ins in the
/// window (its start excluded), successful ones and distinct addresses (no allowlist is loaded,
/// so all count). Returns how many alerts with sign-ins were checked.
async fn risk_alerts_match_signins(lake: &std::path::Path) -> usize {
    let l = Lake::open(&lake.display().to_string()).unwrap();
    let ctx = wisp::session::open(&l, &Default::default()).await.unwrap();
    let r: Rule = rules::load_all(None).unwrap().into_iter().find(|r| r.meta.id == RISK).unwrap();
    let mut checked = 0;
    for (i, &(s, e)) in WINDOWS.iter().enumerate() {
        let w = rules::RunWindow { start: t(s), end: t(e) };
        let alerts = r.plan(&ctx, &w).await.unwrap().collect().await.unwrap();
        if alerts.iter().all(|b| b.num_rows() == 0) {
            continue;
        }
        let name = format!("risk_alerts_{i}");
        let table = datafusion::datasource::MemTable::try_new(alerts[0].schema(), vec![alerts]).unwrap();
        ctx.register_table(name.as_str(), std::sync::Arc::new(table)).unwrap();
        let sql = format!(
            "SELECT a.service_principal_id, a.signin_count, a.successful_signins, a.distinct_ips,
                    count(s.ts) AS n, coalesce(sum(CASE WHEN s.error_code = 0 THEN 1 ELSE 0 END), 0) AS ok,
                    count(DISTINCT s.source_ip) AS ips
             FROM {name} a LEFT JOIN signins s
               ON s.category = 'ServicePrincipalSignInLogs' AND s.service_principal_id = a.service_principal_id
              AND s.ts > TIMESTAMP '{s}' AND s.ts <= TIMESTAMP '{e}'
             GROUP BY a.service_principal_id, a.signin_count, a.successful_signins, a.distinct_ips"
        );
        let rows = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
        for b in &rows {
            let col = |j: usize| arrow::compute::cast(b.column(j), &arrow::datatypes::DataType::Int64).unwrap();
            let (got, want) = ((col(1), col(2), col(3)), (col(4), col(5), col(6)));
            assert_eq!(got, want, "window {s} – {e}: alerts against the sign-ins:\n{text}");
            let n = got.0.as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
            checked += n.iter().filter(|v| v.unwrap_or(0) > 0).count();
        }
    }
    checked
}

const KEEP: std::time::Duration = wisp::rollups::KEEP_REPLACED;
const CREDENTIAL: &str = "sp_credential_added_after_signin";
const ASN: &str = "sp_unusual_source_asn";
const FAILURES: &str = "sp_credential_failures_from_new_source";
const KEYVAULT: &str = "sp_keyvault_read_from_new_source";
const KEYVAULT_ROLLUP: &str = "sp_keyvault_read_rollup";
const RISK: &str = "sp_risk_event_stacking";
const TOKEN: &str = "sp_token_replay_from_unseen_address";
const RULES: [&str; 8] =
    ["sp_rare_action_multiple_ips", "sp_failed_signins", CREDENTIAL, ASN, FAILURES, KEYVAULT, RISK, TOKEN];
const ROLLUPS: [&str; 8] = [
    "sp_activity_rollup",
    "sp_failed_signin_rollup",
    "sp_signin_rollup",
    "sp_asn_rollup",
    "sp_signin_source_rollup",
    "sp_keyvault_read_rollup",
    "sp_signin_outcome_rollup",
    "sp_signin_address_rollup",
];

/// Rows of each rollup's view per day and grain.
async fn grains(lake: &std::path::Path) -> String {
    let mut out = String::new();
    for r in ROLLUPS {
        let sql = format!(
            "SELECT '{r}' AS rollup, day, grain, count(*) AS rows, sum(n) AS events FROM {r} GROUP BY day, grain ORDER BY day, grain"
        );
        out += &query_text(lake, &sql).await;
    }
    out
}

fn days(w: &[wisp::rollups::RollupWrite], rollup: &str) -> Vec<String> {
    w.iter().filter(|w| w.rollup == rollup && !w.week).map(|w| w.day.clone()).collect()
}

/// The weeks written (their Mondays), per rollup.
fn weeks(w: &[wisp::rollups::RollupWrite]) -> Vec<(String, String)> {
    w.iter().filter(|w| w.week).map(|w| (w.rollup.to_string(), w.day.clone())).collect()
}

/// The Key Vault rollup's weekly view: rows per grain and day (a week's under its Monday).
async fn weekly_grains(lake: &std::path::Path) -> String {
    query_text(
        lake,
        "SELECT day, grain, count(*) AS rows, sum(n) AS events FROM sp_keyvault_read_rollup_weekly \
         GROUP BY day, grain ORDER BY day, grain",
    )
    .await
}

fn copy_without_rollups(lake: &std::path::Path) -> std::path::PathBuf {
    let to = tmp("rollups-raw-copy");
    let ok = std::process::Command::new("cp").arg("-a").arg(format!("{}/.", lake.display())).arg(&to).status().unwrap();
    assert!(ok.success());
    std::fs::remove_dir_all(to.join(wisp::rollups::FOLDER)).unwrap();
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_over_rollups_equal_rules_over_events_and_stale_days_are_read_raw() {
    let out = tmp("rollups-gen");
    let o = GenOptions {
        profile: Profile::Small,
        days: 3,
        seed: 11,
        output: GenOutput::Lake,
        out: out.clone(),
        end: t("2026-11-20T00:00:00Z"),
        keep_raw: false,
        gzip: true,
        progress: false,
        threads: 0,
    };
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || generate(&o, h)).await.unwrap().unwrap();
    let lake_dir = out.join("lake");
    let lake = Lake::open(&lake_dir.display().to_string()).unwrap();
    let _ = std::fs::remove_dir_all(lake_dir.join(wisp::rollups::FOLDER));

    // Without summaries the view is the events (one row each).
    let raw = hunt(&lake_dir).await;
    assert!(raw[0].lines().count() > 10, "the 3-day window finds rare actions: {}", raw[0]);
    let failed = WINDOWS.len();
    assert!(raw[failed].lines().count() > 10, "and failed sign-ins: {}", raw[failed]);
    // The credential rule's hunt and backtest of each window follow; over three days it finds
    // changes whose look-back starts and ends inside hours (the straddling rows' times are read).
    let credential = 2 * WINDOWS.len();
    assert!(raw[credential].lines().count() > 6, "and credentials added: {}", raw[credential]);
    assert!(raw[credential + 1].lines().count() > 6, "its backtest too: {}", raw[credential + 1]);
    // The ASN rule's hunt and backtest of each of its windows: over three days of a tenant whose
    // history starts with them, pairs are new; so are some over the long windows.
    let asn = 4 * WINDOWS.len();
    let history_windows = WINDOWS.len() + HISTORY_WINDOWS.len();
    // Then the credential-failure rule's hunt and backtest of each window.
    let failures = asn + 2 * history_windows;
    assert!(raw[failures].lines().count() > 4, "credential failures from new sources: {}", raw[failures]);
    assert!(raw[failures + 1].lines().count() > 4, "its backtest too: {}", raw[failures + 1]);
    // Then the Key Vault rule's.
    let keyvault = failures + 2 * history_windows;
    // Then the risk stacking hunt's.
    let risk = keyvault + 2 * history_windows;
    // Then the token replay hunt's.
    let token = risk + WINDOWS.len();
    assert_eq!(raw.len(), token + WINDOWS.len());
    assert!(raw[token].lines().count() > 4, "calls from addresses no nearby sign-in used: {}", raw[token]);
    assert!(raw[risk].lines().count() > 4, "stacked risk with sign-ins: {}", raw[risk]);
    assert!(raw[keyvault].lines().count() > 4, "Key Vault reads from new addresses: {}", raw[keyvault]);
    assert!(raw[keyvault + 1].lines().count() > 4, "its backtest too: {}", raw[keyvault + 1]);
    assert!(raw[asn].lines().count() > 6, "pairs new to the ASN rule: {}", raw[asn]);
    assert!(raw[asn + 1].lines().count() > 6, "its backtest too: {}", raw[asn + 1]);
    for i in 0..HISTORY_WINDOWS.len() {
        let at = asn + 2 * (WINDOWS.len() + i);
        assert!(raw[at].lines().count() > 4, "{}", raw[at]);
    }
    // The window whose history begins and ends inside days finds new keys for every rule with a
    // ten-day history (so a day row of its first or last day read or left out wrongly shows).
    let mid = WINDOWS.len() + 3;
    for at in [asn + 2 * mid, failures + 2 * mid, keyvault + 2 * mid] {
        assert!(raw[at].lines().count() > 4, "{}", raw[at]);
    }
    let g = grains(&lake_dir).await;
    assert!(
        g.contains("| event |") && !g.contains("| hour  |") && !g.contains("| day   |") && !g.contains("times"),
        "{g}"
    );

    // Summaries of every day: the same rows for every window, read from 'day' and 'hour' rows.
    let written = wisp::rollups::refresh(&lake, None, 512 << 20, KEEP).await.unwrap();
    for r in ROLLUPS {
        assert_eq!(days(&written, r), ["2026-11-17", "2026-11-18", "2026-11-19"], "{r}");
    }
    // And the week of those days (Monday 2026-11-16 to Sunday 2026-11-22, all ended), for the
    // rollup with weeks: the hour windows' ten-day histories read it instead of its days.
    let week = vec![(KEYVAULT_ROLLUP.to_string(), "2026-11-16".to_string())];
    assert_eq!(weeks(&written), week);
    let w = weekly_grains(&lake_dir).await;
    assert!(w.contains("| 2026-11-16 | week  |") && !w.contains("| day   |") && !w.contains("| event |"), "{w}");
    let events: u64 = written.iter().filter(|w| w.rollup == ROLLUPS[0]).map(|w| w.events).sum();
    let g = grains(&lake_dir).await;
    assert!(!g.contains("| event |") && g.contains("| hour  |") && g.contains("| day   |"), "{g}");
    assert!(g.contains("sp_signin_rollup") && g.contains("| times |"), "{g}");
    let all = query_text(&lake_dir, "SELECT sum(n) AS n FROM sp_activity_rollup WHERE grain = 'day'").await;
    assert!(all.contains(&format!("| {events} ")), "{all} vs {events}");
    let rolled = hunt(&lake_dir).await;
    for (i, (a, b)) in raw.iter().zip(&rolled).enumerate() {
        assert_eq!(a, b, "{}", i);
    }
    // The same rows with every join a sort-merge join.
    let merged = hunt_with(&lake_dir, true).await;
    for (i, (a, b)) in rolled.iter().zip(&merged).enumerate() {
        assert_eq!(a, b, "sort-merge joins: {}", i);
    }
    assert!(credential_alerts_match_signins(&lake_dir).await >= 3);
    assert!(risk_alerts_match_signins(&lake_dir).await >= 2);
    // Nothing changed, nothing is written again.
    assert!(wisp::rollups::refresh(&lake, None, 512 << 20, KEEP).await.unwrap().is_empty());

    // A late file for 2026-11-18 (an app signing in at 10:30 from two addresses, and at the
    // day's last microsecond): that day is now stale and read raw; the others stay summarized.
    let late = tmp("rollups-late");
    let rec_of = |sp: &str, id: &str, ts: &str, ip: &str, code: i64| {
        serde_json::json!({"time": ts, "category": "ServicePrincipalSignInLogs", "tenantId": "tenant-1",
            "properties": {"id": id, "createdDateTime": ts, "servicePrincipalId": format!("id-{sp}"), "servicePrincipalName": sp,
            "appId": format!("app-{sp}"), "ipAddress": ip, "status": {"errorCode": code}, "resourceDisplayName": "Microsoft Graph"}})
    };
    let rec = |id: &str, ts: &str, ip: &str, code: i64| {
        rec_of(if code == 0 { "late-app" } else { "late-failing-app" }, id, ts, ip, code)
    };
    let mut recs = vec![
        rec("late-1", "2026-11-18T10:30:00Z", "203.0.113.5", 0),
        rec("late-2", "2026-11-18T10:40:00Z", "203.0.113.6", 0),
        rec("late-3", "2026-11-18T23:59:59.999999Z", "203.0.113.7", 0),
    ];
    // Failures from one address across 10:15-10:44, past the failure rule's threshold.
    for i in 0..30 {
        recs.push(rec(&format!("late-f{i}"), &format!("2026-11-18T10:{:02}:00Z", 15 + i), "203.0.113.9", 7000215));
    }
    // The failing app signs in successfully from that address exactly at 11:00 (the end of the
    // failures' run, so the address is known to it) and again at 11:20, in the same clock hour
    // (whose summary row starts at 11:00 but reaches into the next run's bucket); two failures
    // from another address at 10:50 are the run's only new source.
    recs.push(rec_of("late-failing-app", "late-s1", "2026-11-18T11:00:00Z", "203.0.113.9", 0));
    recs.push(rec_of("late-failing-app", "late-s2", "2026-11-18T11:20:00Z", "203.0.113.9", 0));
    recs.push(rec("late-f30", "2026-11-18T10:50:00Z", "203.0.113.10", 7000215));
    recs.push(rec("late-f31", "2026-11-18T10:55:00Z", "203.0.113.10", 7000215));
    let body = recs.iter().map(|r| format!("{r}\n")).collect::<String>();
    std::fs::write(late.join("PT1H.json"), body).unwrap();
    // And a credential added to the late app just after midnight: its look-back holds the late
    // sign-ins, read as 'event' rows of the stale day.
    let change = serde_json::json!({"time": "2026-11-19T00:00:00.5Z", "category": "AuditLogs",
        "properties": {"id": "late-change", "activityDateTime": "2026-11-19T00:00:00.5Z",
        "activityDisplayName": "Add service principal credentials", "result": "success",
        "targetResources": [{"id": "id-late-app", "displayName": "late-app", "type": "ServicePrincipal",
            "modifiedProperties": [{"displayName": "KeyDescription", "oldValue": "[]",
                "newValue": "[\"[KeyIdentifier=k-late,KeyType=Password,KeyUsage=Verify,DisplayName=late]\"]"}]}]}});
    std::fs::write(late.join("audit.json"), format!("{change}\n")).unwrap();
    // And a caller reading a vault for the first time, from one address at 10:30 and 10:40 (one
    // run) and from another exactly at 12:00 (a run's end): the Key Vault rollup's day is stale too.
    let read = |ts: &str, ip: &str| {
        serde_json::json!({"time": ts, "resourceId": "/SUBSCRIPTIONS/S-1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/KV-LATE",
            "operationName": "SecretGet", "category": "AuditEvent", "resultType": "Success", "callerIpAddress": ip,
            "identity": {"claim": {"http://schemas.microsoft.com/identity/claims/objectidentifier": "late-kv-caller"}},
            "properties": {"id": "https://kv-late.vault.azure.net/secrets/s1", "httpStatusCode": 200}})
    };
    let reads = [
        read("2026-11-18T10:30:00Z", "203.0.113.20"),
        read("2026-11-18T10:40:00Z", "203.0.113.20"),
        read("2026-11-18T12:00:00Z", "203.0.113.21"),
    ];
    std::fs::write(late.join("kv.json"), reads.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    // And two risk detections of the failing app at 10:30 and 10:35: stacked in the run ending
    // 11:00, whose sign-ins are its 32 failures from 10:15 and its success exactly at 11:00 (the
    // rollup's 11:00 hour row belongs to the next run), but not the one at 11:20.
    let risk_event = |id: &str, ts: &str, kind: &str| {
        serde_json::json!({"time": ts, "category": "ServicePrincipalRiskEvents", "properties": {"id": id,
            "riskEventType": kind, "riskLevel": "medium", "riskState": "atRisk", "detectedDateTime": ts,
            "lastUpdatedDateTime": ts, "servicePrincipalId": "id-late-failing-app",
            "servicePrincipalDisplayName": "late-failing-app", "appId": "app-late-failing-app"}})
    };
    let risks = [
        risk_event("late-risk-1", "2026-11-18T10:30:00Z", "leakedCredentials"),
        risk_event("late-risk-2", "2026-11-18T10:35:00Z", "suspiciousSignins"),
    ];
    std::fs::write(late.join("risk.json"), risks.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let files =
        ["PT1H.json", "audit.json", "kv.json", "risk.json"].map(|f| late.join(f).display().to_string()).to_vec();
    let s = ingest_into(&lake_dir, opts(files)).await;
    assert_eq!(s.written.get("signins").copied(), Some(37), "{s:?}");
    assert_eq!(s.written.get("audit").copied(), Some(1), "{s:?}");
    assert_eq!(s.written.get("resource_logs").copied(), Some(3), "{s:?}");
    assert_eq!(s.written.get("sp_risk_events").copied(), Some(2), "{s:?}");
    let g = grains(&lake_dir).await;
    assert!(g.contains("2026-11-18 | event") && !g.contains("2026-11-17 | event"), "{g}");
    // The week holding the stale day is stale too: its days are read from the day view.
    let w = weekly_grains(&lake_dir).await;
    assert!(!w.contains("| week ") && w.contains("| 2026-11-17 | day ") && w.contains("| 2026-11-18 | event "), "{w}");
    let stale = hunt(&lake_dir).await;
    let expected = hunt(&copy_without_rollups(&lake_dir)).await;
    assert_eq!(stale, expected);
    assert!(stale[0].contains("late-app"), "{}", stale[0]);
    assert!(stale[failed].contains("203.0.113.9"), "{}", stale[failed]);
    let late_change = stale[credential].lines().find(|l| l.contains("late-change")).unwrap_or_default().to_string();
    assert!(late_change.contains("203.0.113.7") && late_change.contains("| 3 "), "{}", stale[credential]);
    assert!(credential_alerts_match_signins(&lake_dir).await >= 4);
    assert!(risk_alerts_match_signins(&lake_dir).await >= 3);
    for at in [keyvault, keyvault + 1] {
        assert!(stale[at].contains("late-kv-caller") && stale[at].contains("203.0.113.21"), "{}", stale[at]);
    }
    let late_risk = stale[risk + 3].lines().find(|l| l.contains("late-failing-app")).unwrap_or_default().to_string();
    assert!(late_risk.contains("| 33 ") && late_risk.contains("[203.0.113.10, 203.0.113.9]"), "{}", stale[risk + 3]);
    for at in [failures, failures + 1] {
        let late = stale[at].lines().find(|l| l.contains("late-failing-app")).unwrap_or_default().to_string();
        assert!(late.contains("203.0.113.10") && !late.contains("203.0.113.9"), "{}", stale[at]);
    }

    // Written again: only the changed days (the audit record changed 2026-11-19, which only the
    // activity rollup reads), the old summaries removed later; still the same rows.
    let written = wisp::rollups::refresh(&lake, None, 512 << 20, KEEP).await.unwrap();
    for r in ROLLUPS {
        let changed: &[&str] = if r == ROLLUPS[0] { &["2026-11-18", "2026-11-19"] } else { &["2026-11-18"] };
        assert_eq!(days(&written, r), changed, "{r}");
        let day = lake_dir.join(wisp::rollups::FOLDER).join(r).join("day=2026-11-18");
        assert_eq!(std::fs::read_dir(&day).unwrap().count(), 2, "the replaced summary stays a while");
    }
    assert_eq!(weeks(&written), week, "the week is written again");
    assert!(weekly_grains(&lake_dir).await.contains("| week "));
    assert!(!grains(&lake_dir).await.contains("| event |"));
    assert_eq!(hunt(&lake_dir).await, expected);
    // Once the current summary is older than the grace period, the replaced one goes.
    assert!(wisp::rollups::refresh(&lake, None, 512 << 20, std::time::Duration::ZERO).await.unwrap().is_empty());
    for r in ROLLUPS {
        let day = lake_dir.join(wisp::rollups::FOLDER).join(r).join("day=2026-11-18");
        assert_eq!(std::fs::read_dir(&day).unwrap().count(), 1, "one summary per day");
    }
    assert_eq!(hunt(&lake_dir).await, expected);
}

/// The Key Vault rule's rows over each window (sorted, as `hunt_with`).
async fn keyvault_rows(lake: &std::path::Path, windows: &[(String, String)]) -> Vec<String> {
    let l = Lake::open(&lake.display().to_string()).unwrap();
    let ctx = wisp::session::open(&l, &Default::default()).await.unwrap();
    let r: Rule = rules::load_all(None).unwrap().into_iter().find(|r| r.meta.id == KEYVAULT).unwrap();
    let mut out = Vec::new();
    for (s, e) in windows {
        let w = rules::RunWindow { start: t(s), end: t(e) };
        let rows = r.plan(&ctx, &w).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        out.push(format!("{s} {e}\n{}", lines.join("\n")));
    }
    out
}

/// Weeks of Key Vault reads summarized (`sp_keyvault_read_rollup_week`): the rule's ten-day
/// histories read from whole weeks' rows (reaching past the start of a history, past its end, or
/// inside it) and the days outside them give exactly the rows of the rule over the events alone,
/// on hour windows at every hour of two weeks and on windows of two to four days (histories of
/// eight, seven — a week exactly — and six days, which reads the days).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weeks_of_keyvault_reads_give_the_rule_over_the_events() {
    let src = tmp("rollups-weeks-src");
    let read = |ts: &str, caller: &str, vault: &str, ip: &str| {
        serde_json::json!({"time": ts, "resourceId": format!("/SUBSCRIPTIONS/S-1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{vault}"),
            "operationName": "SecretGet", "category": "AuditEvent", "resultType": "Success", "callerIpAddress": ip,
            "identity": {"claim": {"http://schemas.microsoft.com/identity/claims/objectidentifier": caller}},
            "properties": {"id": format!("https://{vault}.vault.azure.net/secrets/s1"), "httpStatusCode": 200}})
    };
    // Twenty days (Sunday 2026-11-01 to Friday 2026-11-20, four ISO weeks) of reads by four callers
    // of two vaults, at pseudo-random times.
    let mut lines = Vec::new();
    let mut x: u64 = 7;
    let start = t("2026-11-01T00:00:00Z");
    for i in 0..1200u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let at = start + chrono::Duration::seconds(((x >> 33) % (20 * 86_400)) as i64);
        let caller = format!("caller-{}", i % 4);
        let vault = format!("KV-{}", (x >> 20) % 2);
        // From 5, 30, 80 or 200 addresses: some callers' addresses are all known, others' mostly new.
        let n = (x >> 12) % [5, 30, 80, 200][(i % 4) as usize];
        let ip = format!("10.0.{}.{}", n / 100, n % 100);
        lines.push(read(&at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true), &caller, &vault, &ip));
    }
    // A caller whose first address was last used before its history starts (2026-11-02T09:30 for
    // the window ending 2026-11-12T09:30) and its second inside it, both in the same week's row.
    lines.push(read("2026-11-02T08:00:00Z", "edge-caller", "KV-EDGE", "198.51.100.1"));
    lines.push(read("2026-11-02T08:01:00Z", "edge-caller", "KV-EDGE", "198.51.100.2"));
    lines.push(read("2026-11-05T10:00:00Z", "edge-caller", "KV-EDGE", "198.51.100.2"));
    lines.push(read("2026-11-12T09:00:00Z", "edge-caller", "KV-EDGE", "198.51.100.1"));
    lines.push(read("2026-11-12T09:10:00Z", "edge-caller", "KV-EDGE", "198.51.100.2"));
    std::fs::write(src.join("kv.json"), lines.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
    let lake_dir = tmp("rollups-weeks-lake");
    let s = ingest_into(&lake_dir, opts(vec![src.join("kv.json").display().to_string()])).await;
    assert_eq!(s.written.get("resource_logs").copied(), Some(1205), "{s:?}");
    let lake = Lake::open(&lake_dir.display().to_string()).unwrap();
    let written = wisp::rollups::refresh(&lake, None, 512 << 20, KEEP).await.unwrap();
    let mondays: Vec<String> =
        weeks(&written).into_iter().filter(|(r, _)| r == KEYVAULT_ROLLUP).map(|(_, m)| m).collect();
    assert_eq!(mondays, ["2026-10-26", "2026-11-02", "2026-11-09", "2026-11-16"]);
    let w = weekly_grains(&lake_dir).await;
    assert!(w.contains("| 2026-11-09 | week  |") && !w.contains("| day   |") && !w.contains("| event |"), "{w}");

    let mut windows: Vec<(String, String)> = Vec::new();
    let hour = |h: i64| (t("2026-11-10T00:00:00Z") + chrono::Duration::hours(h)).to_rfc3339();
    for h in (0..14 * 24).step_by(5) {
        windows.push((hour(h), hour(h + 1)));
    }
    windows.push(("2026-11-12T08:30:00Z".into(), "2026-11-12T09:30:00Z".into()));
    for (s, e) in [
        ("2026-11-14T06:00:00Z", "2026-11-16T06:00:00Z"),
        ("2026-11-15T13:00:00Z", "2026-11-18T13:00:00Z"),
        ("2026-11-16T00:00:00Z", "2026-11-20T00:00:00Z"),
    ] {
        windows.push((s.into(), e.into()));
    }
    let rolled = keyvault_rows(&lake_dir, &windows).await;
    let raw = keyvault_rows(&copy_without_rollups(&lake_dir), &windows).await;
    for (a, b) in rolled.iter().zip(&raw) {
        assert_eq!(a, b, "over the weeks, then over the events");
    }
    // The test has teeth: hour windows with new addresses and without, and the edge caller's
    // window alerts on the address last used before its history, not the one used inside it.
    let alerting = raw.iter().filter(|r| r.contains("caller-")).count();
    assert!(alerting > 5 && alerting < windows.len() - 5, "{alerting} of {}", windows.len());
    let edge = raw.iter().find(|r| r.starts_with("2026-11-12T08:30:00Z")).unwrap();
    assert!(edge.contains("198.51.100.1") && !edge.contains("198.51.100.2"), "{edge}");
}

/// The risk stacking rule's rows over each window (sorted), and whether its session read the
/// index of the detections' days (`version_days`) or the table's rows of every day.
async fn risk_rows(lake: &std::path::Path, windows: &[(DateTime<Utc>, DateTime<Utc>)]) -> (Vec<String>, bool) {
    let l = Lake::open(&lake.display().to_string()).unwrap();
    let ctx = wisp::session::open(&l, &Default::default()).await.unwrap();
    let indexed = wisp::version_days::register(&ctx, &l).await.unwrap().is_some();
    let r: Rule = rules::load_all(None).unwrap().into_iter().find(|r| r.meta.id == RISK).unwrap();
    let mut out = Vec::new();
    for &(start, end) in windows {
        let rows = r.plan(&ctx, &rules::RunWindow { start, end }).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
        let mut lines: Vec<&str> = text.lines().filter(|l| l.contains("app-x")).collect();
        lines.sort();
        out.push(lines.join("\n"));
    }
    (out, indexed)
}

/// Versions of one risk detection in three days (its first on 2026-11-18, then re-sent without a
/// detection time on 2026-11-20, then today): each hourly window counts the detection only in the
/// hour of its latest version, whether the index of the detections' days (`version_days`) is
/// current, stale (a day before its end gained a file: the table is read instead) or does not
/// cover the day of the latest version (today's, read from the table) — the same rows as the rule
/// over a copy of the lake without the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_detection_versions_in_other_days_are_found_through_the_index() {
    let lake_dir = tmp("version-days-lake");
    let src = tmp("version-days-src");
    let lake = Lake::open(&lake_dir.display().to_string()).unwrap();
    let risk = |id: &str, time: &str, detected: bool, kind: &str| {
        let mut p = serde_json::json!({"id": id, "riskEventType": kind, "riskLevel": "medium", "riskState": "atRisk",
            "lastUpdatedDateTime": time, "servicePrincipalId": "id-app-x", "servicePrincipalDisplayName": "app-x",
            "appId": "app-app-x"});
        if detected {
            p["detectedDateTime"] = serde_json::json!(time);
        }
        serde_json::json!({"time": time, "category": "ServicePrincipalRiskEvents", "properties": p})
    };
    let mut n = 0;
    let mut ingest = |recs: Vec<serde_json::Value>| {
        n += 1;
        let f = src.join(format!("risk-{n}.json"));
        std::fs::write(&f, recs.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
        let lake_dir = lake_dir.clone();
        async move {
            let s = ingest_into(&lake_dir, opts(vec![f.display().to_string()])).await;
            assert_eq!(s.written.get("sp_risk_events").copied(), Some(recs.len() as u64), "{s:?}");
        }
    };
    let now = Utc::now() - chrono::Duration::minutes(2);
    let now = now - chrono::Duration::nanoseconds(now.timestamp_subsec_nanos().into());
    let hour = |end: &str| (t(end) - chrono::Duration::hours(1), t(end));
    // 2026-11-18 10:00–11:00, 2026-11-20 08:00–09:00, and the hour up to the last version.
    let windows = [hour("2026-11-18T11:00:00Z"), hour("2026-11-20T09:00:00Z"), (now - chrono::Duration::hours(1), now)];
    let check = |indexed_expected: bool| {
        let lake_dir = lake_dir.clone();
        async move {
            let (rows, indexed) = risk_rows(&lake_dir, &windows).await;
            assert_eq!(indexed, indexed_expected, "{rows:?}");
            let (raw, raw_indexed) = risk_rows(&copy_without_rollups(&lake_dir), &windows).await;
            assert!(!raw_indexed);
            assert_eq!(rows, raw, "through the index and through the table");
            rows
        }
    };

    // An anomalous token (a high-severity type) and a suspicious sign-in of app-x, both detected
    // in the first hour: stacked there.
    ingest(vec![
        risk("r-1", "2026-11-18T10:30:00Z", true, "anomalousToken"),
        risk("r-2", "2026-11-18T10:35:00Z", true, "suspiciousSignins"),
    ])
    .await;
    let written = wisp::rollups::refresh(&lake, None, 512 << 20, KEEP).await.unwrap();
    assert_eq!(days(&written, wisp::version_days::NAME), [Utc::now().format("%Y-%m-%d").to_string()]);
    let rows = check(true).await;
    assert!(rows[0].contains("anomalousToken, suspiciousSignins") && rows[0].contains("| High "), "{rows:?}");
    assert!(rows[1].is_empty() && rows[2].is_empty(), "{rows:?}");

    // r-1 re-sent on 2026-11-20 without a detection time: its latest version is in the second
    // hour; the first keeps only r-2 (one type of medium severity: no alert). The index is stale
    // (a day before its end has a new file): the table is read.
    ingest(vec![risk("r-1", "2026-11-20T08:30:00Z", false, "anomalousToken")]).await;
    let rows = check(false).await;
    assert!(rows[0].is_empty(), "{rows:?}");
    assert!(rows[1].contains("[anomalousToken]") && rows[1].contains("| High "), "{rows:?}");
    assert!(rows[2].is_empty(), "{rows:?}");
    // Written again: read through the index, the same rows.
    let written = wisp::rollups::refresh(&lake, None, 512 << 20, KEEP).await.unwrap();
    assert_eq!(days(&written, wisp::version_days::NAME).len(), 1);
    assert_eq!(check(true).await, rows);
    assert!(wisp::rollups::refresh(&lake, None, 512 << 20, KEEP).await.unwrap().is_empty(), "nothing changed");

    // And re-sent again minutes ago: its latest version is today's, a day the index leaves to
    // the table; the second hour loses it, the last hour has it.
    ingest(vec![risk("r-1", &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), false, "anomalousToken")]).await;
    let _ = wisp::rollups::refresh(&lake, None, 512 << 20, KEEP).await.unwrap();
    let rows = check(true).await;
    assert!(rows[0].is_empty() && rows[1].is_empty(), "{rows:?}");
    assert!(rows[2].contains("[anomalousToken]"), "{rows:?}");
    // Once the current index is older than the grace period, the replaced ones go.
    let _ = wisp::rollups::refresh(&lake, None, 512 << 20, std::time::Duration::ZERO).await.unwrap();
    let versions = walk(&lake_dir.join(wisp::rollups::FOLDER).join(wisp::version_days::NAME));
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(check(true).await, rows);
}

/// The files under `dir`, recursively.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
