//! Criterion benchmarks of each detection on the small profile: one scheduled run ending at a
//! time inside the last generated day (the window the rule runs every interval), and the one-pass
//! 30-day backtest of the new_terms rule. The lake is generated once (seed 42) into a temp folder.

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use wisp::detect as alerts;
use wisp::gen::{generate, GenOptions, GenOutput, Profile};
use wisp::rules::load_all;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("wisp-bench-detections-{}", std::process::id()));
    let end: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-20T00:00:00Z").unwrap().with_timezone(&Utc);
    let o = GenOptions {
        profile: Profile::Small,
        days: 30,
        seed: 42,
        output: GenOutput::Lake,
        out: dir.clone(),
        end,
        keep_raw: false,
        gzip: true,
        progress: false,
        threads: 0,
    };
    let h = rt.handle().clone();
    rt.block_on(async { tokio::task::spawn_blocking(move || generate(&o, h)).await.unwrap().unwrap() });
    let lake = wisp::lake::Lake::open(&dir.join("lake").display().to_string()).unwrap();
    let ctx = rt.block_on(wisp::session::open(&lake, &Default::default())).unwrap();
    let at = end - chrono::Duration::hours(8);
    let mut g = c.benchmark_group("detections_small");
    g.sample_size(10);
    for rule in load_all(None).unwrap() {
        let w = rule.window_ending(at).unwrap();
        g.bench_function(format!("{}_scheduled_run", rule.meta.id), |b| {
            b.iter(|| rt.block_on(alerts::run(&ctx, &rule, &w, at)).unwrap())
        });
        if rule.backtest_sql.is_some() {
            g.bench_function(format!("{}_backtest_30d_one_pass", rule.meta.id), |b| {
                b.iter(|| {
                    rt.block_on(alerts::backtest(&ctx, &rule, end - chrono::Duration::days(30), end, at)).unwrap()
                })
            });
        }
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
