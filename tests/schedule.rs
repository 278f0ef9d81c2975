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
