//! Scheduled detection (`wisp run`) on generated data: ticks at uneven times with a long gap, a day
//! of data that arrives late, suppression across runs, and the result compared with the backtest of
//! the same period run after all data arrived. Process-level cases (SIGKILL, two runners, sinks)
//! are in tests/cli_run.rs.

mod common;
use common::*;
use std::collections::HashMap;
use wisp::detect::schedule::{tick_rule, Options};
use wisp::detect::store::StateDir;
use wisp::gen::{generate, GenOptions, GenOutput, Profile};

fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
    wisp::time::parse_utc(s).unwrap()
}

/// Every file under `dir`.
fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            files(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_with_a_gap_and_a_late_day_equal_the_backtest() {
    let out = tmp("sched-gen");
    let o = GenOptions {
        profile: Profile::Small,
        days: 14,
        seed: 11,
        output: GenOutput::Raw,
        out: out.clone(),
        end: t("2026-11-20T00:00:00Z"),
        keep_raw: true,
        gzip: true,
        progress: false,
        threads: 0,
    };
    let h = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || generate(&o, h)).await.unwrap().unwrap();
    let mut all = Vec::new();
    files(&out.join("raw"), &mut all);
    let late_day = |p: &std::path::Path| {
        let s = p.display().to_string();
        s.contains("2026-11-17") || s.contains("y=2026/m=11/d=17")
    };
    let (late, on_time): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| late_day(p));
    assert!(late.len() >= 2, "the generator's layout changed: no files of 2026-11-17");
    // Half of the late day arrives and is compacted (with everything else) before the next tick:
    // its rows reach the scheduler only through compacted files. The other half arrives later as
    // plain ingest files.
    let (late_a, late_b): (Vec<_>, Vec<_>) = late.iter().cloned().enumerate().partition(|(i, _)| i % 2 == 0);
    let (late_a, late_b): (Vec<_>, Vec<_>) =
        (late_a.into_iter().map(|(_, p)| p).collect(), late_b.into_iter().map(|(_, p)| p).collect());
    let lake_dir = tmp("sched-lake");
    let ingest = |inputs: Vec<std::path::PathBuf>| {
        let mut o = opts(inputs.iter().map(|p| p.display().to_string()).collect());
        o.asn_db = Some(out.join("asn.csv"));
        o
    };
    ingest_into(&lake_dir, ingest(on_time)).await;

    let lake = wisp::lake::Lake::open_existing(&lake_dir.display().to_string()).unwrap();
    let dir = StateDir::open(&lake, None).unwrap();
    let rules = wisp::detect::select(wisp::rules::load_all(None).unwrap(), &[], None).unwrap();
    let opts = Options { since: t("2026-11-16T00:00:00Z"), max_catch_up: chrono::Duration::days(7) };
    // Ticks: hourly for a while (single runs, first-seen state), then every 7 hours (catch-up),
    // the late day arriving at 2026-11-17T19:00, then the scheduler down for 28 hours.
    let mut ticks: Vec<String> = (0..=4).map(|h| format!("2026-11-16T{h:02}:00:00Z")).collect();
    ticks.extend(["2026-11-16T11:00:00Z", "2026-11-16T18:00:00Z", "2026-11-16T19:00:00Z"].map(String::from));
    ticks.extend(
        ["2026-11-17T03:00:00Z", "2026-11-17T10:00:00Z", "2026-11-17T17:00:00Z", "2026-11-17T18:00:00Z"]
            .map(String::from),
    );
    ticks.extend(["2026-11-17T19:30:00Z", "2026-11-18T02:00:00Z"].map(String::from));
    ticks.extend(["2026-11-19T06:00:00Z", "2026-11-19T07:00:00Z", "2026-11-20T00:00:00Z"].map(String::from));
    let mut sent: Vec<wisp::detect::Alert> = Vec::new();
    let (mut suppressed, mut reruns, mut dropped) = (0, 0, 0);
    let compact_all = |lake: wisp::lake::Lake| async move {
        let _lock = wisp::lake::WriteLock::acquire(&lake, "test").unwrap();
        let o = wisp::lake::compact::CompactOptions { min_files: 1, ..Default::default() };
        wisp::lake::compact::compact(&lake, &o).await.unwrap()
    };
    let (mut reruns_compacted, mut reruns_plain) = (0, 0);
    for now in &ticks {
        let mut compacted_seen_data = false;
        if now == "2026-11-16T18:00:00Z" {
            // Compacting data every rule has seen must not re-run anything.
            assert!(!compact_all(lake.clone()).await.is_empty());
            compacted_seen_data = true;
        }
        if now == "2026-11-17T19:30:00Z" {
            ingest_into(&lake_dir, ingest(late_a.clone())).await;
            assert!(!compact_all(lake.clone()).await.is_empty());
        }
        if now == "2026-11-18T02:00:00Z" {
            ingest_into(&lake_dir, ingest(late_b.clone())).await;
        }
        // A fresh session per tick, as the long-running form does: new files are listed.
        let ctx = wisp::session::open(&lake, &Default::default()).await.unwrap();
        for r in &rules {
            let tick = tick_rule(&ctx, &lake, &dir, r, t(now), &opts).await.unwrap();
            assert!(
                !compacted_seen_data || tick.reruns == 0,
                "{}: compaction re-ran {:?}",
                r.meta.id,
                tick.rerun_range
            );
            suppressed += tick.suppressed;
            reruns += tick.reruns;
            if now == "2026-11-17T19:30:00Z" {
                reruns_compacted += tick.reruns;
            }
            if now == "2026-11-18T02:00:00Z" {
                reruns_plain += tick.reruns;
            }
            dropped += tick.state_dropped as u32;
            sent.extend(tick.new);
        }
    }

    // Every alert id once.
    let mut count: HashMap<&str, usize> = HashMap::new();
    for a in &sent {
        *count.entry(&a.alert_id).or_default() += 1;
    }
    assert!(count.values().all(|&n| n == 1), "an alert id was sent twice");

    // The backtest of the same period after all data arrived: the same alerts.
    let ctx = wisp::session::open(&lake, &Default::default()).await.unwrap();
    let mut by_rule: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for r in &rules {
        let bt =
            wisp::detect::backtest(&ctx, r, opts.since, t("2026-11-20T00:00:00Z"), chrono::Utc::now()).await.unwrap();
        let mut want: Vec<String> = bt.alerts.iter().map(|a| a.alert_id.clone()).collect();
        let mut got: Vec<String> = sent.iter().filter(|a| a.rule_id == r.meta.id).map(|a| a.alert_id.clone()).collect();
        want.sort();
        got.sort();
        by_rule.insert(r.meta.id.clone(), (got, want));
    }
    let total: usize = by_rule.values().map(|(_, w)| w.len()).sum();
    assert!(total > 5, "the period should alert: {total}");
    for (id, (got, want)) in &by_rule {
        assert_eq!(got, want, "{id}: scheduled runs vs the backtest");
    }

    eprintln!("re-runs {reruns}, state dropped {dropped}, suppressed {suppressed}");
    assert!(reruns > 0, "the late day re-ran windows");
    assert!(reruns_compacted > 0, "late rows seen only in compacted files re-ran windows");
    assert!(reruns_plain > 0, "late rows in plain ingest files re-ran windows");
    assert!(dropped > 0, "the late day dropped first-seen state that covered it");

    // The store holds exactly what was sent; the ledgers are at the last tick.
    let stored = wisp::detect::explain::find(&dir, &sent[0].alert_id).await.unwrap();
    assert_eq!(stored.as_ref().map(|a| &a.alert_id), Some(&sent[0].alert_id));
    let ctx = wisp::session::open(&lake, &Default::default()).await.unwrap();
    let n = ctx.sql("SELECT count(*) AS n, count(DISTINCT alert_id) AS d FROM alerts").await.unwrap();
    let b = n.collect().await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string();
    assert!(text.contains(&format!("| {} | {} |", sent.len(), sent.len())), "{text}");
    for l in wisp::detect::ledger::load_all(&dir).await.unwrap() {
        assert!(l.last_error.is_none(), "{l:?}");
        assert!(l.gaps.is_empty(), "7 days of catch-up cover the 28-hour gap: {l:?}");
        assert!(l.next_end_us > t("2026-11-20T00:00:00Z").timestamp_micros() - 86_400_000_000);
    }

    // Re-running the last tick finds nothing new; a tick far later reports the gap beyond
    // --max-catch-up instead of skipping it silently.
    let ctx = wisp::session::open(&lake, &Default::default()).await.unwrap();
    let short = Options { max_catch_up: chrono::Duration::days(1), ..opts.clone() };
    for r in &rules {
        let again = tick_rule(&ctx, &lake, &dir, r, t("2026-11-20T00:00:00Z"), &opts).await.unwrap();
        assert!(again.new.is_empty() && again.runs == 0, "{}: {again:?}", r.meta.id);
        let later = tick_rule(&ctx, &lake, &dir, r, t("2026-11-23T00:00:00Z"), &short).await.unwrap();
        let gap = later.gap.expect("a gap");
        assert!(gap.runs > 0);
        assert!(later.new.is_empty(), "no data after the 20th");
    }
}

fn iso(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn sp_signin(id: &str, ts: chrono::DateTime<chrono::Utc>, sp: &str, ip: &str) -> serde_json::Value {
    serde_json::json!({"time": iso(ts), "category": "ServicePrincipalSignInLogs", "tenantId": "tenant-1",
        "callerIpAddress": ip, "properties": {"id": id, "createdDateTime": iso(ts), "servicePrincipalId": format!("id-{sp}"),
        "servicePrincipalName": sp, "appId": format!("app-{sp}"), "ipAddress": ip, "status": {"errorCode": 0},
        "resourceDisplayName": "Microsoft Graph"}})
}

const ASN_TABLE: &str = "start_ip,end_ip,asn,organization
45.0.0.0,45.0.0.255,64500,Evil Hosting
45.0.1.0,45.0.1.255,64501,Known Transit
45.0.2.0,45.0.2.255,64502,Other Net
";

/// Writes `records` as one export file in a new folder; returns the file and an ASN table beside it.
fn export(records: &[serde_json::Value]) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = tmp("sched-in");
    let body: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("PT1H.json"), body).unwrap();
    std::fs::write(dir.join("asn.csv"), ASN_TABLE).unwrap();
    (dir.join("PT1H.json"), dir.join("asn.csv"))
}

/// Eleven days of one principal signing in every two hours from its usual network.
fn routine() -> Vec<serde_json::Value> {
    (0..12 * 12)
        .map(|i| {
            sp_signin(&format!("base{i}"), t("2026-11-01T00:20:00Z") + chrono::Duration::hours(2 * i), "a", "45.0.1.10")
        })
        .collect()
}

fn asn_rule() -> Vec<wisp::rules::Rule> {
    wisp::rules::load_all(None).unwrap().into_iter().filter(|r| r.meta.id == "sp_unusual_source_asn").collect()
}

async fn tick_all(
    lake: &wisp::lake::Lake,
    dir: &StateDir,
    rules: &[wisp::rules::Rule],
    now: &str,
    opts: &Options,
) -> Vec<wisp::detect::schedule::RuleTick> {
    let ctx = wisp::session::open(lake, &Default::default()).await.unwrap();
    let mut out = Vec::new();
    for r in rules {
        out.push(tick_rule(&ctx, lake, dir, r, t(now), opts).await.unwrap());
    }
    out
}

/// `ingest --reenrich` rewrites files in place (no new ingest run): the scheduler notices the
/// rewritten files and re-runs the windows they cover. Here the lake was ingested without an ASN
/// database, so the ASN rule had nothing to judge; after re-enrichment the two sign-ins from new
/// networks alert, once, exactly as the backtest over the period does. Re-enriching again with
/// the same database rewrites nothing and re-runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reenriched_files_re_run_the_windows_they_cover() {
    let mut recs = routine();
    recs.push(sp_signin("new-asn-a", t("2026-11-12T05:30:00Z"), "a", "45.0.0.5"));
    recs.push(sp_signin("new-asn-b", t("2026-11-12T08:10:00Z"), "b", "45.0.2.7"));
    let (input, asn) = export(&recs);
    let lake_dir = tmp("sched-reenrich");
    ingest_into(&lake_dir, opts(vec![input.display().to_string()])).await;
    let lake = wisp::lake::Lake::open_existing(&lake_dir.display().to_string()).unwrap();
    let dir = StateDir::open(&lake, None).unwrap();
    let rules = asn_rule();
    let o = Options { since: t("2026-11-12T00:00:00Z"), max_catch_up: chrono::Duration::days(7) };
    let mut sent = Vec::new();
    for h in 0..=12 {
        for tick in tick_all(&lake, &dir, &rules, &format!("2026-11-12T{h:02}:00:00Z"), &o).await {
            assert_eq!(tick.reruns, 0);
            sent.extend(tick.new);
        }
    }
    assert!(sent.is_empty(), "without ASNs the rule has nothing to judge: {sent:?}");

    let mut re = opts(vec![]);
    re.reenrich = true;
    re.asn_db = Some(asn.clone());
    ingest_into(&lake_dir, re.clone()).await;
    let ticks = tick_all(&lake, &dir, &rules, "2026-11-12T13:00:00Z", &o).await;
    assert!(ticks[0].reruns >= 12, "the re-enriched day's runs were done again: {:?}", ticks[0].rerun_range);
    assert!(ticks[0].state_dropped, "the first-seen state held the unenriched terms");
    sent.extend(ticks.into_iter().flat_map(|t| t.new));
    let ctx = wisp::session::open(&lake, &Default::default()).await.unwrap();
    let bt =
        wisp::detect::backtest(&ctx, &rules[0], o.since, t("2026-11-12T13:00:00Z"), chrono::Utc::now()).await.unwrap();
    let ids = |a: &[wisp::detect::Alert]| {
        let mut v: Vec<_> = a.iter().map(|a| a.alert_id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(bt.alerts.len(), 2, "{:?}", bt.alerts);
    assert_eq!(ids(&sent), ids(&bt.alerts));

    // The same database again: no file changes, nothing re-runs, nothing new.
    ingest_into(&lake_dir, re).await;
    for tick in tick_all(&lake, &dir, &rules, "2026-11-12T14:00:00Z", &o).await {
        assert_eq!((tick.reruns, tick.new.len()), (0, 0), "{:?}", tick.rerun_range);
    }
}

/// A tick while an ingest is still writing sees only some of its files. Its run counts as seen
/// only once it wrote its manifest (or no writer holds the lake), so a file of that run appearing
/// after the tick is still evaluated: here the one that alerts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_an_ingest_still_writing_are_evaluated_when_they_appear() {
    let (input, asn) = export(&routine());
    let lake_dir = tmp("sched-inflight");
    let mut o = opts(vec![input.display().to_string()]);
    o.asn_db = Some(asn.clone());
    ingest_into(&lake_dir, o).await;
    let lake = wisp::lake::Lake::open_existing(&lake_dir.display().to_string()).unwrap();
    let dir = StateDir::open(&lake, None).unwrap();
    let rules = asn_rule();
    let so = Options { since: t("2026-11-12T00:00:00Z"), max_catch_up: chrono::Duration::days(7) };
    for h in 0..=10 {
        tick_all(&lake, &dir, &rules, &format!("2026-11-12T{h:02}:00:00Z"), &so).await;
    }
    // Another ingest run writes two files of late sign-ins, one after the other, holding the lock.
    let part = |recs: Vec<serde_json::Value>| async move {
        let (input, asn) = export(&recs);
        let side = tmp("sched-side");
        let mut o = opts(vec![input.display().to_string()]);
        o.asn_db = Some(asn);
        ingest_into(&side, o).await;
        let mut all = Vec::new();
        files(&side.join("signins"), &mut all);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    };
    let run = "20261112T103000.000000Z-77-inflight";
    let day = lake_dir.join("signins/day=2026-11-12");
    let lock = wisp::lake::WriteLock::acquire(&lake, "test ingest").unwrap();
    let first = part(vec![sp_signin("late-known", t("2026-11-12T03:10:00Z"), "a", "45.0.1.11")]).await;
    std::fs::copy(first, day.join(format!("{run}-00001.parquet"))).unwrap();
    // And a file of a run that died an hour ago without its manifest: older than the writer's
    // lock, so not the writer's own; it is evaluated once, not at every tick.
    let dead = part(vec![sp_signin("dead-run", t("2026-11-12T01:10:00Z"), "a", "45.0.1.12")]).await;
    let dead_file = day.join("20261112T090000.000000Z-66-dead-00001.parquet");
    std::fs::copy(dead, &dead_file).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&dead_file).unwrap().set_modified(old).unwrap();
    let ticks = tick_all(&lake, &dir, &rules, "2026-11-12T11:00:00Z", &so).await;
    assert!(ticks[0].reruns > 0 && ticks[0].new.is_empty(), "{:?}", ticks[0]);
    assert_eq!(ticks[0].rerun_range.unwrap().0, t("2026-11-12T02:00:00Z"), "both runs' rows: {:?}", ticks[0]);
    let second = part(vec![sp_signin("late-new", t("2026-11-12T04:40:00Z"), "a", "45.0.0.9")]).await;
    std::fs::copy(second, day.join(format!("{run}-00002.parquet"))).unwrap();
    let ticks = tick_all(&lake, &dir, &rules, "2026-11-12T11:30:00Z", &so).await;
    assert!(ticks[0].reruns > 0, "the run's second file was evaluated: {:?}", ticks[0]);
    assert_eq!(ticks[0].rerun_range.unwrap().0, t("2026-11-12T04:00:00Z"), "not the dead run's: {:?}", ticks[0]);
    assert_eq!(ticks[0].new.len(), 1, "{:?}", ticks[0].new);
    assert_eq!(ticks[0].new[0].ts, t("2026-11-12T04:40:00Z").timestamp_micros());
    // The ingest ends (manifest, lock released): its files are looked at once more (their
    // alert is known, not sent again), then the run is seen and nothing repeats.
    std::fs::write(lake_dir.join(format!("_meta/ingest/{run}.json")), "{}").unwrap();
    drop(lock);
    let ticks = tick_all(&lake, &dir, &rules, "2026-11-12T12:00:00Z", &so).await;
    assert!(ticks[0].new.is_empty(), "{:?}", ticks[0]);
    let ticks = tick_all(&lake, &dir, &rules, "2026-11-12T13:00:00Z", &so).await;
    assert_eq!((ticks[0].reruns, ticks[0].new.len()), (0, 0), "{:?}", ticks[0]);
}
