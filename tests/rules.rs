//! Per-rule fixtures with positive cases and near misses, generated here as diagnostic-settings
//! records and ingested through the real pipeline (with an ASN range table as the ASN database).
//! One file for all rules on purpose: they share the fixture builders and the lake setup.

mod common;
use chrono::{DateTime, Duration, Utc};
use common::*;
use serde_json::json;
use wisp::detect::{self as alerts, state};
use wisp::rules::{self, Rule};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[allow(clippy::too_many_arguments)]
fn sp_signin(id: &str, ts: DateTime<Utc>, sp: &str, ip: &str, err: i64, owner: Option<&str>) -> serde_json::Value {
    json!({"time": iso(ts), "category": "ServicePrincipalSignInLogs", "tenantId": "tenant-1", "callerIpAddress": ip,
        "properties": {"id": id, "createdDateTime": iso(ts), "servicePrincipalId": format!("id-{sp}"), "servicePrincipalName": sp,
        "appId": format!("app-{sp}"), "ipAddress": ip, "status": {"errorCode": err}, "appOwnerTenantId": owner,
        "resourceDisplayName": "Microsoft Graph", "location": {"countryOrRegion": "NL", "city": "Amsterdam"}}})
}

/// ASN table: 45.0.0.x → 64500 Evil Hosting … one /24 per case.
const ASN_TABLE: &str = "start_ip,end_ip,asn,organization
45.0.0.0,45.0.0.255,64500,Evil Hosting
45.0.1.0,45.0.1.255,64501,Known Transit
45.0.2.0,45.0.2.255,64502,Failing Net
45.0.3.0,45.0.3.255,64503,First Party Net
45.0.4.0,45.0.4.255,8075,Microsoft Corporation
45.0.5.0,45.0.5.255,8068,MICROSOFT-CORP-MSN-AS-BLOCK
45.0.6.0,45.0.6.255,64506,microsoft lookalike hosting
45.0.7.0,45.0.7.255,64507,Boundary Net
45.0.8.0,45.0.8.255,64508,Boundary Net Two
45.0.9.0,45.0.9.255,64509,Overlap Net
45.0.10.0,45.0.10.255,64510,
";

async fn lake_with(records: &[serde_json::Value]) -> std::path::PathBuf {
    let dir = tmp("rules-in");
    let body: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("PT1H.json"), body).unwrap();
    std::fs::write(dir.join("asn.csv"), ASN_TABLE).unwrap();
    let lake = tmp("rules-lake");
    let mut o = opts(vec![dir.join("PT1H.json").display().to_string()]);
    o.asn_db = Some(dir.join("asn.csv"));
    let s = ingest_into(&lake, o).await;
    assert_eq!(s.rejected_total(), 0, "{s:?}");
    lake
}

async fn ctx(lake: &std::path::Path) -> datafusion::prelude::SessionContext {
    let l = wisp::lake::Lake::open(&lake.display().to_string()).unwrap();
    wisp::session::open(&l, &Default::default()).await.unwrap()
}

/// A session whose NetworkAllowlist watchlist holds `entries` (one address, CIDR or a-b range each).
async fn ctx_with_allowlist(lake: &std::path::Path, entries: &[&str]) -> datafusion::prelude::SessionContext {
    let allow = tmp("allow").join("NetworkAllowlist.csv");
    std::fs::write(&allow, format!("IPOrRange\n{}\n", entries.join("\n"))).unwrap();
    let l = wisp::lake::Lake::open(&lake.display().to_string()).unwrap();
    let mut o = wisp::session::SessionOptions::default();
    o.udfs.watchlists.push(("NetworkAllowlist".into(), allow));
    wisp::session::open(&l, &o).await.unwrap()
}

/// (principal, severity) of each alert, sorted.
fn severities(a: &[alerts::Alert]) -> Vec<(String, String)> {
    let mut v: Vec<_> = a.iter().map(|a| (a.service_principal_name.clone().unwrap(), a.severity.clone())).collect();
    v.sort();
    v
}

fn rule(id: &str) -> Rule {
    rules::load_all(None).unwrap().into_iter().find(|r| r.meta.id == id).unwrap()
}

fn detected() -> DateTime<Utc> {
    t("2030-01-01T00:00:00Z")
}

/// A built-in rule file's text, by rule id.
fn builtin_text(id: &str) -> &'static str {
    rules::BUILTIN.iter().find(|(f, _)| *f == format!("sql/{id}.sql")).map(|(_, t)| *t).unwrap()
}

fn names(a: &[alerts::Alert]) -> Vec<String> {
    let mut v: Vec<String> = a.iter().map(|a| a.service_principal_name.clone().unwrap_or_default()).collect();
    v.sort();
    v
}

fn unusual_asn_fixture() -> Vec<serde_json::Value> {
    let tt = t("2026-03-10T12:00:00Z");
    let at = tt - Duration::minutes(30);
    let ms = Some("f8cdef31-a31e-4b4a-93e4-5f571e91255a");
    vec![
        // Positive: pair last seen 11 days ago is new again.
        sp_signin("a-old", tt - Duration::days(11), "sp-a", "45.0.0.1", 0, None),
        sp_signin("a-new", at, "sp-a", "45.0.0.2", 0, None),
        sp_signin("a-new2", at + Duration::minutes(5), "sp-a", "45.0.0.3", 0, None),
        // Near miss: seen 9 days ago.
        sp_signin("b-old", tt - Duration::days(9), "sp-b", "45.0.1.1", 0, None),
        sp_signin("b-new", at, "sp-b", "45.0.1.2", 0, None),
        // Near miss: failed sign-in.
        sp_signin("c-fail", at, "sp-c", "45.0.2.1", 7000215, None),
        // Near miss: Microsoft-owned app.
        sp_signin("d-ms", at, "sp-d", "45.0.3.1", 0, ms),
        // Near misses: Microsoft-named ASNs (both patterns); lower case is not excluded (case-sensitive, as published).
        sp_signin("e-ms", at, "sp-e", "45.0.4.1", 0, None),
        sp_signin("e2-ms", at, "sp-e2", "45.0.5.1", 0, None),
        sp_signin("e3-lower", at, "sp-e3", "45.0.6.1", 0, None),
        // Near miss: private IP without an ASN.
        sp_signin("f-priv", at, "sp-f", "10.0.0.5", 0, None),
        // Boundary: first seen exactly at T-65m is not new; a microsecond later is.
        sp_signin("g-edge", tt - Duration::minutes(65), "sp-g", "45.0.7.1", 0, None),
        sp_signin("h-edge", tt - Duration::minutes(65) + Duration::microseconds(1), "sp-h", "45.0.8.1", 0, None),
        // An ASN with no organization (NULL org is not excluded).
        sp_signin("k-noorg", at, "sp-k", "45.0.10.1", 0, None),
        // Overlap: 11:58 is inside both the 12:00 and 13:00 runs' windows.
        sp_signin("o-1158", t("2026-03-10T11:58:00Z"), "sp-o", "45.0.9.1", 0, None),
    ]
}

#[tokio::test]
async fn sp_unusual_source_asn_positives_and_near_misses() {
    let lake = lake_with(&unusual_asn_fixture()).await;
    let c = ctx(&lake).await;
    let r = rule("sp_unusual_source_asn");
    let run = alerts::run(&c, &r, &r.window_ending(t("2026-03-10T12:00:00Z")).unwrap(), detected()).await.unwrap();
    assert_eq!(names(&run.alerts), vec!["sp-a", "sp-e3", "sp-h", "sp-k", "sp-o"]);
    // One alert per pair, from its oldest row in the window.
    let a = run.alerts.iter().find(|a| a.service_principal_name.as_deref() == Some("sp-a")).unwrap();
    assert!(a.fields.contains("\"id\":\"a-new\""), "{}", a.fields);
    assert_eq!(a.source_asn, Some(64500));
    // Snapshot of the alert output (JSON Lines of the alerts table).
    let mut out = Vec::new();
    {
        let b = alerts::to_batch(&run.alerts).unwrap();
        let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
        w.write(&b).unwrap();
        w.finish().unwrap();
    }
    insta::assert_snapshot!("sp_unusual_source_asn_alerts", String::from_utf8(out).unwrap());
}

#[tokio::test]
async fn sp_unusual_source_asn_overlapping_runs_give_one_alert_and_backtest_equals_replay() {
    let lake = lake_with(&unusual_asn_fixture()).await;
    let c = ctx(&lake).await;
    let r = rule("sp_unusual_source_asn");
    let r12 = alerts::run(&c, &r, &r.window_ending(t("2026-03-10T12:00:00Z")).unwrap(), detected()).await.unwrap();
    let r13 = alerts::run(&c, &r, &r.window_ending(t("2026-03-10T13:00:00Z")).unwrap(), detected()).await.unwrap();
    let o12 = r12.alerts.iter().find(|a| a.service_principal_name.as_deref() == Some("sp-o")).unwrap();
    let o13 = r13.alerts.iter().find(|a| a.service_principal_name.as_deref() == Some("sp-o")).unwrap();
    assert_eq!(o12.alert_id, o13.alert_id, "the 5-minute overlap must not make a second alert");
    let bt = alerts::backtest(&c, &r, t("2026-03-10T12:00:00Z"), t("2026-03-10T13:00:00Z"), detected()).await.unwrap();
    assert_eq!(bt.alerts.iter().filter(|a| a.service_principal_name.as_deref() == Some("sp-o")).count(), 1);
    // The backtest over a range equals the union of its single runs.
    let mut union: Vec<String> = Vec::new();
    for end in alerts::run_ends(&r, t("2026-02-25T00:00:00Z"), t("2026-03-11T00:00:00Z")).unwrap() {
        for a in alerts::run(&c, &r, &r.window_ending(end).unwrap(), detected()).await.unwrap().alerts {
            if !union.contains(&a.alert_id) {
                union.push(a.alert_id);
            }
        }
    }
    let bt = alerts::backtest(&c, &r, t("2026-02-25T00:00:00Z"), t("2026-03-11T00:00:00Z"), detected()).await.unwrap();
    let mut got: Vec<String> = bt.alerts.iter().map(|a| a.alert_id.clone()).collect();
    union.sort();
    got.sort();
    assert_eq!(got, union);
    assert!(got.len() > 5, "the 11-day-old and 9-day-old first sightings alert in their own runs too");
}

#[tokio::test]
async fn sp_failed_signins_groups_and_explains_codes() {
    let d = t("2026-03-10T00:00:00Z");
    let lake = lake_with(&[
        sp_signin("f1", d + Duration::hours(1), "sp-x", "45.0.0.1", 7000215, None),
        sp_signin("f2", d + Duration::hours(2), "sp-x", "45.0.0.1", 7000215, None),
        sp_signin("f3", d + Duration::hours(3), "sp-x", "45.0.0.1", 7000222, None),
        sp_signin("ok", d + Duration::hours(3), "sp-x", "45.0.0.1", 0, None),
        sp_signin("late", d + Duration::days(1) + Duration::minutes(1), "sp-x", "45.0.0.1", 7000215, None),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_failed_signins");
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::days(1)).unwrap(), detected()).await.unwrap();
    assert_eq!(run.alerts.len(), 2);
    let f: Vec<serde_json::Value> = run.alerts.iter().map(|a| serde_json::from_str(&a.fields).unwrap()).collect();
    let invalid = f.iter().find(|x| x["error_code"] == 7000215).unwrap();
    assert_eq!(invalid["attempts"], 2);
    assert_eq!(invalid["error_meaning"], "Invalid client secret provided");
    let expired = f.iter().find(|x| x["error_code"] == 7000222).unwrap();
    assert_eq!(expired["error_meaning"], "The provided client secret keys are expired");
    // The threshold is a parameter.
    let mut r2 = r.clone();
    r2.meta.params.insert("threshold".into(), toml::Value::Integer(2));
    let run = alerts::run(&c, &r2, &r2.window_ending(d + Duration::days(1)).unwrap(), detected()).await.unwrap();
    assert_eq!(run.alerts.len(), 1);
}

#[allow(clippy::too_many_arguments)]
fn audit_rec(
    id: &str,
    ts: DateTime<Utc>,
    op: &str,
    target_type: &str,
    target_id: &str,
    target_name: &str,
    app_id: Option<&str>,
    result: &str,
) -> serde_json::Value {
    let details: Vec<serde_json::Value> = app_id.map(|a| json!({"key": "AppId", "value": a})).into_iter().collect();
    json!({"time": iso(ts), "category": "AuditLogs", "operationName": op, "callerIpAddress": "45.0.0.99",
        "properties": {"id": id, "activityDisplayName": op, "activityDateTime": iso(ts), "result": result, "category": "ApplicationManagement",
        "initiatedBy": {"user": {"id": "u1", "userPrincipalName": "admin@contoso.example"}},
        "targetResources": [{"id": target_id, "displayName": target_name, "type": target_type, "modifiedProperties": []}],
        "additionalDetails": details}})
}

#[tokio::test]
async fn sp_credential_added_after_signin_matches_by_id_not_only_name() {
    let d = t("2026-03-10T00:00:00Z");
    let lake = lake_with(&[
        sp_signin("s1", d - Duration::hours(30), "sp-renamed", "45.0.0.1", 0, None),
        sp_signin("s2", d - Duration::hours(2), "sp-renamed", "45.0.0.2", 0, None),
        sp_signin("s3", d - Duration::days(4), "sp-stale", "45.0.0.3", 0, None),
        sp_signin("s4", d - Duration::hours(5), "app-by-name", "45.0.0.4", 0, None),
        sp_signin("s5", d - Duration::hours(5), "sp-failed-only", "45.0.0.5", 7000215, None),
        // The principal was renamed: the target display name differs, the id matches.
        audit_rec(
            "c1",
            d + Duration::hours(1),
            "Add service principal credentials",
            "ServicePrincipal",
            "id-sp-renamed",
            "old-name",
            None,
            "success",
        ),
        // Application target with its AppId in additionalDetails (en dash spelling, trailing space).
        audit_rec(
            "c2",
            d + Duration::hours(2),
            "Update application – Certificates and secrets management ",
            "Application",
            "obj-1",
            "whatever",
            Some("app-sp-renamed"),
            "success",
        ),
        // Application target without AppId: display name, case-insensitive (hyphen spelling).
        audit_rec(
            "c3",
            d + Duration::hours(3),
            "Update application - Certificates and secrets management",
            "Application",
            "obj-2",
            "APP-BY-NAME",
            None,
            "success",
        ),
        // Near misses: sign-ins older than 3 days; only failed sign-ins. A refused change alerts
        // (the seed does not filter the result).
        audit_rec(
            "c4",
            d + Duration::hours(4),
            "Add service principal credentials",
            "ServicePrincipal",
            "id-sp-stale",
            "sp-stale",
            None,
            "success",
        ),
        audit_rec(
            "c5",
            d + Duration::hours(5),
            "Add service principal credentials",
            "ServicePrincipal",
            "id-sp-failed-only",
            "sp-failed-only",
            None,
            "success",
        ),
        audit_rec(
            "c6",
            d + Duration::hours(6),
            "Add service principal credentials",
            "ServicePrincipal",
            "id-sp-renamed",
            "x",
            None,
            "failure",
        ),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_credential_added_after_signin");
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::days(1)).unwrap(), detected()).await.unwrap();
    let f: Vec<serde_json::Value> = run.alerts.iter().map(|a| serde_json::from_str(&a.fields).unwrap()).collect();
    let ids: Vec<&str> = f.iter().map(|x| x["audit_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["c1", "c2", "c3", "c6"]);
    assert_eq!(f[3]["result"], "failure");
    assert_eq!(f[0]["matched_by"], "service_principal_id");
    assert_eq!(f[0]["prior_signins"], 2);
    assert_eq!(f[0]["minutes_since_signin"], 180);
    assert_eq!(f[1]["matched_by"], "app_id");
    assert_eq!(f[2]["matched_by"], "display_name");
}

fn risk(id: &str, ts: DateTime<Utc>, sp: &str, ty: &str, level: &str, updated: DateTime<Utc>) -> serde_json::Value {
    json!({"time": iso(ts), "category": "ServicePrincipalRiskEvents", "properties": {"id": id, "riskEventType": ty, "riskLevel": level,
        "riskState": "atRisk", "detectedDateTime": iso(ts), "lastUpdatedDateTime": iso(updated), "servicePrincipalId": format!("id-{sp}"),
        "servicePrincipalDisplayName": sp, "appId": format!("app-{sp}")}})
}

#[tokio::test]
async fn sp_risk_event_stacking_ladder_and_allowlist() {
    let h = t("2026-03-10T10:00:00Z");
    let m = |n| h + Duration::minutes(n);
    let lake = lake_with(&[
        // Critical: a high-severity type and a sign-in from outside the allowlist.
        risk("r1", m(5), "sp-crit", "maliciousIPAddress", "low", m(5)),
        sp_signin("c-si", m(10), "sp-crit", "45.0.0.1", 0, None),
        // High: a high-severity type; its only sign-in is allowlisted.
        risk("r2", m(5), "sp-high", "investigationsThreatIntelligence", "low", m(5)),
        sp_signin("h-si", m(10), "sp-high", "10.1.2.3", 0, None),
        // High: 3 distinct medium types.
        risk("r3", m(1), "sp-three", "unfamiliarFeatures", "medium", m(1)),
        risk("r4", m(2), "sp-three", "adminConfirmedServicePrincipalCompromised", "medium", m(2)),
        risk("r5", m(3), "sp-three", "leakedCredentials", "high", m(3)),
        // Medium: 2 types, no sign-ins.
        risk("r6", m(1), "sp-two", "leakedCredentials", "medium", m(1)),
        risk("r7", m(2), "sp-two", "unfamiliarFeatures", "medium", m(2)),
        // Critical: suspiciousAPITraffic is one of the KQL's four high-severity types, at any level.
        risk("r10", m(4), "sp-api", "suspiciousAPITraffic", "low", m(4)),
        sp_signin("api-si", m(20), "sp-api", "45.0.0.2", 0, None),
        // High: the same type with no sign-in.
        risk("r11", m(4), "sp-api-quiet", "suspiciousAPITraffic", "low", m(4)),
        // Near miss: one medium event; and a high event whose newest version fell to low (not a kept type).
        risk("r8", m(1), "sp-one", "leakedCredentials", "medium", m(1)),
        risk("r9", m(1), "sp-downgraded", "leakedCredentials", "high", m(1)),
        risk("r9", m(1), "sp-downgraded", "leakedCredentials", "low", m(30)),
        risk("r9b", m(2), "sp-downgraded", "unfamiliarFeatures", "low", m(2)),
    ])
    .await;
    let c = ctx_with_allowlist(&lake, &["10.0.0.0/8"]).await;
    let r = rule("sp_risk_event_stacking");
    let run = alerts::run(&c, &r, &r.window_ending(h + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    let got = severities(&run.alerts);
    assert_eq!(
        got,
        vec![
            ("sp-api".into(), "critical".into()),
            ("sp-api-quiet".into(), "high".into()),
            ("sp-crit".into(), "critical".into()),
            ("sp-high".into(), "high".into()),
            ("sp-three".into(), "high".into()),
            ("sp-two".into(), "medium".into()),
        ]
    );
    // Allowlisted sign-ins are not counted or listed; others are.
    let fields = |n: &str| -> serde_json::Value {
        let a = run.alerts.iter().find(|a| a.service_principal_name.as_deref() == Some(n)).unwrap();
        serde_json::from_str(&a.fields).unwrap()
    };
    let high = fields("sp-high");
    assert_eq!((high["signin_count"].as_i64(), high["distinct_ips"].as_i64()), (Some(0), Some(0)), "{high}");
    assert!(high["source_ips"].is_null(), "{high}");
    let crit = fields("sp-crit");
    assert_eq!(crit["signin_count"].as_i64(), Some(1), "{crit}");
    assert_eq!(crit["source_ips"], serde_json::json!(["45.0.0.1"]), "{crit}");
}

/// The KQL's conditions one by one, each with its near miss: the window `> ago(1h)`, the level or
/// type filter, `UniqueEventTypes >= 2 or HighSeverityEvents >= 1`, every rung of the severity
/// ladder, failed sign-ins counting as activity, and the allowlist's three forms.
#[tokio::test]
async fn sp_risk_event_stacking_every_kql_condition() {
    let h = t("2026-03-10T10:00:00Z");
    let m = |n| h + Duration::minutes(n);
    let lake = lake_with(&[
        // Window: at T-1h exactly is out (ago(1h) is exclusive); at T exactly is in.
        risk("w1", m(0), "sp-edge-out", "maliciousIPAddress", "low", m(0)),
        risk("w2", m(60), "sp-edge-in", "maliciousIPAddress", "low", m(60)),
        // 2 types and an active sign-in: High (the ladder's fourth rung); a failed sign-in counts.
        risk("a1", m(5), "sp-two-active", "leakedCredentials", "medium", m(5)),
        risk("a2", m(6), "sp-two-active", "unfamiliarFeatures", "high", m(6)),
        sp_signin("a-si", m(7), "sp-two-active", "45.0.0.9", 7000215, None),
        // Near miss: the same type twice is one type.
        risk("b1", m(5), "sp-same-type", "leakedCredentials", "medium", m(5)),
        risk("b2", m(9), "sp-same-type", "leakedCredentials", "high", m(9)),
        // Near miss: a second type at low level is filtered out before counting.
        risk("c1", m(5), "sp-low-second", "leakedCredentials", "medium", m(5)),
        risk("c2", m(6), "sp-low-second", "unfamiliarFeatures", "low", m(6)),
        // Each high-severity type alone, at low level: High without sign-ins.
        risk("d1", m(5), "sp-anom", "anomalousToken", "low", m(5)),
        // Allowlist forms: a single address (a /32) and an a-b range; only allowlisted sign-ins: High.
        risk("e1", m(5), "sp-allow-ip", "anomalousToken", "low", m(5)),
        sp_signin("e-si", m(8), "sp-allow-ip", "203.0.113.7", 0, None),
        risk("f1", m(5), "sp-allow-range", "anomalousToken", "low", m(5)),
        sp_signin("f-si", m(8), "sp-allow-range", "198.51.100.20", 0, None),
        // Near miss of the range: one address past its end is not allowlisted: Critical.
        risk("g1", m(5), "sp-past-range", "anomalousToken", "low", m(5)),
        sp_signin("g-si", m(8), "sp-past-range", "198.51.100.31", 0, None),
        // A sign-in outside the window is not activity: High, not Critical.
        risk("k1", m(5), "sp-old-signin", "anomalousToken", "low", m(5)),
        sp_signin("k-si", m(0), "sp-old-signin", "45.0.0.10", 0, None),
    ])
    .await;
    let c = ctx_with_allowlist(&lake, &["203.0.113.7", "198.51.100.10-198.51.100.30"]).await;
    let r = rule("sp_risk_event_stacking");
    let run = alerts::run(&c, &r, &r.window_ending(h + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    let got = severities(&run.alerts);
    let want: Vec<(String, String)> = [
        ("sp-allow-ip", "high"),
        ("sp-allow-range", "high"),
        ("sp-anom", "high"),
        ("sp-edge-in", "high"),
        ("sp-old-signin", "high"),
        ("sp-past-range", "critical"),
        ("sp-two-active", "high"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    let a = run.alerts.iter().find(|a| a.service_principal_name.as_deref() == Some("sp-two-active")).unwrap();
    let f: serde_json::Value = serde_json::from_str(&a.fields).unwrap();
    assert_eq!((f["signin_count"].as_i64(), f["successful_signins"].as_i64()), (Some(1), Some(0)), "{f}");
    // The next hour's run does not count the detection at its start (10:00 + 1h) again.
    let next = alerts::run(&c, &r, &r.window_ending(h + Duration::hours(2)).unwrap(), detected()).await.unwrap();
    assert!(next.alerts.is_empty(), "{:?}", names(&next.alerts));
}

#[tokio::test]
async fn identity_signin_from_suspicious_source_needs_alert_plus_identity_and_is_suppressed() {
    let lake = tmp("susp-lake");
    ingest_into(&lake, opts(vec![repo().join("data/samples").display().to_string()])).await;
    let c = ctx(&lake).await;
    let r = rule("identity_signin_from_suspicious_source");
    let bt = alerts::backtest(&c, &r, t("2026-11-20T00:00:00Z"), t("2026-11-21T06:00:00Z"), detected()).await.unwrap();
    let ips: Vec<_> = bt.alerts.iter().map(|a| a.source_ip.clone().unwrap()).collect();
    // 185.220.101.45 has alerts, a sign-in and mail access; 198.51.100.23 (alert only, and reserved) and
    // 10.1.2.x (private) do not qualify; 8 hours of sliding windows give one alert.
    assert_eq!(ips, vec!["185.220.101.45"]);
    let f: serde_json::Value = serde_json::from_str(&bt.alerts[0].fields).unwrap();
    assert_eq!(f["has_mail_access"], true);
    assert_eq!(f["dataset_count"], 3);
}

#[tokio::test]
async fn sp_rare_action_multiple_ips_hunt() {
    let lake = tmp("hunt-lake");
    ingest_into(&lake, opts(vec![repo().join("data/samples").display().to_string()])).await;
    let c = ctx(&lake).await;
    let r = rule("sp_rare_action_multiple_ips");
    let w = rules::RunWindow { start: t("2026-10-22T00:00:00Z"), end: t("2026-11-21T00:00:00Z") };
    let rows = r.plan(&c, &w).await.unwrap().collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
    assert!(text.contains("Sign-in activity") && text.contains("payroll-sync"), "{text}");
    assert!(text.contains("185.220.101.45") && text.contains("20.190.128.10"), "{text}");
    // backup-runner signed in from 3 IPs but 4 times... still rare; raise min_ips to exclude all.
    let mut r2 = r.clone();
    r2.meta.params.insert("min_ips".into(), toml::Value::Integer(10));
    let rows = r2.plan(&c, &w).await.unwrap().collect().await.unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
}

#[tokio::test]
async fn rules_parse_strictly_and_lint_against_the_schema() {
    let good = builtin_text("sp_failed_signins");
    let bad_key = good.replacen("severity = \"medium\"", "severity = \"medium\"\nsevrity = \"x\"", 1);
    let e = Rule::parse("x.sql", &bad_key).unwrap_err().to_string();
    assert!(e.contains("unknown field") && e.contains("sevrity"), "{e}");
    assert!(Rule::parse("x.sql", "SELECT 1").unwrap_err().to_string().contains("/* … */"));
    // Sections: known names only, and first-seen state needs both of its sections.
    let e = Rule::parse("x.sql", &format!("{good}\n-- @bactest\nSELECT 1")).unwrap_err().to_string();
    assert!(e.contains("unknown section") && e.contains("@bactest"), "{e}");
    let asn = builtin_text("sp_unusual_source_asn");
    let cut = &asn[..asn.find("\n-- @stateful").unwrap()];
    let e = Rule::parse("x.sql", cut).unwrap_err().to_string();
    assert!(e.contains("go together"), "{e}");
    let bad_state = asn.replace("s.last_seen IS NULL", "s.last_sen IS NULL");
    let c0 = ctx(&tmp("lint0")).await;
    let res = rules::lint(&c0, &[Rule::parse("x.sql", &bad_state).unwrap()]).await;
    let e = res[0].1.as_ref().unwrap_err().to_string();
    assert!(e.contains("last_sen"), "{e}");
    let typo = good.replace("sum(n) AS attempts", "sum(n) AS attempts, source_ipp");
    let r = Rule::parse("typo.sql", &typo).unwrap();
    let lake = tmp("lint");
    let c = ctx(&lake).await;
    let res = rules::lint(&c, &[r]).await;
    let e = res[0].1.as_ref().unwrap_err().to_string();
    assert!(e.contains("source_ipp") && e.to_lowercase().contains("valid fields"), "{e}");
    for (id, res) in rules::lint(&c, &rules::load_all(None).unwrap()).await {
        assert!(res.is_ok(), "{id}: {res:?}");
    }
    // An alert_key must pin the alert's events (a time, or an event's id carried through): with
    // the pair alone, a repeat of the id could lie months away from the alert in the store.
    let pair = asn.replace(
        r#"alert_key = ["service_principal_id", "source_asn", "id"]"#,
        r#"alert_key = ["service_principal_id", "source_asn", "source_ip"]"#,
    );
    assert_ne!(pair, asn);
    let res = rules::lint(&c, &[Rule::parse("pair.sql", &pair).unwrap()]).await;
    let e = res[0].1.as_ref().unwrap_err().to_string();
    assert!(e.contains("does not pin the alert's events"), "{e}");
    // A computed column is not an id carried through; the time column is a pin.
    let computed = asn.replace("SELECT ts, id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city
FROM ranked", "SELECT ts, lower(id) AS id, service_principal_id, service_principal_name, app_id, source_ip, source_asn, source_as_org,
       resource_display_name, credential_key_id, app_display_name, correlation_id, country, city
FROM ranked");
    assert_ne!(computed, asn);
    let res = rules::lint(&c, &[Rule::parse("computed.sql", &computed).unwrap()]).await;
    assert!(res[0].1.as_ref().is_err_and(|e| e.to_string().contains("does not pin")), "{:?}", res[0].1);
    let timed = pair.replace(r#""source_ip"]"#, r#""source_ip", "ts"]"#);
    assert!(rules::lint(&c, &[Rule::parse("timed.sql", &timed).unwrap()]).await[0].1.is_ok());
    // Rule SQL runs read-only.
    let ddl = good.replace("WITH edges AS", "CREATE TABLE x AS WITH edges AS");
    assert_ne!(ddl, good);
    let r = Rule::parse("ddl.sql", &ddl).unwrap();
    let w = rules::RunWindow { start: detected(), end: detected() };
    assert!(r.plan(&c, &w).await.is_err());
}

#[tokio::test]
async fn sp_unusual_source_asn_one_pass_backtest_equals_replaying_every_run() {
    let recs = random_tenant(0x9e3779b97f4a7c15);
    let lake = lake_with(&recs).await;
    let c = ctx(&lake).await;
    let r = rule("sp_unusual_source_asn");
    assert!(r.backtest_sql.is_some());
    let (from, to) = (t("2026-03-10T00:00:00Z"), t("2026-03-14T00:00:00Z"));
    let one = alerts::backtest(&c, &r, from, to, detected()).await.unwrap();
    let replay = alerts::backtest_replay(&c, &r, from, to, detected()).await.unwrap();
    let key = |a: &alerts::Alert| (a.alert_id.clone(), a.window_start, a.window_end, a.ts);
    let mut a: Vec<_> = one.alerts.iter().map(key).collect();
    let mut b: Vec<_> = replay.alerts.iter().map(key).collect();
    a.sort();
    b.sort();
    assert!(b.len() > 10, "the random data should produce alerts: {}", b.len());
    assert_eq!(a, b);
    // The history window is a bound parameter of the one-pass form too: a shorter one changes the
    // alerts, and one pass still equals the replay.
    let mut short = r.clone();
    short.meta.history_window = Some("2d".into());
    let one2 = alerts::backtest(&c, &short, from, to, detected()).await.unwrap();
    let replay2 = alerts::backtest_replay(&c, &short, from, to, detected()).await.unwrap();
    let mut a2: Vec<_> = one2.alerts.iter().map(key).collect();
    let mut b2: Vec<_> = replay2.alerts.iter().map(key).collect();
    a2.sort();
    b2.sort();
    assert_eq!(a2, b2);
    assert_ne!(a2, a, "a 2-day history finds more new pairs than a 10-day one");
}

#[tokio::test]
async fn sp_unusual_source_asn_first_seen_state_gives_the_stateless_alerts() {
    use wisp::detect::StateUse;
    let recs = random_tenant(0x2545f4914f6cdd1d);
    let lake_dir = lake_with(&recs).await;
    let lake = wisp::lake::Lake::open(&lake_dir.display().to_string()).unwrap();
    let lake = wisp::detect::store::StateDir::open(&lake, None).unwrap();
    let c = ctx(&lake_dir).await;
    let r = rule("sp_unusual_source_asn");
    assert!(r.terms_sql.is_some() && r.stateful_sql.is_some());
    let ids = |a: &[alerts::Alert]| {
        let mut v: Vec<_> = a.iter().map(|a| (a.alert_id.clone(), a.ts, a.window_end)).collect();
        v.sort();
        v
    };
    // Every hourly run of three days in order (the state advances one hour at a time), then runs
    // with gaps of 5 hours and of 11 days (past the history window: rebuilt), then an older run.
    let mut ends: Vec<DateTime<Utc>> =
        alerts::run_ends(&r, t("2026-03-10T00:00:00Z"), t("2026-03-13T00:00:00Z")).unwrap();
    ends.push(t("2026-03-13T05:00:00Z"));
    ends.push(t("2026-03-24T05:00:00Z"));
    let mut used = Vec::new();
    let mut total = 0;
    for end in &ends {
        let w = r.window_ending(*end).unwrap();
        let plain = alerts::run(&c, &r, &w, detected()).await.unwrap();
        let st = state::run(&c, &lake, &r, &w, detected()).await.unwrap();
        assert_eq!(ids(&st.result.alerts), ids(&plain.alerts), "run ending {end}");
        total += plain.alerts.len();
        used.push(st.used);
    }
    assert!(total > 10, "the random data should alert: {total}");
    assert_eq!(used[0], StateUse::Built);
    assert!(used[1..ends.len() - 2].iter().all(|u| *u == StateUse::Advanced), "{used:?}");
    assert_eq!(used[ends.len() - 2], StateUse::Advanced, "5 hours later: folded in");
    assert_eq!(used[ends.len() - 1], StateUse::Built, "11 days later: rebuilt");
    // The same window again: the state is current.
    let w = r.window_ending(t("2026-03-24T05:00:00Z")).unwrap();
    assert_eq!(state::run(&c, &lake, &r, &w, detected()).await.unwrap().used, StateUse::Current);
    // A window older than the state runs without it, with the same alerts.
    let w = r.window_ending(t("2026-03-11T07:00:00Z")).unwrap();
    let old = state::run(&c, &lake, &r, &w, detected()).await.unwrap();
    assert_eq!(old.used, StateUse::Stateless);
    assert_eq!(ids(&old.result.alerts), ids(&alerts::run(&c, &r, &w, detected()).await.unwrap().alerts));
    // The state keeps only terms alive in the history window, and says what it covers.
    let m = state::load_meta(&lake, &r).await.unwrap().unwrap();
    assert_eq!(m.covered_to_us, t("2026-03-24T03:55:00Z").timestamp_micros());
    let files: Vec<_> = std::fs::read_dir(lake_dir.join("_state/sp_unusual_source_asn")).unwrap().collect();
    assert_eq!(files.len(), 2, "state.json and one terms file: {files:?}");
    // A changed definition of the terms is not trusted: the state is rebuilt.
    let mut r2 = r.clone();
    let terms = r.terms_sql.clone().unwrap();
    r2.terms_sql = Some(terms.replace("AND ts <= $range_end", "AND ts <= $range_end AND 1 = 1"));
    assert_ne!(r2.terms_sql.as_deref(), Some(terms.as_str()));
    let w = r.window_ending(t("2026-03-24T06:00:00Z")).unwrap();
    assert_eq!(state::run(&c, &lake, &r2, &w, detected()).await.unwrap().used, StateUse::Built);
}

/// The credential-failure rule's three forms agree: the one-pass backtest equals replaying every
/// hourly run, and the runs with first-seen state (advanced hour by hour, then after a gap, then
/// rebuilt) give the stateless runs' alerts. The data puts successes and failures exactly on run
/// boundaries and exactly 10 days before them.
#[tokio::test]
async fn sp_credential_failures_from_new_source_backtest_and_state_equal_the_runs() {
    use wisp::detect::StateUse;
    let mut recs = random_tenant(0x853c49e6748fea9b);
    recs.extend(credential_edges(7));
    let lake_dir = lake_with(&recs).await;
    let lake = wisp::lake::Lake::open(&lake_dir.display().to_string()).unwrap();
    let dir = wisp::detect::store::StateDir::open(&lake, None).unwrap();
    let c = ctx(&lake_dir).await;
    let r = rule("sp_credential_failures_from_new_source");
    assert!(r.backtest_sql.is_some() && r.terms_sql.is_some());
    let (from, to) = (t("2026-03-10T00:00:00Z"), t("2026-03-14T00:00:00Z"));
    let one = alerts::backtest(&c, &r, from, to, detected()).await.unwrap();
    let replay = alerts::backtest_replay(&c, &r, from, to, detected()).await.unwrap();
    assert!(replay.alerts.len() > 20, "the data should alert: {}", replay.alerts.len());
    // Every reported column too (`keyed`): the failures counted once each, whatever joins judge them.
    assert_eq!(keyed(&one.alerts), keyed(&replay.alerts));
    // First-seen state, run by run.
    let mut ends = alerts::run_ends(&r, t("2026-03-11T00:00:00Z"), t("2026-03-13T00:00:00Z")).unwrap();
    ends.push(t("2026-03-13T09:00:00Z"));
    ends.push(t("2026-03-24T01:00:00Z"));
    let mut used = Vec::new();
    for end in &ends {
        let w = r.window_ending(*end).unwrap();
        let plain = alerts::run(&c, &r, &w, detected()).await.unwrap();
        let st = state::run(&c, &dir, &r, &w, detected()).await.unwrap();
        assert_eq!(keyed(&st.result.alerts), keyed(&plain.alerts), "run ending {end}");
        used.push(st.used);
    }
    assert_eq!(used[0], StateUse::Built);
    assert!(used[1..].iter().take(ends.len() - 2).all(|u| *u == StateUse::Advanced), "{used:?}");
    assert_eq!(used[ends.len() - 1], StateUse::Built);
}

/// Alerts as (id, window end, time, severity, every other column), sorted: what two forms of a
/// rule must agree on.
fn keyed(a: &[alerts::Alert]) -> Vec<(String, i64, i64, String, String)> {
    let mut v: Vec<_> =
        a.iter().map(|a| (a.alert_id.clone(), a.window_end, a.ts, a.severity.clone(), a.fields.clone())).collect();
    v.sort();
    v
}

/// Principals of their own with a failure at a run's end and one success placed around an edge:
/// exactly 10 days before (known), a microsecond earlier (not known), at the run's end (known),
/// a microsecond after it (not known to that run).
fn credential_edges(seed: u64) -> Vec<serde_json::Value> {
    let mut rng = wisp_udfs::testdb::XorShift(seed);
    let mut next = move || rng.next();
    let mut recs = Vec::new();
    for i in 0..120u64 {
        let sp = format!("edge-{}", i % 30);
        let ip = format!("45.0.{}.{}", i % 6, 251 + next() % 4);
        let hour = t("2026-03-10T00:00:00Z") + Duration::hours((next() % 96) as i64);
        let success = match i % 4 {
            0 => hour - Duration::days(10),
            1 => hour - Duration::days(10) - Duration::microseconds(1),
            2 => hour,
            _ => hour + Duration::microseconds(1),
        };
        recs.push(sp_signin(&format!("edge{i}-f"), hour, &sp, &ip, 7000222, None));
        recs.push(sp_signin(&format!("edge{i}-s"), success, &sp, &ip, 0, None));
    }
    recs
}

/// A catch-up reads the first-seen state and only the missed range (`-- @stateful_backtest`): for
/// both rules that have one it equals replaying every run, whether the state is built for it,
/// folded forward from an earlier run or already current (what it saves is measured in
/// BENCHMARKS.md); a state already past the range's start is not used.
#[tokio::test]
async fn stateful_backtests_equal_replaying_every_run() {
    use wisp::detect::StateUse;
    let mut recs = random_tenant(0x6a09e667f3bcc909);
    recs.extend(credential_edges(11));
    let lake_dir = lake_with(&recs).await;
    let lake = wisp::lake::Lake::open(&lake_dir.display().to_string()).unwrap();
    let dir = wisp::detect::store::StateDir::open(&lake, None).unwrap();
    let c = ctx(&lake_dir).await;
    for id in ["sp_unusual_source_asn", "sp_credential_failures_from_new_source"] {
        let r = rule(id);
        assert!(r.stateful_backtest_sql.is_some(), "{id}");
        let mut total = 0;
        // (range, a single run done before it, the state use expected)
        let cases = [
            ("2026-03-11T00:00:00Z", "2026-03-12T00:00:00Z", None, StateUse::Built),
            ("2026-03-12T06:00:00Z", "2026-03-13T05:00:00Z", Some("2026-03-12T05:00:00Z"), StateUse::Advanced),
            ("2026-03-13T05:00:00Z", "2026-03-14T03:00:00Z", Some("2026-03-13T05:00:00Z"), StateUse::Current),
            // Not on the interval grid: the first run is the next hour.
            ("2026-03-10T09:30:00Z", "2026-03-10T20:59:00Z", None, StateUse::Built),
        ];
        for (from, to, before, expect) in cases {
            let (from, to) = (t(from), t(to));
            state::invalidate(&dir, &r).await.unwrap();
            if let Some(b) = before {
                state::run(&c, &dir, &r, &r.window_ending(t(b)).unwrap(), detected()).await.unwrap();
            }
            let st = state::backtest(&c, &dir, &r, from, to, detected()).await.unwrap().expect("a stateful rule");
            let replay = alerts::backtest_replay(&c, &r, from, to, detected()).await.unwrap();
            assert_eq!(keyed(&st.result.alerts), keyed(&replay.alerts), "{id} over {from}..{to}");
            assert_eq!(st.used, expect, "{id} over {from}..{to}");
            total += replay.alerts.len();
        }
        assert!(total > 10, "{id}: the data should alert: {total}");
        // A state past the range's first window: the caller goes without it.
        state::run(&c, &dir, &r, &r.window_ending(t("2026-03-13T00:00:00Z")).unwrap(), detected()).await.unwrap();
        let past = state::backtest(&c, &dir, &r, t("2026-03-12T00:00:00Z"), t("2026-03-12T10:00:00Z"), detected());
        assert!(past.await.unwrap().is_none(), "{id}");
    }
}

/// The fixture plus random sign-ins over 16 days: 40 principals, 6 ASNs, gaps shorter and longer
/// than 10 days, exact ties in time, sightings exactly at a run's window start (T-65m), failures
/// and Microsoft-owned apps mixed in.
fn random_tenant(seed: u64) -> Vec<serde_json::Value> {
    let mut rng = wisp_udfs::testdb::XorShift(seed);
    let mut next = move || rng.next();
    let start = t("2026-03-01T00:00:00Z");
    let mut recs = unusual_asn_fixture();
    for i in 0..900 {
        let sp = format!("rnd-{}", next() % 40);
        let asn_block = next() % 6;
        let ts = start + Duration::seconds((next() % (16 * 86_400)) as i64);
        let err = if next() % 10 == 0 { 7000215 } else { 0 };
        let owner = (next() % 15 == 0).then_some("72f988bf-86f1-41af-91ab-2d7cd011db47");
        recs.push(sp_signin(&format!("r{i}"), ts, &sp, &format!("45.0.{asn_block}.{}", next() % 250 + 1), err, owner));
        if i % 50 == 0 {
            recs.push(sp_signin(&format!("r{i}-tie"), ts, &sp, &format!("45.0.{asn_block}.7"), 0, None));
        }
        if i % 40 == 0 {
            let edge = t("2026-03-12T00:00:00Z") + Duration::hours((i % 24) as i64) - Duration::minutes(65);
            recs.push(sp_signin(&format!("r{i}-edge"), edge, &sp, &format!("45.0.{asn_block}.9"), 0, None));
        }
    }
    recs
}

/// Alerts are built from the typed columns of a rule's output: a timestamp that is not one, or a
/// backtest's `run_end_us` that is not an integer, fails the run with the reason (no row is
/// dropped or dated silently); text and integer timestamps of any unit convert.
#[tokio::test]
async fn alert_rows_convert_from_arrow_or_fail_loudly() {
    let d = t("2026-03-10T00:00:00Z");
    let lake = lake_with(&[sp_signin("a1", d + Duration::minutes(10), "sp-a", "45.0.0.1", 0, None)]).await;
    let c = ctx(&lake).await;
    let header = |extra: &str| {
        format!(
            "/*\nid = \"probe\"\nname = \"p\"\ndescription = \"p\"\ntype = \"query\"\nseverity = \"low\"\nrisk_score = 1\n\
             interval = \"1h\"\nlookback = \"1h\"\ntables = [\"signins\"]\nalert_key = [\"id\"]\n{extra}*/\n"
        )
    };
    let w = rules::RunWindow { start: d, end: d + Duration::hours(1) };
    let with = |select: &str| Rule::parse("probe.sql", &format!("{}{select}", header(""))).unwrap();
    // A string timestamp and a timestamp in seconds both convert; the identity columns come along.
    for sql in [
        "SELECT id, '2026-03-10T00:10:00Z' AS ts, service_principal_id, source_ip, source_asn FROM signins",
        "SELECT id, CAST(ts AS TIMESTAMP(0)) AS ts, service_principal_id, source_ip, source_asn FROM signins",
    ] {
        let run = alerts::run(&c, &with(sql), &w, detected()).await.unwrap();
        assert_eq!(run.alerts.len(), 1, "{sql}");
        let a = &run.alerts[0];
        assert_eq!(a.ts, (d + Duration::minutes(10)).timestamp_micros(), "{sql}");
        assert_eq!(a.service_principal_id.as_deref(), Some("id-sp-a"));
        assert_eq!((a.source_ip.as_deref(), a.source_asn), (Some("45.0.0.1"), Some(64500)));
    }
    // A NULL timestamp dates the alert at the window's start.
    let run = alerts::run(&c, &with("SELECT id, CAST(NULL AS TIMESTAMP) AS ts FROM signins"), &w, detected()).await;
    assert_eq!(run.unwrap().alerts[0].ts, d.timestamp_micros());
    for (sql, want) in [
        ("SELECT id, 'not a time' AS ts FROM signins", "timestamp column 'ts'"),
        ("SELECT id, true AS ts FROM signins", "not a timestamp"),
        ("SELECT id FROM signins", "must output the timestamp column 'ts'"),
    ] {
        let e = alerts::run(&c, &with(sql), &w, detected()).await.unwrap_err().to_string();
        assert!(e.contains("probe") && e.contains(want), "{sql}: {e}");
    }
    let bt = format!(
        "{}SELECT id, ts FROM signins\n-- @backtest\nSELECT id, ts, 'x' AS run_end_us FROM signins",
        header("")
    );
    let e = alerts::backtest(&c, &Rule::parse("probe.sql", &bt).unwrap(), w.start, w.end, detected())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("run_end_us") && e.contains("not an integer"), "{e}");
}

/// An audit record whose target's modified properties carry a KeyDescription (old → new keys).
fn key_change(id: &str, ts: DateTime<Utc>, op: &str, sp: &str, old: &[&str], new: &[&str]) -> serde_json::Value {
    let keys = |ks: &[&str]| {
        let v: Vec<String> = ks
            .iter()
            .map(|k| format!("[KeyIdentifier={k},KeyType=Password,KeyUsage=Verify,DisplayName=name of {k}]"))
            .collect();
        serde_json::to_string(&v).unwrap()
    };
    let mut r = audit_rec(id, ts, op, "ServicePrincipal", &format!("id-{sp}"), sp, None, "success");
    r["properties"]["targetResources"][0]["modifiedProperties"] = json!([
        {"displayName": "KeyDescription", "oldValue": keys(old), "newValue": keys(new)},
        {"displayName": "Included Updated Properties", "oldValue": null, "newValue": "\"KeyDescription\""}
    ]);
    r
}

/// Seed 002 watches credential changes: a bare "Update application" counts only with a key change,
/// the alert names the key added, and the look-back is the bound `signin_lookback` parameter.
#[tokio::test]
async fn sp_credential_added_after_signin_keeps_real_credential_changes_and_names_the_key() {
    let d = t("2026-03-10T00:00:00Z");
    let mut redirect = audit_rec(
        "u1",
        d + Duration::hours(1),
        "Update application",
        "ServicePrincipal",
        "id-sp-a",
        "sp-a",
        None,
        "success",
    );
    redirect["properties"]["targetResources"][0]["modifiedProperties"] =
        json!([{"displayName": "AppAddress", "oldValue": "[]", "newValue": "[\"https://evil.example\"]"}]);
    let lake = lake_with(&[
        sp_signin("s1", d - Duration::hours(50), "sp-a", "45.0.0.1", 0, None),
        // Near miss: a redirect URI change is not a credential change.
        redirect,
        // A bare "Update application" that adds a key; the old key is not reported.
        key_change("u2", d + Duration::hours(2), "Update application", "sp-a", &["k-old"], &["k-old", "k-new"]),
        // The explicit operation, as the seed names it; its keys are reported ordered by id.
        key_change("u3", d + Duration::hours(3), "Add service principal credentials", "sp-a", &[], &["k-3", "k-2"]),
        // A key change that adds none (a key removed): a credential change, no key named.
        key_change("u4", d + Duration::hours(4), "Update application", "sp-a", &["k-2", "k-3"], &["k-3"]),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_credential_added_after_signin");
    let w = r.window_ending(d + Duration::days(1)).unwrap();
    let run = alerts::run(&c, &r, &w, detected()).await.unwrap();
    let f: Vec<serde_json::Value> = run.alerts.iter().map(|a| serde_json::from_str(&a.fields).unwrap()).collect();
    let ids: Vec<&str> = f.iter().map(|x| x["audit_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["u2", "u3", "u4"]);
    assert_eq!(f[0]["added_key_ids"], json!(["k-new"]));
    assert_eq!(f[0]["added_key_types"], json!(["Password"]));
    assert_eq!(f[0]["added_key_names"], json!(["name of k-new"]));
    assert_eq!(f[1]["added_key_ids"], json!(["k-2", "k-3"]));
    assert_eq!(f[1]["added_key_types"], json!(["Password", "Password"]));
    assert_eq!(f[1]["added_key_names"], json!(["name of k-2", "name of k-3"]));
    for field in ["added_key_ids", "added_key_types", "added_key_names"] {
        assert!(f[2][field].is_null(), "no key added, none named: {}", f[2]);
    }
    // The sign-in was 52 hours before u2: inside the published 3 days, outside a 2-day look-back.
    let mut short = r.clone();
    short.meta.params.insert("signin_lookback".into(), toml::Value::Table(toml::toml! { duration = "2d" }));
    assert!(alerts::run(&c, &short, &w, detected()).await.unwrap().alerts.is_empty());
    let mut long = r.clone();
    long.meta.params.insert("signin_lookback".into(), toml::Value::Table(toml::toml! { duration = "5d" }));
    assert_eq!(alerts::run(&c, &long, &w, detected()).await.unwrap().alerts.len(), 3);
}

/// The real "Add service principal credentials" record of the fixtures: the key added is the one
/// in the new KeyDescription that the old one lacks.
#[tokio::test]
async fn sp_credential_added_after_signin_on_the_real_fixture_record() {
    let Some(fx) = fixtures() else { return };
    let text = std::fs::read_to_string(fx.join("azure/auditlogs/test-audit-logs-sample.log")).unwrap();
    let line = text.lines().find(|l| l.contains("Add service principal credentials")).unwrap();
    let mut rec: serde_json::Value = serde_json::from_str(line).unwrap();
    let ts = t(rec["time"].as_str().unwrap());
    let target = rec["properties"]["targetResources"][0]["id"].as_str().unwrap().to_string();
    rec["properties"]["result"] = json!("success");
    let mut signin = sp_signin("fx-s", ts - Duration::hours(1), "fx-sp", "45.0.0.1", 0, None);
    signin["properties"]["servicePrincipalId"] = json!(target);
    let lake = lake_with(&[signin, rec]).await;
    let c = ctx(&lake).await;
    let r = rule("sp_credential_added_after_signin");
    let run = alerts::run(&c, &r, &r.window_ending(ts + Duration::minutes(1)).unwrap(), detected()).await.unwrap();
    assert_eq!(run.alerts.len(), 1);
    let f: serde_json::Value = serde_json::from_str(&run.alerts[0].fields).unwrap();
    assert_eq!(f["added_key_ids"], json!(["d747da7e-e11b-4af2-aede-0487c44067af"]), "{f}");
    assert_eq!(f["added_key_types"], json!(["AsymmetricX509Cert"]), "{f}");
    assert_eq!(f["added_key_names"], json!(["CN=a70a7931-c387-4dce-9f35-fbf95bdcc91e"]), "{f}");
}

/// Every rule's ATT&CK mapping is the one its seed publishes.
#[test]
fn mitre_metadata_follows_the_seeds() {
    let techniques = |id: &str| rule(id).meta.mitre.unwrap().techniques.join(" ");
    let tactics = |id: &str| rule(id).meta.mitre.unwrap().tactics.join(" ");
    assert!(techniques("sp_rare_action_multiple_ips").contains("T1098.001"));
    assert!(techniques("sp_risk_event_stacking").contains("T1078.004"));
    assert!(techniques("sp_risk_event_stacking").contains("T1550.001"));
    assert!(tactics("sp_risk_event_stacking").contains("Persistence"));
    assert!(tactics("sp_risk_event_stacking").contains("Credential Access"));
}

#[tokio::test]
async fn sp_failed_signins_labels_wrong_tenant_and_federated_mismatches() {
    let d = t("2026-03-10T00:00:00Z");
    let lake = lake_with(&[
        sp_signin("w1", d + Duration::hours(1), "sp-w", "45.0.0.1", 7000012, None),
        sp_signin("w2", d + Duration::hours(2), "sp-w", "45.0.0.1", 700213, None),
        sp_signin("w3", d + Duration::hours(3), "sp-w", "45.0.0.1", 700211, None),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_failed_signins");
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::days(1)).unwrap(), detected()).await.unwrap();
    let label = |code: i64| -> String {
        let a = run
            .alerts
            .iter()
            .find(|a| serde_json::from_str::<serde_json::Value>(&a.fields).unwrap()["error_code"] == code);
        serde_json::from_str::<serde_json::Value>(&a.unwrap().fields).unwrap()["error_meaning"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(label(7000012), "The grant was obtained for a different tenant");
    assert!(label(700213).contains("federated identity") && label(700213).contains("subject"));
    assert!(label(700211).contains("issuer"));
}

fn eve_alert(ts: DateTime<Utc>, ip: &str, flow: u64) -> serde_json::Value {
    json!({"timestamp": ts.format("%Y-%m-%dT%H:%M:%S%.6f+0000").to_string(), "flow_id": flow, "event_type": "alert", "src_ip": ip,
        "src_port": 40000, "dest_ip": "10.0.0.10", "dest_port": 443, "proto": "TCP",
        "alert": {"action": "allowed", "gid": 1, "signature_id": 2029340, "rev": 1, "signature": "ET TOR Known Tor Exit Node Traffic",
                  "category": "Misc Attack", "severity": 2}})
}

fn user_signin(id: &str, ts: DateTime<Utc>, upn: &str, ip: &str, err: i64) -> serde_json::Value {
    json!({"time": iso(ts), "category": "SignInLogs", "properties": {"id": id, "createdDateTime": iso(ts), "userPrincipalName": upn,
        "userId": format!("uid-{upn}"), "appDisplayName": "Office 365 Exchange Online", "ipAddress": ip, "status": {"errorCode": err}}})
}

fn o365_rec(id: &str, ts: DateTime<Utc>, op: &str, user: &str, ip: &str) -> serde_json::Value {
    json!({"CreationTime": ts.format("%Y-%m-%dT%H:%M:%S").to_string(), "Id": id, "Operation": op, "RecordType": 50,
        "ResultStatus": "Succeeded", "UserId": user, "Workload": "Exchange", "ClientIPAddress": ip})
}

/// Seed 004's conditions, each with its near miss: a network alert, a successful sign-in or mail
/// access, at least two datasets, and at most 100 events of the address counting every sign-in
/// (failed ones too) and every Microsoft 365 record.
#[tokio::test]
async fn identity_signin_from_suspicious_source_follows_the_esql_conditions() {
    let h = t("2026-03-10T10:00:00Z");
    let m = |n: i64| h + Duration::minutes(n);
    let mut recs = vec![
        // Alerts: an alert and a successful user sign-in.
        eve_alert(m(1), "45.0.0.10", 1),
        user_signin("a-si", m(2), "alice@contoso.example", "45.0.0.10", 0),
        // Near miss: an alert and only a failed sign-in.
        eve_alert(m(1), "45.0.0.11", 2),
        user_signin("b-si", m(2), "bob@contoso.example", "45.0.0.11", 50126),
        // Near miss: an alert and an O365 record that is not mail access.
        eve_alert(m(1), "45.0.0.12", 3),
        o365_rec("c-o", m(2), "FileAccessed", "carol@contoso.example", "45.0.0.12"),
        // Alerts through mail access; the other O365 record and the failed sign-in count as events.
        eve_alert(m(1), "45.0.0.13", 4),
        o365_rec("d-o1", m(2), "MailItemsAccessed", "dave@contoso.example", "45.0.0.13"),
        o365_rec("d-o2", m(3), "FileAccessed", "dave@contoso.example", "45.0.0.13"),
        user_signin("d-si", m(4), "dave@contoso.example", "45.0.0.13", 50126),
        // Near miss: a successful sign-in but no network alert.
        user_signin("e-si", m(2), "erin@contoso.example", "45.0.0.14", 0),
    ];
    // A busy address: one success, then failures and O365 records up to 101 events (not alerted);
    // and one with exactly 100 events (alerted).
    for (ip, total, flow) in [("45.0.0.15", 101, 5), ("45.0.0.16", 100, 6)] {
        recs.push(eve_alert(m(1), ip, flow));
        recs.push(user_signin(&format!("{ip}-ok"), m(2), "frank@contoso.example", ip, 0));
        for k in 0..total - 2 {
            recs.push(if k % 2 == 0 {
                user_signin(&format!("{ip}-f{k}"), m(3), "frank@contoso.example", ip, 50126)
            } else {
                o365_rec(&format!("{ip}-o{k}"), m(3), "FileAccessed", "frank@contoso.example", ip)
            });
        }
    }
    let lake = lake_with(&recs).await;
    let c = ctx(&lake).await;
    let r = rule("identity_signin_from_suspicious_source");
    let run = alerts::run(&c, &r, &r.window_ending(h + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    let mut ips: Vec<String> = run.alerts.iter().map(|a| a.source_ip.clone().unwrap()).collect();
    ips.sort();
    assert_eq!(ips, vec!["45.0.0.10", "45.0.0.13", "45.0.0.16"]);
    let f = |ip: &str| -> serde_json::Value {
        serde_json::from_str(&run.alerts.iter().find(|a| a.source_ip.as_deref() == Some(ip)).unwrap().fields).unwrap()
    };
    let d = f("45.0.0.13");
    assert_eq!(d["event_count"], 4, "{d}");
    assert_eq!(d["has_mail_access"], true);
    assert_eq!(d["has_signin"], false);
    assert_eq!(d["alert_rule_ids"], json!(["2029340"]), "{d}");
    assert_eq!(d["alert_rule_names"], json!(["ET TOR Known Tor Exit Node Traffic"]), "{d}");
    assert_eq!(d["users"], json!(["dave@contoso.example"]), "{d}");
    assert_eq!(d["datasets"], json!(["azure.signinlogs", "network_alerts", "o365.audit"]), "{d}");
    assert_eq!(f("45.0.0.16")["event_count"], 100);
    // The threshold is a parameter.
    let mut r2 = r.clone();
    r2.meta.params.insert("max_events".into(), toml::Value::Integer(3));
    let run2 = alerts::run(&c, &r2, &r2.window_ending(h + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    let ips2: Vec<String> = run2.alerts.iter().map(|a| a.source_ip.clone().unwrap()).collect();
    assert_eq!(ips2, vec!["45.0.0.10"]);
}

/// Seed 001 keys sign-ins on service_principal_name, which managed identities have; Graph actions
/// group across objects whatever the id's form (GUID, UPN, base64 key, number).
#[tokio::test]
async fn sp_rare_action_multiple_ips_counts_managed_identities_and_normalizes_graph_paths() {
    let d = t("2026-03-10T00:00:00Z");
    let mi = |id: &str, h: i64, ip: &str| {
        json!({"time": iso(d + Duration::hours(h)), "category": "ManagedIdentitySignInLogs",
            "properties": {"id": id, "createdDateTime": iso(d + Duration::hours(h)), "servicePrincipalId": "id-mi-vm",
            "servicePrincipalName": "mi-vm", "appId": "app-mi-vm", "ipAddress": ip, "status": {"errorCode": 0}}})
    };
    let graph = |id: &str, h: i64, uri: &str, ip: &str| {
        json!({"time": iso(d + Duration::hours(h)), "category": "MicrosoftGraphActivityLogs",
            "properties": {"requestId": id, "timeGenerated": iso(d + Duration::hours(h)), "servicePrincipalId": "id-sp-g",
            "appId": "app-sp-g", "ipAddress": ip, "requestMethod": "GET", "requestUri": uri, "responseStatusCode": 200}})
    };
    let lake = lake_with(&[
        mi("m1", 1, "45.0.0.1"),
        mi("m2", 2, "45.0.0.2"),
        graph(
            "g1",
            1,
            "https://graph.microsoft.com/v1.0/users/alice@contoso.com/messages/AAMkAGI2TG93AAA1x9Zz=?$top=5",
            "45.0.0.3",
        ),
        graph(
            "g2",
            2,
            "https://graph.microsoft.com/v1.0/users/bob@contoso.com/messages/AAMkBGI3TG93BBB2y8Yy=",
            "45.0.0.4",
        ),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_rare_action_multiple_ips");
    let w = rules::RunWindow { start: d, end: d + Duration::days(1) };
    let rows = r.plan(&c, &w).await.unwrap().collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
    assert!(text.contains("mi-vm"), "a managed identity's rare sign-ins from 2 IPs: {text}");
    assert!(text.contains("GET /v1.0/users/{id}/messages/{id}"), "{text}");
    assert!(!text.contains("alice@") && !text.contains("AAMk"), "{text}");
}

/// The failed sign-in detection a SOC keeps on: credential errors from an address the principal never
/// signed in from successfully in 10 days, one alert per principal per run.
#[tokio::test]
async fn sp_credential_failures_from_new_source_alerts_once_per_principal_on_new_sources() {
    let d = t("2026-03-10T10:00:00Z");
    let m = |n: i64| d + Duration::minutes(n);
    let lake = lake_with(&[
        // sp-x signs in from 45.0.1.1 (ASN 64501); 45.0.1.9 was used 11 days ago (outside the history).
        sp_signin("x-ok", d - Duration::days(2), "sp-x", "45.0.1.1", 0, None),
        sp_signin("x-old", d - Duration::days(11), "sp-x", "45.0.1.9", 0, None),
        // Alert: invalid secret from a new ASN, expired secret from a new address in the known ASN.
        sp_signin("x-f1", m(5), "sp-x", "45.0.0.1", 7000215, None),
        sp_signin("x-f2", m(6), "sp-x", "45.0.0.1", 7000215, None),
        sp_signin("x-f3", m(7), "sp-x", "45.0.1.9", 7000222, None),
        // Near misses: a credential failure from the principal's own address; a new address but not
        // a credential error (Conditional Access).
        sp_signin("x-f4", m(8), "sp-x", "45.0.1.1", 7000215, None),
        sp_signin("x-f5", m(9), "sp-x", "45.0.2.1", 53003, None),
        // sp-y: a federated credential mismatch from a new address in a known ASN (medium).
        sp_signin("y-ok", d - Duration::days(1), "sp-y", "45.0.1.2", 0, None),
        sp_signin("y-f1", m(10), "sp-y", "45.0.1.3", 700213, None),
        // sp-z: its only failure is from where it signed in 9 days ago (inside the history).
        sp_signin("z-ok", d - Duration::days(9), "sp-z", "45.0.0.7", 0, None),
        sp_signin("z-f1", m(11), "sp-z", "45.0.0.7", 7000215, None),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_credential_failures_from_new_source");
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    assert_eq!(severities(&run.alerts), vec![("sp-x".into(), "high".into()), ("sp-y".into(), "medium".into())]);
    let x: serde_json::Value = serde_json::from_str(
        &run.alerts.iter().find(|a| a.service_principal_name.as_deref() == Some("sp-x")).unwrap().fields,
    )
    .unwrap();
    assert_eq!(x["failures"], 3, "{x}");
    assert_eq!(x["source_ips"], json!(["45.0.0.1", "45.0.1.9"]), "{x}");
    assert_eq!(x["error_codes"], json!([7000215, 7000222]), "{x}");
    assert_eq!(x["source_asns"], json!([64500, 64501]), "{x}");
    // The history window decides what is known: with 12 days, 45.0.1.9 is known again.
    let mut long = r.clone();
    long.meta.history_window = Some("12d".into());
    let run = alerts::run(&c, &long, &long.window_ending(d + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    let x: serde_json::Value = serde_json::from_str(
        &run.alerts.iter().find(|a| a.service_principal_name.as_deref() == Some("sp-x")).unwrap().fields,
    )
    .unwrap();
    assert_eq!(x["source_ips"], json!(["45.0.0.1"]), "{x}");
    // A backtest over the hour reports the same, once.
    let bt = alerts::backtest(&c, &r, d, d + Duration::hours(2), detected()).await.unwrap();
    assert_eq!(bt.alerts.len(), 2);
}

/// A run's cap keeps the most severe alerts and says how many it cut.
#[tokio::test]
async fn the_cap_keeps_the_most_severe_alerts() {
    let d = t("2026-03-10T10:00:00Z");
    let m = |n: i64| d + Duration::minutes(n);
    let lake = lake_with(&[
        sp_signin("a-ok", d - Duration::days(1), "sp-a", "45.0.1.1", 0, None),
        sp_signin("a-f", m(1), "sp-a", "45.0.1.5", 7000215, None), // medium, earliest
        sp_signin("b-ok", d - Duration::days(1), "sp-b", "45.0.1.1", 0, None),
        sp_signin("b-f", m(30), "sp-b", "45.0.0.5", 7000215, None), // high, later
    ])
    .await;
    let c = ctx(&lake).await;
    let mut r = rule("sp_credential_failures_from_new_source");
    r.meta.max_alerts = 1;
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    assert_eq!(run.cut, 1);
    assert_eq!(run.alerts.len(), 1);
    assert_eq!(
        (run.alerts[0].service_principal_name.as_deref(), run.alerts[0].severity.as_str()),
        (Some("sp-b"), "high")
    );
}

fn kv_op(id: &str, ts: DateTime<Utc>, oid: &str, ip: &str, op: &str, vault: &str) -> serde_json::Value {
    json!({"time": iso(ts), "category": "AuditEvent", "operationName": op, "resultType": "Success", "callerIpAddress": ip,
        "resourceId": format!("/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/{vault}"),
        "correlationId": format!("corr-{id}"),
        "identity": {"claim": {"http://schemas.microsoft.com/identity/claims/objectidentifier": oid, "appid": format!("app-{oid}")}},
        "properties": {"id": format!("https://{vault}.vault.azure.net/secrets/s/{id}"), "httpStatusCode": 200}})
}

fn arm_call(id: &str, ts: DateTime<Utc>, caller: &str, ip: &str) -> serde_json::Value {
    json!({"time": iso(ts), "category": "Administrative", "operationName": "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE",
        "resultType": "Success", "callerIpAddress": ip, "correlationId": format!("corr-{id}"), "level": "Information",
        "resourceId": "/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.COMPUTE/VIRTUALMACHINES/VM1",
        "caller": caller, "properties": {"eventDataId": id}})
}

#[tokio::test]
async fn sp_keyvault_read_from_new_source_per_principal_vault_and_address() {
    let d = t("2026-03-10T10:00:00Z");
    let m = |n: i64| d + Duration::minutes(n);
    let lake = lake_with(&[
        kv_op("h1", d - Duration::days(5), "mi-1", "45.0.1.1", "SecretGet", "KV-A"),
        kv_op("h2", d - Duration::days(11), "mi-1", "45.0.2.2", "SecretGet", "KV-A"),
        // Near miss: the known address.
        kv_op("w1", m(5), "mi-1", "45.0.1.1", "SecretGet", "KV-A"),
        // Medium: a new address in the known ASN 64501.
        kv_op("w2", m(6), "mi-1", "45.0.1.7", "SecretList", "KV-A"),
        // High: a new address in a new ASN; twice, one alert.
        kv_op("w3", m(7), "mi-1", "45.0.0.7", "SecretGet", "KV-A"),
        kv_op("w4", m(8), "mi-1", "45.0.0.7", "KeyDecrypt", "KV-A"),
        // The address last used 11 days ago is new again (outside the history window).
        kv_op("w5", m(9), "mi-1", "45.0.2.2", "CertificateGet", "KV-A"),
        // The known address but another vault: new for that vault.
        kv_op("w6", m(10), "mi-1", "45.0.1.1", "SecretGet", "KV-B"),
        // Near miss: not a read.
        kv_op("w7", m(11), "mi-1", "45.0.3.3", "VaultGet", "KV-A"),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_keyvault_read_from_new_source");
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    let mut got: Vec<(String, String, String)> = run
        .alerts
        .iter()
        .map(|a| {
            let f: serde_json::Value = serde_json::from_str(&a.fields).unwrap();
            (f["vault_name"].as_str().unwrap().to_string(), a.source_ip.clone().unwrap(), a.severity.clone())
        })
        .collect();
    got.sort();
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        got,
        vec![
            s("KV-A", "45.0.0.7", "high"),
            s("KV-A", "45.0.1.7", "medium"),
            s("KV-A", "45.0.2.2", "high"),
            s("KV-B", "45.0.1.1", "high"),
        ]
    );
    let a = run.alerts.iter().find(|a| a.source_ip.as_deref() == Some("45.0.0.7")).unwrap();
    assert_eq!(a.service_principal_id.as_deref(), Some("mi-1"));
    let f: serde_json::Value = serde_json::from_str(&a.fields).unwrap();
    assert_eq!((f["reads"].as_i64(), f["operations"].clone()), (Some(2), json!(["KeyDecrypt", "SecretGet"])));
}

#[tokio::test]
async fn sp_token_replay_from_unseen_address_compares_calls_with_nearby_signins() {
    let d = t("2026-03-10T10:00:00Z");
    let m = |n: i64| d + Duration::minutes(n);
    let lake = lake_with(&[
        sp_signin("s1", m(5), "sp-t", "45.0.1.1", 0, None),
        // Alert: ARM and Key Vault calls from an address none of its sign-ins used.
        arm_call("a1", m(20), "id-sp-t", "45.0.0.9"),
        kv_op("k1", m(25), "id-sp-t", "45.0.0.9", "SecretGet", "KV-A"),
        // Near misses: the sign-in's own address; a private address; Microsoft's network (ASN 8075).
        arm_call("a2", m(21), "id-sp-t", "45.0.1.1"),
        arm_call("a3", m(22), "id-sp-t", "10.1.2.3"),
        arm_call("a4", m(23), "id-sp-t", "45.0.4.1"),
        // Near miss: a principal whose only sign-in is 5 hours earlier is not judged.
        sp_signin("s2", m(5) - Duration::hours(5), "sp-u", "45.0.1.2", 0, None),
        arm_call("a5", m(30), "id-sp-u", "45.0.0.10"),
        // A sign-in from the same address shortly after the call (within 3 hours) clears it.
        sp_signin("s3", m(5), "sp-v", "45.0.1.3", 0, None),
        arm_call("a6", m(40), "id-sp-v", "45.0.0.11"),
        sp_signin("s4", m(100), "sp-v", "45.0.0.11", 0, None),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_token_replay_from_unseen_address");
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    assert_eq!(run.alerts.len(), 1, "{:?}", run.alerts);
    let a = &run.alerts[0];
    assert_eq!((a.service_principal_id.as_deref(), a.source_ip.as_deref()), (Some("id-sp-t"), Some("45.0.0.9")));
    let f: serde_json::Value = serde_json::from_str(&a.fields).unwrap();
    assert_eq!(f["calls"], 2, "{f}");
    assert_eq!(f["sources"], json!(["azure_activity", "keyvault"]), "{f}");
    assert_eq!(f["signin_ips"], json!(["45.0.1.1"]), "{f}");
    // The surrounding hours are a parameter: with 10 minutes, sp-v's later sign-in no longer clears it.
    let mut short = r.clone();
    short.meta.params.insert("surrounding".into(), toml::Value::Table(toml::toml! { duration = "10m" }));
    let run = alerts::run(&c, &short, &short.window_ending(d + Duration::hours(1)).unwrap(), detected()).await.unwrap();
    let ids: Vec<&str> = run.alerts.iter().map(|a| a.service_principal_id.as_deref().unwrap()).collect();
    assert!(!ids.contains(&"id-sp-v"), "sp-v has no sign-in within 10 minutes: not judged: {ids:?}");
}

/// Seed 002's analytic rule, condition by condition, each with its near miss: the audit window
/// (`>= ago(1d)`, inclusive), the credential operations, a successful service principal sign-in
/// strictly before the change, and `datetime_diff('minute', …) >= -4320` (minute boundaries, so
/// the look-back starts at the change's minute).
#[tokio::test]
async fn sp_credential_added_after_signin_every_seed_condition() {
    let d = t("2026-03-10T00:00:00Z");
    let at = d + Duration::hours(10) + Duration::seconds(30); // the changes' time, 30 s into a minute
    let minute = d + Duration::hours(10);
    let us = Duration::microseconds(1);
    let add = |id: &str, ts: DateTime<Utc>, sp: &str| {
        audit_rec(
            id,
            ts,
            "Add service principal credentials",
            "ServicePrincipal",
            &format!("id-{sp}"),
            sp,
            None,
            "success",
        )
    };
    let mi_signin = |id: &str, ts: DateTime<Utc>, sp: &str| {
        let mut r = sp_signin(id, ts, sp, "45.0.0.1", 0, None);
        r["category"] = json!("ManagedIdentitySignInLogs");
        r
    };
    let mut other_op = add("c-op", at, "sp-op");
    other_op["operationName"] = json!("Add owner to service principal");
    other_op["properties"]["activityDisplayName"] = json!("Add owner to service principal");
    let mut refused = add("c-refused", at, "sp-refused");
    refused["properties"]["result"] = json!("failure");
    let lake = lake_with(&[
        // Exactly three days before the change's minute: datetime_diff = -4320, in.
        sp_signin("s-edge", minute - Duration::days(3), "sp-edge", "45.0.0.1", 0, None),
        add("c-edge", at, "sp-edge"),
        // A microsecond earlier: -4321 minutes, out (though less than 3 days + 30 s before the change).
        sp_signin("s-early", minute - Duration::days(3) - us, "sp-early", "45.0.0.1", 0, None),
        add("c-early", at, "sp-early"),
        // A sign-in at the change's exact time is not before it (ModifiedCredTime > SignInTime).
        sp_signin("s-same", at, "sp-same", "45.0.0.1", 0, None),
        add("c-same", at, "sp-same"),
        // Only a sign-in after the change.
        sp_signin("s-after", at + Duration::minutes(5), "sp-after", "45.0.0.1", 0, None),
        add("c-after", at, "sp-after"),
        // A managed identity's sign-in is not in AADServicePrincipalSignInLogs.
        mi_signin("s-mi", at - Duration::hours(1), "sp-mi"),
        add("c-mi", at, "sp-mi"),
        // Another operation on a principal that signs in.
        sp_signin("s-op", at - Duration::hours(1), "sp-op", "45.0.0.1", 0, None),
        other_op,
        // The result is not filtered by the seed: a refused attempt alerts and says so.
        sp_signin("s-refused", at - Duration::hours(1), "sp-refused", "45.0.0.1", 0, None),
        refused,
        // The audit window is [T-1d, T]: a change exactly at its start is in, a microsecond before is not.
        sp_signin("s-win", d - Duration::hours(2), "sp-win", "45.0.0.1", 0, None),
        add("c-win-start", d, "sp-win"),
        add("c-win-before", d - us, "sp-win"),
        add("c-win-end", d + Duration::days(1), "sp-win"),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_credential_added_after_signin");
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::days(1)).unwrap(), detected()).await.unwrap();
    let f: Vec<serde_json::Value> = run.alerts.iter().map(|a| serde_json::from_str(&a.fields).unwrap()).collect();
    let mut ids: Vec<&str> = f.iter().map(|x| x["audit_id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, vec!["c-edge", "c-refused", "c-win-end", "c-win-start"], "{f:?}");
    let get = |id: &str| f.iter().find(|x| x["audit_id"] == id).unwrap().clone();
    assert_eq!(get("c-refused")["result"], "failure");
    assert_eq!(get("c-edge")["result"], "success");
    assert_eq!(get("c-edge")["minutes_since_signin"], 3 * 1440);
}

/// Seed 002's failed sign-in query, condition by condition: the service principal sign-in table only,
/// `ResultType != "0"`, `TimeGenerated >= ago(1d)`, one row per principal, address and code with the
/// set of resources, and the threshold.
#[tokio::test]
async fn sp_failed_signins_every_kql_condition() {
    let d = t("2026-03-10T00:00:00Z");
    let us = Duration::microseconds(1);
    let with_category = |mut r: serde_json::Value, cat: &str| {
        r["category"] = json!(cat);
        r
    };
    let with_resource = |mut r: serde_json::Value, res: &str| {
        r["properties"]["resourceDisplayName"] = json!(res);
        r
    };
    let lake = lake_with(&[
        // The window's edges: at T-1d in, a microsecond before out, at T in.
        sp_signin("e1", d, "sp-a", "45.0.0.1", 7000215, None),
        sp_signin("e0", d - us, "sp-a", "45.0.0.1", 7000215, None),
        with_resource(sp_signin("e2", d + Duration::days(1), "sp-a", "45.0.0.1", 7000215, None), "Azure Key Vault"),
        // Another address and another code are other rows; a success is not a failure.
        sp_signin("e3", d + Duration::hours(1), "sp-a", "45.0.0.2", 7000215, None),
        sp_signin("e4", d + Duration::hours(1), "sp-a", "45.0.0.1", 7000222, None),
        sp_signin("e5", d + Duration::hours(1), "sp-a", "45.0.0.3", 0, None),
        // Managed identity and user sign-in failures are not in AADServicePrincipalSignInLogs.
        with_category(
            sp_signin("e6", d + Duration::hours(1), "sp-mi", "45.0.0.4", 7000215, None),
            "ManagedIdentitySignInLogs",
        ),
        with_category(sp_signin("e7", d + Duration::hours(1), "sp-user", "45.0.0.4", 50126, None), "SignInLogs"),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_failed_signins");
    let run = alerts::run(&c, &r, &r.window_ending(d + Duration::days(1)).unwrap(), detected()).await.unwrap();
    let mut rows: Vec<(String, String, i64, i64, String)> = run
        .alerts
        .iter()
        .map(|a| {
            let f: serde_json::Value = serde_json::from_str(&a.fields).unwrap();
            (
                f["service_principal_name"].as_str().unwrap().to_string(),
                f["source_ip"].as_str().unwrap().to_string(),
                f["error_code"].as_i64().unwrap(),
                f["attempts"].as_i64().unwrap(),
                f["resources"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    let row = |ip: &str, code: i64, n: i64, res: &str| ("sp-a".to_string(), ip.to_string(), code, n, res.to_string());
    assert_eq!(
        rows,
        vec![
            row("45.0.0.1", 7000215, 2, "Azure Key Vault, Microsoft Graph"),
            row("45.0.0.1", 7000222, 1, "Microsoft Graph"),
            row("45.0.0.2", 7000215, 1, "Microsoft Graph"),
        ]
    );
    let first = run.alerts.iter().find(|a| a.fields.contains("\"attempts\":2")).unwrap();
    assert_eq!(first.ts, d.timestamp_micros(), "StartTimeUtc is the first failure");
}

/// Seed 004's address conditions and window: exactly the rule's 26 private and reserved ranges are
/// left out (a neighbour just outside one is not, nor IPv6 unique-local space, which the list lacks),
/// and the 8-hour window includes both of its ends.
#[tokio::test]
async fn identity_signin_from_suspicious_source_ranges_and_window_edges() {
    let end = t("2026-03-10T10:00:00Z");
    let start = end - Duration::hours(8);
    let us = Duration::microseconds(1);
    let mut recs = Vec::new();
    for (k, ip) in ["100.64.0.5", "100.128.0.5", "192.0.0.171", "192.0.1.171", "fe80::5", "fd00::5"].iter().enumerate()
    {
        recs.push(eve_alert(end - Duration::hours(1), ip, 10 + k as u64));
        recs.push(user_signin(&format!("r{k}"), end - Duration::minutes(30), "alice@contoso.example", ip, 0));
    }
    // Both ends of [T-8h, T]: an alert at T-8h and a sign-in at T alert; an alert a microsecond earlier does not.
    recs.push(eve_alert(start, "45.0.0.20", 30));
    recs.push(user_signin("w1", end, "alice@contoso.example", "45.0.0.20", 0));
    recs.push(eve_alert(start - us, "45.0.0.21", 31));
    recs.push(user_signin("w2", end, "alice@contoso.example", "45.0.0.21", 0));
    let lake = lake_with(&recs).await;
    let c = ctx(&lake).await;
    let r = rule("identity_signin_from_suspicious_source");
    let run = alerts::run(&c, &r, &r.window_ending(end).unwrap(), detected()).await.unwrap();
    let mut ips: Vec<String> = run.alerts.iter().map(|a| a.source_ip.clone().unwrap()).collect();
    ips.sort();
    assert_eq!(ips, vec!["100.128.0.5", "192.0.1.171", "45.0.0.20", "fd00::5"]);
}

/// Seed 001's conditions, each with its near miss: at most 5 events of an action by a principal in a
/// UTC day, from at least 2 addresses; events without an address are not counted; audit events
/// count only when an app initiated them, O365 records only in the ServicePrincipal category.
#[tokio::test]
async fn sp_rare_action_multiple_ips_every_hunt_condition() {
    let d = t("2026-03-10T00:00:00Z");
    let h = |n: i64| d + Duration::hours(n);
    let mut recs = Vec::new();
    let mut n = 0;
    let mut signin = |sp: &str, ts: DateTime<Utc>, ip: Option<&str>| {
        n += 1;
        let mut r = sp_signin(&format!("{sp}-{n}"), ts, sp, ip.unwrap_or("45.0.0.1"), 0, None);
        if ip.is_none() {
            r["properties"].as_object_mut().unwrap().remove("ipAddress");
            r.as_object_mut().unwrap().remove("callerIpAddress");
        }
        r
    };
    // Five events from two addresses: a row. Six: none. Three from one address: none.
    for k in 0..5 {
        recs.push(signin("sp-five", h(k + 1), Some(if k == 0 { "45.0.0.2" } else { "45.0.0.3" })));
    }
    for k in 0..6 {
        recs.push(signin("sp-six", h(k + 1), Some(if k == 0 { "45.0.0.2" } else { "45.0.0.3" })));
    }
    for k in 0..3 {
        recs.push(signin("sp-one", h(k + 1), Some("45.0.0.4")));
    }
    // Two addresses on either side of midnight: one address per UTC day, no row.
    recs.push(signin("sp-midnight", d + Duration::days(1) - Duration::minutes(1), Some("45.0.0.5")));
    recs.push(signin("sp-midnight", d + Duration::days(1) + Duration::minutes(1), Some("45.0.0.6")));
    // Two with addresses and four without: two events counted, a row with event_count 2.
    recs.push(signin("sp-noip", h(1), Some("45.0.0.7")));
    recs.push(signin("sp-noip", h(2), Some("45.0.0.8")));
    for k in 0..4 {
        recs.push(signin("sp-noip", h(3 + k), None));
    }
    // Audit events: initiated by an app (named by its display name), a row; by a user, none.
    let audit_by = |id: &str, ts: DateTime<Utc>, ip: &str, app: bool| {
        let init = if app {
            json!({"app": {"appId": "app-x", "displayName": "Sync App", "servicePrincipalId": "id-sync", "servicePrincipalName": null}})
        } else {
            json!({"user": {"id": "u1", "userPrincipalName": "admin@contoso.example"}})
        };
        let op = if app { "Add member to group" } else { "Add member to role" };
        json!({"time": iso(ts), "category": "AuditLogs", "operationName": op, "callerIpAddress": ip,
            "properties": {"id": id, "activityDisplayName": op, "activityDateTime": iso(ts), "result": "success",
            "category": "GroupManagement", "initiatedBy": init, "targetResources": [], "additionalDetails": []}})
    };
    recs.push(audit_by("a1", h(1), "45.0.0.9", true));
    recs.push(audit_by("a2", h(2), "45.0.0.10", true));
    recs.push(audit_by("a3", h(1), "45.0.0.9", false));
    recs.push(audit_by("a4", h(2), "45.0.0.10", false));
    // O365: the ServicePrincipal category, a row; another category, none.
    let o365 = |id: &str, ts: DateTime<Utc>, ip: &str, cat: &str| {
        json!({"CreationTime": ts.format("%Y-%m-%dT%H:%M:%S").to_string(), "Id": id, "Operation": "MailItemsAccessed",
            "RecordType": 50, "ResultStatus": "Succeeded", "UserId": format!("{cat}-principal"), "Workload": "Exchange",
            "ClientIPAddress": ip, "ExtendedProperties": [{"Name": "extendedAuditEventCategory", "Value": cat}]})
    };
    recs.push(o365("o1", h(1), "45.0.0.11", "ServicePrincipal"));
    recs.push(o365("o2", h(2), "45.0.0.12", "ServicePrincipal"));
    recs.push(o365("o3", h(1), "45.0.0.11", "Default"));
    recs.push(o365("o4", h(2), "45.0.0.12", "Default"));
    let lake = lake_with(&recs).await;
    let c = ctx(&lake).await;
    let r = rule("sp_rare_action_multiple_ips");
    let w = rules::RunWindow { start: d, end: d + Duration::days(2) };
    let batches = r.plan(&c, &w).await.unwrap().collect().await.unwrap();
    let mut got = Vec::new();
    for b in &batches {
        let col = |name: &str| {
            arrow::compute::cast(b.column_by_name(name).unwrap(), &arrow::datatypes::DataType::Utf8).unwrap()
        };
        let (a, sp, cnt) = (col("action"), col("service_principal_name"), col("event_count"));
        let s = |c: &arrow::array::ArrayRef, i: usize| {
            c.as_any().downcast_ref::<arrow::array::StringArray>().unwrap().value(i).to_string()
        };
        for i in 0..b.num_rows() {
            got.push((s(&a, i), s(&sp, i), s(&cnt, i)));
        }
    }
    got.sort();
    let row = |a: &str, sp: &str, n: &str| (a.to_string(), sp.to_string(), n.to_string());
    assert_eq!(
        got,
        vec![
            row("Add member to group", "Sync App", "2"),
            row("MailItemsAccessed", "ServicePrincipal-principal", "2"),
            row("Sign-in activity", "sp-five", "5"),
            row("Sign-in activity", "sp-noip", "2"),
        ]
    );
    // Both thresholds are bound parameters: at most 4 events drops sp-five; 3 addresses drops all.
    let count = |r: &Rule| {
        let r = r.clone();
        let c = &c;
        async move { r.plan(c, &w).await.unwrap().collect().await.unwrap().iter().map(|b| b.num_rows()).sum::<usize>() }
    };
    let mut r4 = r.clone();
    r4.meta.params.insert("max_events".into(), toml::Value::Integer(4));
    assert_eq!(count(&r4).await, 3);
    let mut r3 = r.clone();
    r3.meta.params.insert("min_ips".into(), toml::Value::Integer(3));
    assert_eq!(count(&r3).await, 0);
}

/// The edges of the Key Vault rule's windows: history is [T-10d, T-1h] (a read exactly at either end
/// is known), the run's window (T-1h, T]; and of the token-replay rule's: a sign-in exactly
/// `surrounding` from the call is compared, a failed sign-in's or a user sign-in's address is not.
#[tokio::test]
async fn resource_log_rules_window_edges() {
    let end = t("2026-03-10T10:00:00Z");
    let start = end - Duration::hours(1);
    let us = Duration::microseconds(1);
    let m = |n: i64| start + Duration::minutes(n);
    let mut user = user_signin("u1", m(1), "alice@contoso.example", "45.0.1.9", 0);
    user["properties"]["servicePrincipalId"] = json!("id-sp-user");
    let lake = lake_with(&[
        // Key Vault: known at exactly T-10d and exactly T-1h; a microsecond before T-10d is forgotten.
        kv_op("h1", end - Duration::days(10), "mi-1", "45.0.1.1", "SecretGet", "KV-A"),
        kv_op("h2", start, "mi-1", "45.0.1.2", "SecretGet", "KV-A"),
        kv_op("h3", end - Duration::days(10) - us, "mi-1", "45.0.1.3", "SecretGet", "KV-A"),
        kv_op("w1", m(10), "mi-1", "45.0.1.1", "SecretGet", "KV-A"),
        kv_op("w2", m(11), "mi-1", "45.0.1.2", "SecretGet", "KV-A"),
        kv_op("w3", m(12), "mi-1", "45.0.1.3", "SecretGet", "KV-A"),
        // At exactly T the read is in the run.
        kv_op("w4", end, "mi-1", "45.0.1.4", "SecretGet", "KV-A"),
        // Token replay: sp-e signed in from 45.0.1.5 exactly 3 h before the call from 45.0.0.30.
        sp_signin("s-e", m(30) - Duration::hours(3), "sp-e", "45.0.1.5", 0, None),
        arm_call("c-e", m(30), "id-sp-e", "45.0.0.30"),
        // sp-f's only sign-in 3 h + 1 µs before: not judged.
        sp_signin("s-f", m(30) - Duration::hours(3) - us, "sp-f", "45.0.1.6", 0, None),
        arm_call("c-f", m(30), "id-sp-f", "45.0.0.31"),
        // sp-g signed in from the call's address, but that sign-in failed: the call still alerts.
        sp_signin("s-g1", m(5), "sp-g", "45.0.1.7", 0, None),
        sp_signin("s-g2", m(6), "sp-g", "45.0.0.32", 7000215, None),
        arm_call("c-g", m(30), "id-sp-g", "45.0.0.32"),
        // A user sign-in carrying the principal's id is not a workload sign-in: not judged.
        user,
        arm_call("c-u", m(30), "id-sp-user", "45.0.0.33"),
        // Calls at the window's end and sign-ins exactly 3 h after them, the end of the sign-ins'
        // range: sp-h's from elsewhere (judged, alerts), sp-j's from the call's address (seen);
        // sp-i's a microsecond later (not judged).
        sp_signin("s-h", end + Duration::hours(3), "sp-h", "45.0.1.8", 0, None),
        arm_call("c-h", end, "id-sp-h", "45.0.0.34"),
        sp_signin("s-i", end + Duration::hours(3) + us, "sp-i", "45.0.1.10", 0, None),
        arm_call("c-i", end, "id-sp-i", "45.0.0.35"),
        sp_signin("s-j", end + Duration::hours(3), "sp-j", "45.0.0.36", 0, None),
        arm_call("c-j", end, "id-sp-j", "45.0.0.36"),
    ])
    .await;
    let c = ctx(&lake).await;
    let kv = rule("sp_keyvault_read_from_new_source");
    let run = alerts::run(&c, &kv, &kv.window_ending(end).unwrap(), detected()).await.unwrap();
    let mut ips: Vec<String> = run.alerts.iter().map(|a| a.source_ip.clone().unwrap()).collect();
    ips.sort();
    assert_eq!(ips, vec!["45.0.1.3", "45.0.1.4"]);
    let tr = rule("sp_token_replay_from_unseen_address");
    let run = alerts::run(&c, &tr, &tr.window_ending(end).unwrap(), detected()).await.unwrap();
    let mut got: Vec<(String, String)> =
        run.alerts.iter().map(|a| (a.service_principal_id.clone().unwrap(), a.source_ip.clone().unwrap())).collect();
    got.sort();
    let p = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(got, vec![p("id-sp-e", "45.0.0.30"), p("id-sp-g", "45.0.0.32"), p("id-sp-h", "45.0.0.34")]);
}

/// The resource-log rules' one-pass backtests equal replaying every hourly run: random Key Vault
/// reads, ARM calls and sign-ins over 14 days, with reads exactly on run ends, exactly 10 days
/// apart and a microsecond more, and sign-ins exactly `surrounding` from calls.
#[tokio::test]
async fn resource_log_rules_backtests_equal_replaying_every_run() {
    let mut rng = wisp_udfs::testdb::XorShift(0x2545f4914f6cdd1d);
    let mut next = move || rng.next();
    let start = t("2026-03-01T00:00:00Z");
    let mut recs = Vec::new();
    let ops = ["SecretGet", "KeyDecrypt", "CertificateList", "VaultGet"];
    for i in 0..700u64 {
        let oid = format!("id-sp-{}", next() % 12);
        let ip = format!("45.0.{}.{}", next() % 5, next() % 6 + 1);
        let mut ts = start + Duration::seconds((next() % (14 * 86_400)) as i64);
        if i % 25 == 0 {
            ts = start + Duration::hours((next() % (14 * 24)) as i64); // exactly on a run end
        }
        match next() % 3 {
            0 => {
                let vault = if next() % 3 == 0 { "KV-B" } else { "KV-A" };
                recs.push(kv_op(&format!("k{i}"), ts, &oid, &ip, ops[(next() % 4) as usize], vault));
                if i % 20 == 0 {
                    // The same key exactly 10 days later, and another a microsecond past 10 days.
                    let later = ts + Duration::days(10) + Duration::microseconds((i % 40 / 20) as i64);
                    recs.push(kv_op(&format!("k{i}-again"), later, &oid, &ip, "SecretGet", vault));
                }
            }
            1 => recs.push(arm_call(&format!("a{i}"), ts, &oid, &ip)),
            _ => {
                let sp = oid.trim_start_matches("id-").to_string();
                let err = if next() % 8 == 0 { 7000215 } else { 0 };
                recs.push(sp_signin(&format!("s{i}"), ts, &sp, &ip, err, None));
                if i % 15 == 0 {
                    recs.push(arm_call(&format!("a{i}-edge"), ts + Duration::hours(3), &oid, "45.0.0.250"));
                }
            }
        }
    }
    // An ASN last read exactly on the end of the run before (its bucket is that run's), then a new
    // address in the same ASN: the ASN is known to the run.
    recs.push(kv_op("edge-1", t("2026-03-10T05:00:00Z"), "id-sp-edge", "45.0.1.1", "SecretGet", "KV-A"));
    recs.push(kv_op("edge-2", t("2026-03-10T05:30:00Z"), "id-sp-edge", "45.0.1.2", "SecretGet", "KV-A"));
    let lake = lake_with(&recs).await;
    let c = ctx(&lake).await;
    let (from, to) = (t("2026-03-08T00:00:00Z"), t("2026-03-15T00:00:00Z"));
    for id in ["sp_keyvault_read_from_new_source", "sp_token_replay_from_unseen_address"] {
        assert_one_pass_equals_replay(&c, &rule(id), from, to).await;
    }
}

/// The Key Vault rule's one-pass backtest over the rollup's 'day' rows equals replaying every run
/// when an address has two ASNs on one day (read before and after the ASN table changed): that
/// day's row of the second ASN begins later and ends earlier than the first's, and a read 10 days
/// later is judged by the day's last read (known), not by the row that began last (which would
/// make it new); the same read from an address last used before the 10 days is new.
#[tokio::test]
async fn keyvault_backtest_over_day_rows_with_two_asns_for_an_address_equals_replay() {
    let mut rng = wisp_udfs::testdb::XorShift(0x6a09_e667_f3bc_c909);
    let mut next = move || rng.next();
    let start = t("2026-03-01T00:00:00Z");
    let mut recs = Vec::new();
    for i in 0..400u64 {
        let oid = format!("id-sp-{}", next() % 8);
        let ip = format!("45.0.{}.{}", next() % 3, next() % 6 + 1);
        let ts = start + Duration::seconds((next() % (14 * 86_400)) as i64);
        let vault = if next() % 3 == 0 { "KV-B" } else { "KV-A" };
        recs.push(kv_op(&format!("k{i}"), ts, &oid, &ip, "SecretGet", vault));
    }
    let d = t("2026-03-02T00:00:00Z");
    // 45.0.1.9 in ASN 64501: 01:00 and 22:00; in the renumbered ASN (second ingest): 02:00.
    recs.push(kv_op("two-1", d + Duration::hours(1), "mi-two", "45.0.1.9", "SecretGet", "KV-A"));
    recs.push(kv_op("two-2", d + Duration::hours(22), "mi-two", "45.0.1.9", "SecretGet", "KV-A"));
    // 10 days and 12.5 hours after the first read: the run ending at 13:00 has history from 13:00
    // of day `d`, which holds the 22:00 read.
    recs.push(kv_op(
        "two-4",
        d + Duration::days(10) + Duration::minutes(750),
        "mi-two",
        "45.0.1.9",
        "SecretGet",
        "KV-A",
    ));
    // The control: an address read only at 01:00 of day `d`, then at the same time 10 days later.
    recs.push(kv_op("one-1", d + Duration::hours(1), "mi-two", "45.0.1.10", "SecretGet", "KV-A"));
    recs.push(kv_op(
        "one-4",
        d + Duration::days(10) + Duration::minutes(750),
        "mi-two",
        "45.0.1.10",
        "SecretGet",
        "KV-A",
    ));
    let lake = lake_with(&recs).await;
    let dir = tmp("rules-asn2");
    let late = kv_op("two-3", d + Duration::hours(2), "mi-two", "45.0.1.9", "SecretGet", "KV-A");
    std::fs::write(dir.join("late.json"), format!("{late}\n")).unwrap();
    std::fs::write(dir.join("asn.csv"), "start_ip,end_ip,asn,organization\n45.0.1.0,45.0.1.255,65010,Renumbered Net\n")
        .unwrap();
    let mut o = opts(vec![dir.join("late.json").display().to_string()]);
    o.asn_db = Some(dir.join("asn.csv"));
    let s = ingest_into(&lake, o).await;
    assert_eq!(s.rejected_total(), 0, "{s:?}");
    let l = wisp::lake::Lake::open(&lake.display().to_string()).unwrap();
    let written = wisp::rollups::refresh(&l, None, 512 << 20, wisp::rollups::KEEP_REPLACED).await.unwrap();
    assert!(written.iter().any(|w| w.rollup == "sp_keyvault_read_rollup" && w.day == "2026-03-02"), "{written:?}");
    let c = ctx(&lake).await;
    let rows = c
        .sql(
            "SELECT source_asn, first_ts, last_ts FROM sp_keyvault_read_rollup \
             WHERE caller_ip = '45.0.1.9' AND grain = 'day' AND day = '2026-03-02' ORDER BY source_asn",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string();
    let n: usize = rows.iter().map(|b| b.num_rows()).sum();
    assert!(n == 2 && text.contains("64501") && text.contains("65010"), "two rows, one per ASN: {text}");
    let alerts = assert_one_pass_equals_replay(
        &c,
        &rule("sp_keyvault_read_from_new_source"),
        t("2026-03-11T00:00:00Z"),
        t("2026-03-13T12:00:00Z"),
    )
    .await;
    let run = (d + Duration::days(10) + Duration::hours(13)).timestamp_micros();
    let mut edge: Vec<_> = alerts
        .iter()
        .filter(|a| a.window_end == run && a.service_principal_id.as_deref() == Some("mi-two"))
        .map(|a| a.source_ip.clone().unwrap())
        .collect();
    edge.sort();
    assert_eq!(edge, ["45.0.1.10"]);
}

/// The suspicious-source rule's one-pass backtest (an 8-hour window sliding hourly, suppressed by
/// address for 8 hours) equals replaying every run: random network alerts, sign-ins (some failed)
/// and Microsoft 365 records of a few addresses over four days, some exactly on run ends and
/// exactly 8 hours before one, and a private address that never alerts.
#[tokio::test]
async fn identity_signin_backtest_equals_replaying_every_run() {
    let mut rng = wisp_udfs::testdb::XorShift(0x517c_c1b7_2722_0a95);
    let mut next = move || rng.next();
    let start = t("2026-03-10T00:00:00Z");
    let mut recs = Vec::new();
    for i in 0..900u64 {
        let ip = if i % 40 == 0 { "10.1.2.3".to_string() } else { format!("45.0.{}.{}", next() % 3, next() % 8 + 1) };
        let mut ts = start + Duration::seconds((next() % (4 * 86_400)) as i64);
        if i % 9 == 0 {
            ts = start + Duration::hours((next() % (4 * 24)) as i64); // exactly on a run end
        }
        let user = format!("user{}@contoso.example", next() % 6);
        match next() % 6 {
            0 => recs.push(eve_alert(ts, &ip, i)),
            1 | 2 => recs.push(user_signin(&format!("s{i}"), ts, &user, &ip, if next() % 3 == 0 { 50126 } else { 0 })),
            3 => {
                recs.push(eve_alert(ts, &ip, i));
                // The same address 8 hours later: in the last run whose window still holds the alert.
                recs.push(user_signin(&format!("s{i}-8h"), ts + Duration::hours(8), &user, &ip, 0));
            }
            _ => {
                let op = if next() % 2 == 0 { "MailItemsAccessed" } else { "FileAccessed" };
                // O365 times have whole seconds.
                let ts = ts - Duration::nanoseconds(ts.timestamp_subsec_nanos() as i64);
                recs.push(o365_rec(&format!("o{i}"), ts, op, &user, &ip));
            }
        }
    }
    let lake = lake_with(&recs).await;
    let c = ctx(&lake).await;
    let r = rule("identity_signin_from_suspicious_source");
    let alerts = assert_one_pass_equals_replay(&c, &r, t("2026-03-11T00:00:00Z"), t("2026-03-13T12:00:00Z")).await;
    assert!(alerts.iter().all(|a| a.source_ip.as_deref() != Some("10.1.2.3")), "a private address never alerts");
}

/// The credential-added rule (daily, inclusive window ends, a 3-day sign-in look-back from the
/// change's minute) in one pass equals replaying every daily run: changes exactly at midnight (in
/// two runs' windows: the first reports it), at the range's unaligned start, and sign-ins exactly
/// at the look-back's edge.
#[tokio::test]
async fn credential_added_backtest_equals_replaying_every_run() {
    let mut rng = wisp_udfs::testdb::XorShift(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next();
    let start = t("2026-03-07T00:00:00Z");
    let mut recs = Vec::new();
    for i in 0..700u64 {
        let sp = format!("cred-{}", next() % 8);
        let ts = start + Duration::seconds((next() % (9 * 86_400)) as i64);
        recs.push(sp_signin(
            &format!("s{i}"),
            ts,
            &sp,
            &format!("45.0.1.{}", next() % 20 + 1),
            if i % 7 == 0 { 7000215 } else { 0 },
            None,
        ));
    }
    for i in 0..90u64 {
        let sp = format!("cred-{}", next() % 9); // cred-8 never signs in
        let mut ts = start + Duration::days(3) + Duration::seconds((next() % (6 * 86_400)) as i64);
        if i % 6 == 0 {
            ts = start + Duration::days(3 + (next() % 6) as i64); // exactly at midnight
        }
        if i % 10 == 1 && sp != "cred-8" {
            // A sign-in exactly at the look-back's edge (3 days before the change's minute).
            let edge = ts
                - Duration::seconds(ts.timestamp() % 60)
                - Duration::nanoseconds(ts.timestamp_subsec_nanos() as i64)
                - Duration::days(3);
            recs.push(sp_signin(&format!("edge{i}"), edge, &sp, "45.0.2.9", 0, None));
        }
        let op = if i % 3 == 0 {
            "Update application – Certificates and secrets management"
        } else {
            "Add service principal credentials"
        };
        recs.push(key_change(&format!("k{i}"), ts, op, &sp, &["old"], &["old", &format!("new{i}")]));
    }
    let lake = lake_with(&recs).await;
    let c = ctx(&lake).await;
    let r = rule("sp_credential_added_after_signin");
    let alerts = assert_one_pass_equals_replay(&c, &r, t("2026-03-11T07:00:00Z"), t("2026-03-15T00:00:00Z")).await;
    assert!(alerts.iter().all(|a| !a.fields.to_string().contains("cred-8")), "no sign-in, no alert");
}

/// The rule's one-pass backtest over `[from, to]` gives exactly the alerts (ids, windows, times,
/// severities, fields) of replaying every run, and the data makes more than 20; returns them.
async fn assert_one_pass_equals_replay(
    c: &datafusion::prelude::SessionContext,
    r: &Rule,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<alerts::Alert> {
    let id = &r.meta.id;
    assert!(r.backtest_sql.is_some(), "{id} has no one-pass backtest");
    let key = |a: &[alerts::Alert]| {
        let mut v: Vec<_> =
            a.iter().map(|a| (a.alert_id.clone(), a.window_end, a.ts, a.severity.clone(), a.fields.clone())).collect();
        v.sort();
        v
    };
    let one = alerts::backtest(c, r, from, to, detected()).await.unwrap();
    let replay = alerts::backtest_replay(c, r, from, to, detected()).await.unwrap();
    assert!(replay.alerts.len() > 20, "{id}: the data should alert: {}", replay.alerts.len());
    assert_eq!(key(&one.alerts), key(&replay.alerts), "{id}");
    replay.alerts
}

/// The risk-stacking rule's one-pass backtest equals replaying every hourly run: random risk
/// detections (several versions each, some updated to another level later, some exactly on run
/// ends) and sign-ins, some from allowlisted addresses.
#[tokio::test]
async fn sp_risk_event_stacking_backtest_equals_replaying_every_run() {
    let mut rng = wisp_udfs::testdb::XorShift(0x9e3779b97f4a7c15);
    let mut next = move || rng.next();
    let start = t("2026-03-10T00:00:00Z");
    let types =
        ["leakedCredentials", "unfamiliarFeatures", "anomalousToken", "maliciousIPAddress", "suspiciousAPITraffic"];
    let levels = ["low", "medium", "high"];
    let mut recs = Vec::new();
    for i in 0..500u64 {
        let sp = format!("sp-r{}", next() % 15);
        let mut ts = start + Duration::seconds((next() % (3 * 86_400)) as i64);
        if i % 20 == 0 {
            ts = start + Duration::hours((next() % 72) as i64);
        }
        if next() % 2 == 0 {
            let ty = types[(next() % 5) as usize];
            let lvl = levels[(next() % 3) as usize];
            recs.push(risk(&format!("e{i}"), ts, &sp, ty, lvl, ts));
            if i % 3 == 0 {
                // A later version at another level (the newest one counts).
                let lvl2 = levels[(next() % 3) as usize];
                recs.push(risk(&format!("e{i}"), ts, &sp, ty, lvl2, ts + Duration::minutes((next() % 90) as i64 + 1)));
            }
        } else {
            let ip = if next() % 4 == 0 { "203.0.113.7".to_string() } else { format!("45.0.0.{}", next() % 200 + 1) };
            let err = if next() % 5 == 0 { 7000215 } else { 0 };
            recs.push(sp_signin(&format!("s{i}"), ts, &sp, &ip, err, None));
        }
    }
    let lake = lake_with(&recs).await;
    let c = ctx_with_allowlist(&lake, &["203.0.113.7"]).await;
    let (from, to) = (t("2026-03-10T02:00:00Z"), t("2026-03-13T00:00:00Z"));
    let alerts = assert_one_pass_equals_replay(&c, &rule("sp_risk_event_stacking"), from, to).await;
    assert!(alerts.iter().any(|a| a.severity == "critical"), "some alert should be critical");
}

/// The two daily hunts' one-pass backtests equal replaying every daily run (windows closed at both
/// ends): random sign-ins over six days, failures with several codes and resources, events exactly
/// at midnight (held by two runs: the run ending that midnight counts them alone, in a day of
/// their own), a range starting off the grid, and Microsoft 365 service-principal records.
#[tokio::test]
async fn daily_hunts_backtests_equal_replaying_every_run() {
    let mut rng = wisp_udfs::testdb::XorShift(0x1f83_d9ab_fb41_bd6b);
    let mut next = move || rng.next();
    let start = t("2026-03-07T00:00:00Z");
    let codes = [7000215, 7000222, 700016, 53003];
    let mut recs = Vec::new();
    for i in 0..1500u64 {
        let sp = format!("daily-{}", next() % 70);
        let mut ts = start + Duration::seconds((next() % (6 * 86_400)) as i64);
        if i % 8 == 0 {
            ts = start + Duration::days((next() % 7) as i64); // exactly at midnight
        }
        let ip = format!("45.0.1.{}", next() % 4 + 1);
        let err = if next() % 3 == 0 { codes[(next() % 4) as usize] } else { 0 };
        let mut r = sp_signin(&format!("d{i}"), ts, &sp, &ip, err, None);
        if next() % 3 == 0 {
            r["properties"]["resourceDisplayName"] = json!("Azure Key Vault");
        }
        recs.push(r);
        if i % 5 == 0 {
            let ts = ts - Duration::nanoseconds(ts.timestamp_subsec_nanos() as i64);
            let mut o = o365_rec(&format!("o{i}"), ts, "MailItemsAccessed", &sp, &format!("45.0.2.{}", next() % 3 + 1));
            o["ExtendedProperties"] = json!([{"Name": "extendedAuditEventCategory", "Value": "ServicePrincipal"}]);
            recs.push(o);
        }
    }
    // Two addresses exactly at midnight, and more of the day after from a third one.
    for (k, ip) in ["45.0.3.1", "45.0.3.2", "45.0.3.3", "45.0.3.3", "45.0.3.3", "45.0.3.3"].iter().enumerate() {
        let ts = t("2026-03-10T00:00:00Z") + Duration::hours(if k < 2 { 0 } else { k as i64 });
        recs.push(sp_signin(&format!("m{k}"), ts, "daily-midnight", ip, 0, None));
    }
    let lake = lake_with(&recs).await;
    let (from, to) = (t("2026-03-08T07:00:00Z"), t("2026-03-13T00:00:00Z"));
    let mut over_events = Vec::new();
    // First over the events, then over the rollups the days' summaries make (the rare-action
    // backtest reads the 'day' rows, and the events exactly at midnight from the events), with
    // one day's summary stale again (its events read as 'event' rows).
    for pass in ["events", "rollups", "one day stale"] {
        if pass == "rollups" {
            let l = wisp::lake::Lake::open(&lake.display().to_string()).unwrap();
            let written = wisp::rollups::refresh(&l, None, 512 << 20, wisp::rollups::KEEP_REPLACED).await.unwrap();
            assert!(written.iter().any(|w| w.rollup == "sp_activity_rollup" && w.day == "2026-03-10"), "{written:?}");
        }
        if pass == "one day stale" {
            let late = [sp_signin("late-1", t("2026-03-11T12:00:00Z"), "daily-late", "45.0.4.1", 0, None)];
            let dir = tmp("rules-late");
            std::fs::write(dir.join("late.json"), late.iter().map(|r| format!("{r}\n")).collect::<String>()).unwrap();
            let s = ingest_into(&lake, opts(vec![dir.join("late.json").display().to_string()])).await;
            assert_eq!(s.rejected_total(), 0, "{s:?}");
        }
        let c = ctx(&lake).await;
        for (k, id) in ["sp_failed_signins", "sp_rare_action_multiple_ips"].into_iter().enumerate() {
            let alerts = assert_one_pass_equals_replay(&c, &rule(id), from, to).await;
            // The run ending at midnight reports that midnight's day from its events alone (two
            // addresses, two events); the next run, holding six events of the day, would not.
            let midnight = t("2026-03-10T00:00:00Z").timestamp_micros();
            let named = |a: &alerts::Alert| a.fields.to_string().contains("daily-midnight");
            let runs: Vec<_> = alerts.iter().filter(|a| named(a)).map(|a| (a.window_end, a.ts)).collect();
            if id == "sp_rare_action_multiple_ips" {
                assert_eq!(runs, [(midnight, midnight)], "{id} over {pass}");
            }
            let mut rows: Vec<_> = alerts.iter().map(|a| (a.window_end, a.ts, a.fields.to_string())).collect();
            rows.sort();
            if pass == "events" {
                over_events.push(rows);
            } else if pass == "rollups" {
                assert_eq!(rows, over_events[k], "{id}: the same alerts over the rollups as over the events");
            } else {
                // The late sign-in (one address, one event) adds no alert of its own.
                assert!(!rows.iter().any(|r| r.2.contains("daily-late")), "{id}");
                assert_eq!(rows, over_events[k], "{id}: the same alerts with 2026-03-11 read raw");
            }
        }
    }
}

/// The enrichment warning probes the range's last day first and the whole range only when that
/// day has no enriched sign-in: sign-ins enriched only on an earlier day of the range still count
/// (no warning), a range whose sign-ins are all unenriched warns, and a range without sign-ins
/// does not.
#[tokio::test]
async fn enrichment_warning_looks_past_the_ranges_last_day() {
    // 45.0.1.x is in the test ASN table; 99.9.9.9 is not, so its sign-ins have no ASN.
    let lake = lake_with(&[
        sp_signin("e1", t("2026-03-01T10:00:00Z"), "enr", "45.0.1.7", 0, None),
        sp_signin("u1", t("2026-03-03T10:00:00Z"), "enr", "99.9.9.9", 0, None),
        sp_signin("u2", t("2026-03-03T11:00:00Z"), "enr", "99.9.9.9", 0, None),
    ])
    .await;
    let c = ctx(&lake).await;
    let r = rule("sp_unusual_source_asn");
    let warn = |from: &str, to: &str| {
        let (c, r) = (&c, &r);
        let (from, to) = (t(from), t(to));
        async move { alerts::enrichment_warnings(c, r, from, to).await.unwrap() }
    };
    assert!(warn("2026-03-01T00:00:00Z", "2026-03-04T00:00:00Z").await.is_empty(), "enriched on the first day");
    let w = warn("2026-03-02T00:00:00Z", "2026-03-04T00:00:00Z").await;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("needs asn enrichment") && w[0].contains("--asn-db"), "{w:?}");
    // A range of the last day alone warns too.
    assert_eq!(warn("2026-03-03T00:00:00Z", "2026-03-03T12:00:00Z").await.len(), 1);
    assert!(warn("2026-03-05T00:00:00Z", "2026-03-09T00:00:00Z").await.is_empty(), "no sign-ins, no warning");
    assert!(warn("2026-03-01T00:00:00Z", "2026-03-01T12:00:00Z").await.is_empty(), "a range within a day");
}

/// A session opened for some rules' SQL registers only the views it names (in any case), and
/// every built-in rule's backtest over the samples alerts alike in a session opened for that
/// rule alone and in one with every view.
#[tokio::test]
async fn a_session_for_a_rule_registers_only_the_views_its_sql_names() {
    let lake_dir = tmp("views-for");
    let samples = repo().join("data/samples").display().to_string();
    let s = ingest_into(&lake_dir, opts(vec![samples])).await;
    assert!(s.written_total() > 20, "{s:?}");
    let lake = wisp::lake::Lake::open(&lake_dir.display().to_string()).unwrap();
    let open = |texts: Option<Vec<String>>| {
        let lake = lake.clone();
        async move {
            let o = wisp::session::SessionOptions::default();
            let o = match &texts {
                Some(t) => o.for_sql(t.iter().map(String::as_str)),
                None => o,
            };
            wisp::session::open(&lake, &o).await.unwrap()
        }
    };
    let all = open(None).await;
    for r in wisp::rollups::ROLLUPS {
        assert!(all.table(r.name).await.is_ok() && all.table(format!("{}_events", r.name)).await.is_ok(), "{}", r.name);
    }
    assert!(all.table("sp_risk_events_latest").await.is_ok());
    let upper = open(Some(vec!["SELECT * FROM SP_RISK_EVENTS_LATEST".into()])).await;
    assert!(upper.table("sp_risk_events_latest").await.is_ok());
    assert!(upper.table("sp_asn_rollup").await.is_err());
    // The demo's range: the samples' days.
    let (from, to) = (t("2026-11-20T00:00:00Z"), t("2026-11-22T00:00:00Z"));
    let now = t("2026-12-04T00:00:00Z");
    let mut alerted = 0;
    for rule in rules::load_all(None).unwrap() {
        let one = open(Some(rule.texts().map(str::to_string).collect())).await;
        for r in wisp::rollups::ROLLUPS {
            let named = rule.texts().any(|s| s.contains(r.name));
            assert_eq!(one.table(r.name).await.is_ok(), named, "{}: {}", rule.meta.id, r.name);
        }
        let ids = |a: Vec<alerts::Alert>| {
            let mut v: Vec<String> = a.into_iter().map(|a| a.alert_id).collect();
            v.sort();
            v
        };
        let run = |ctx| {
            let rule = rule.clone();
            async move {
                let res = if rule.meta.rule_type == rules::RuleType::Hunt {
                    alerts::run(&ctx, &rule, &rules::RunWindow { start: from, end: to }, now).await
                } else {
                    alerts::backtest(&ctx, &rule, from, to, now).await
                };
                ids(res.unwrap().alerts)
            }
        };
        let (mine, theirs) = (run(one).await, run(all.clone()).await);
        assert_eq!(mine, theirs, "{}", rule.meta.id);
        alerted += usize::from(!mine.is_empty());
    }
    assert!(alerted >= 5, "the samples alert on most rules: {alerted}");
}
