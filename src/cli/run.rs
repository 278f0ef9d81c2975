use super::{LakeArgs, OutArgs, RuleArgs, EXIT_OK, EXIT_RUNS_FAILED};
use crate::detect::ledger;
use crate::detect::schedule::{self, Options};
use crate::detect::sink::{self, Sink};
use crate::detect::store::StateDir;
use crate::lake::Lake;
use crate::time::{parse_duration, parse_utc, rfc3339};
use clap::Args;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Per rule: the last completed window, lag behind now, gaps, the last error, alerts in 24 h.
    Status,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Scheduled detection: each rule runs on its own interval, aligned to UTC; every due run happens once,
runs missed while wisp was down are caught up (up to --max-catch-up; the rest is reported as a gap),
late data re-runs the windows it falls in, and every alert id is sent once, ever.

Examples:
  wisp run --lake ./lake --once                                 # cron form: run what is due, then exit
  wisp run --lake ./lake --since 2026-11-20T00:00:00Z --once --until 2026-11-21T00:00:00Z
  wisp run --lake ./lake --sink jsonl:/var/log/wisp/alerts.jsonl --sink webhook:http://relay:8080/wisp
  wisp run --lake ./lake                                        # stays up; SIGTERM/Ctrl-C stops it cleanly
  wisp run status --lake ./lake

Exit codes: 0 every run committed; 1 error; 4 some runs failed (the others ran and committed)."
)]
pub struct RunArgs {
    /// `status` shows the ledger instead of running.
    #[arg(value_enum)]
    pub action: Option<Action>,
    #[command(flatten)]
    pub lake: LakeArgs,
    /// State folder: ledger, first-seen state, alert store, outbox (default: <lake>/_state).
    #[arg(long)]
    pub state: Option<String>,
    /// Run everything due up to now (or --until), then exit.
    #[arg(long)]
    pub once: bool,
    /// Where new ledgers start (default: now; no backfill — a backtest is `wisp detect`).
    #[arg(long)]
    pub since: Option<String>,
    /// Treat this time as now (and stop there): run what is due up to it.
    #[arg(long)]
    pub until: Option<String>,
    #[command(flatten)]
    pub select: RuleArgs,
    /// Where alerts go: stdout, jsonl:PATH (appends), webhook:http://HOST[:PORT]/PATH (repeatable).
    #[arg(long = "sink", default_value = "stdout")]
    pub sinks: Vec<Sink>,
    /// Catch up at most this much of missed runs; older ones are reported as a gap.
    #[arg(long, default_value = "7d")]
    pub max_catch_up: String,
    /// Rules run at the same time (default: the number of cores, at most 4); they share one
    /// memory pool (--memory-mb).
    #[arg(long)]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub out: OutArgs,
}

/// Rules run at the same time: `--jobs`, or the cores (at most 4).
pub fn jobs(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4)).max(1)
}

pub async fn run(a: RunArgs) -> anyhow::Result<i32> {
    if a.action == Some(Action::Status) {
        return status(&a).await;
    }
    let until = a.until.as_deref().map(parse_utc).transpose()?;
    let now = || until.unwrap_or_else(chrono::Utc::now);
    let since = a.since.as_deref().map(parse_utc).transpose()?.unwrap_or_else(now);
    let opts = Options { since, max_catch_up: parse_duration(&a.max_catch_up)? };
    let rules = a.select.select()?;
    let lake = Lake::open_existing(&a.lake.lake)?;
    let dir = StateDir::open(&lake, a.state.as_deref())?;
    let (_lock, repaired) = dir.lock("wisp run")?;
    if repaired > 0 {
        eprintln!("repaired what an interrupted run left: {repaired} staging file(s) removed");
    }
    for s in &a.sinks {
        sink::init(&dir, s).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    spawn_signal_listener(stop.clone());
    let mut failed = false;
    let mut checked = false;
    // Each tick's sessions register only the views the run's rules name.
    let session_options = a.lake.session_options()?.for_sql(rules.iter().flat_map(|r| r.texts()));
    let jobs = jobs(a.jobs).min(rules.len().max(1));
    loop {
        let t = now();
        let sessions = crate::session::open_many(&lake, &session_options, jobs).await?;
        if !checked {
            // A rule whose alert ids do not pin their events could be sent twice: refused up front.
            for r in &rules {
                crate::rules::check_alert_key(&sessions[0], r).await?;
            }
            checked = true;
        }
        for ctx in &sessions {
            dir.attach(ctx)?;
        }
        let mut new = Vec::new();
        // Rules run concurrently (each with its own ledger, state and alert files); their lines
        // and alerts come out in the rules' order.
        let (l, d, o, s) = (lake.clone(), dir.clone(), opts.clone(), stop.clone());
        let mut ticks = crate::detect::each_rule(sessions, &rules, move |ctx, r| {
            let (lake, dir, opts, stop) = (l.clone(), d.clone(), o.clone(), s.clone());
            async move {
                if stop.load(Ordering::SeqCst) {
                    return (r, None);
                }
                let res = schedule::tick_rule(&ctx, &lake, &dir, &r, t, &opts).await;
                (r, Some(res))
            }
        });
        while let Some((r, res)) = ticks.next().await {
            match res {
                None => {}
                Some(Ok(tick)) => {
                    if let Some(g) = &tick.gap {
                        eprintln!(
                            "warning: {}: {} run(s) from {} to {} were older than --max-catch-up {} and were skipped",
                            r.meta.id, g.runs, g.from, g.to, a.max_catch_up
                        );
                    }
                    if tick.runs > 0 || tick.reruns > 0 {
                        eprintln!("{}", line(&tick));
                    }
                    new.extend(tick.new);
                }
                Some(Err(e)) => {
                    failed = true;
                    eprintln!("error: {}: {e}", r.meta.id);
                    if let Err(e2) = schedule::record_error(&dir, &r, &opts, &e.to_string()).await {
                        eprintln!("error: {}: recording the failure: {e2}", r.meta.id);
                    }
                }
            }
        }
        if a.sinks.contains(&Sink::Stdout) && !new.is_empty() {
            let batch = crate::detect::to_batch(&new)?;
            let (out, tty) = a.out.sink()?;
            crate::output::write_batches(&[batch], crate::detect::alerts_schema(), a.out.format, out, tty)?;
        }
        for s in a.sinks.iter().filter(|s| **s != Sink::Stdout) {
            let retries = [500, 1000, 2000].map(std::time::Duration::from_millis);
            let d = sink::deliver(&dir, s, &retries).await?;
            if d.files_sent > 0 || d.error.is_some() {
                eprintln!("{}: sent {} alert(s); {} run(s) of alerts pending", s.describe(), d.alerts_sent, d.pending);
            }
            if let Some(e) = d.error {
                failed = true;
                eprintln!("error: {}: {e} (kept in the outbox; sent first next time)", s.describe());
            }
        }
        if a.once || stop.load(Ordering::SeqCst) || until.is_some_and(|u| chrono::Utc::now() >= u) {
            break;
        }
        let next = schedule::next_due(&dir, &rules, chrono::Utc::now()).await?;
        let next = until.map_or(next, |u| next.min(u));
        while chrono::Utc::now() < next && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    if stop.load(Ordering::SeqCst) {
        eprintln!("stopped: the runs in progress finished and were committed");
    }
    Ok(if failed { EXIT_RUNS_FAILED } else { EXIT_OK })
}

fn spawn_signal_listener(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let term = async {
            #[cfg(unix)]
            {
                if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    s.recv().await;
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        eprintln!("stopping: finishing the run in progress (send again to kill)");
        stop.store(true, Ordering::SeqCst);
        // A second signal ends the process at once; nothing is lost (uncommitted runs are redone).
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

/// The one line per rule and tick on stderr.
fn line(t: &schedule::RuleTick) -> String {
    let window = t.window.map(|w| format!("({}, {}]", rfc3339(w.start), rfc3339(w.end))).unwrap_or_else(|| "-".into());
    let reruns = match t.rerun_range {
        Some((f, to)) => format!(", {} re-run(s) for late data ending {}..{}", t.reruns, rfc3339(f), rfc3339(to)),
        None => String::new(),
    };
    let cut = if t.cut > 0 { format!(", {} cut by max_alerts", t.cut) } else { String::new() };
    format!(
        "{}: {} run(s) {window}{reruns}: {} rows, {:.1} MB read; alerts {} new / {} suppressed / {} already known{cut}; {:.2}s",
        t.rule_id,
        t.runs,
        t.scan.rows,
        t.scan.bytes as f64 / 1e6,
        t.new.len(),
        t.suppressed,
        t.known,
        t.seconds
    )
}

async fn status(a: &RunArgs) -> anyhow::Result<i32> {
    let lake = Lake::open_existing(&a.lake.lake)?;
    let dir = StateDir::open(&lake, a.state.as_deref())?;
    let now = a.until.as_deref().map(parse_utc).transpose()?.unwrap_or_else(chrono::Utc::now);
    let ledgers = ledger::load_all(&dir).await?;
    if ledgers.is_empty() {
        eprintln!("no scheduled runs yet in {} — start with `wisp run --lake {} --once`", dir.url, a.lake.lake);
        return Ok(EXIT_OK);
    }
    let ctx = crate::session::open(&lake, &a.lake.session_options()?).await?;
    dir.attach(&ctx)?;
    let since = crate::time::utc_ts(now - chrono::Duration::hours(24));
    let df = crate::query::read_only_sql(
        &ctx,
        "SELECT rule_id, count(*) AS n FROM alerts WHERE detected_at >= $since GROUP BY rule_id",
    )
    .await?
    .with_param_values(vec![("since", since)])?;
    let mut recent = std::collections::HashMap::new();
    for b in df.collect().await? {
        use arrow::array::AsArray;
        let ids = b.column(0).as_string::<i32>();
        let n = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            recent.insert(ids.value(i).to_string(), n.value(i));
        }
    }
    let mut rows = Vec::new();
    for l in &ledgers {
        let step_end = crate::time::from_micros(l.next_end_us)?;
        let last_end = l.last_run.as_ref().map(|r| r.window_end.clone()).filter(|s| !s.is_empty());
        let interval = parse_duration(&l.interval).unwrap_or_else(|_| chrono::Duration::zero());
        let done_to = step_end - interval;
        let lag = now - done_to;
        rows.push(serde_json::json!({
            "rule_id": l.rule_id,
            "interval": l.interval,
            "last_completed_window_end": last_end,
            "next_run_end": rfc3339(step_end),
            "lag": format!("{}m", lag.num_minutes().max(0)),
            "runs_done": l.runs_done,
            "gaps": l.gaps.iter().map(|g| format!("{}..{} ({} runs)", g.from, g.to, g.runs)).collect::<Vec<_>>().join("; "),
            "last_error": l.last_error.as_ref().map(|e| format!("{} (window ending {}, at {})", e.message, e.window_end, e.at)),
            "alerts_24h": recent.get(&l.rule_id).copied().unwrap_or(0),
            "last_run_alerts_cut": l.last_run.as_ref().map(|r| r.alerts_cut).unwrap_or(0),
        }));
    }
    let schema = Arc::new(arrow::datatypes::Schema::new(
        [
            "rule_id",
            "interval",
            "last_completed_window_end",
            "next_run_end",
            "lag",
            "runs_done",
            "gaps",
            "last_error",
            "alerts_24h",
            "last_run_alerts_cut",
        ]
        .iter()
        .map(|n| {
            let t = match *n {
                "runs_done" | "alerts_24h" | "last_run_alerts_cut" => arrow::datatypes::DataType::Int64,
                _ => arrow::datatypes::DataType::Utf8,
            };
            arrow::datatypes::Field::new(*n, t, true)
        })
        .collect::<Vec<_>>(),
    ));
    let mut d = arrow::json::ReaderBuilder::new(schema.clone()).build_decoder()?;
    d.serialize(&rows)?;
    let batch = d.flush()?.unwrap_or_else(|| arrow::array::RecordBatch::new_empty(schema.clone()));
    let (out, tty) = a.out.sink()?;
    crate::output::write_batches(&[batch], schema, a.out.format, out, tty)?;
    Ok(EXIT_OK)
}
