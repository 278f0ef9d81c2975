use super::{LakeArgs, OutArgs, RuleArgs, TimeArgs, EXIT_OK};
use crate::detect::{self, When};
use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp detect --lake ./lake --at 2026-11-20T12:00:00Z --format jsonl          # the scheduled runs ending then
  wisp detect --lake ./lake --at 2026-11-20T13:00:00Z --state                 # new_terms rules read first-seen state
  wisp detect --lake ./lake --rule sp_unusual_source_asn --last 30d --asn-db GeoLite2-ASN.mmdb   # a backtest")]
pub struct DetectArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub select: RuleArgs,
    /// Keep first-seen state in the lake (`_state/<rule>/`) for new_terms rules: a scheduled run
    /// (--at, or now) then reads its window and the state instead of the whole history window.
    /// Same alerts as without it.
    #[arg(long)]
    pub state: bool,
    #[command(flatten)]
    pub time: TimeArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

pub async fn run(a: DetectArgs) -> anyhow::Result<i32> {
    let now = chrono::Utc::now();
    let when = a.time.flags().when(now)?;
    let selected = a.select.select()?;
    let (lake, ctx) = a.lake.open_for(&selected.iter().collect::<Vec<_>>()).await?;
    if let When::Range { from, to } = when {
        match lake.day_span() {
            None => eprintln!("note: the lake holds no data yet: no run can alert"),
            Some((first, last)) => {
                let (lo, hi) = (from.date_naive(), to.date_naive());
                if lo < first || hi > last + chrono::Duration::days(1) {
                    eprintln!(
                        "note: the lake holds data from {first} to {last}; runs of the range outside it cannot alert and are skipped"
                    );
                }
            }
        }
    }
    if a.state && matches!(when, When::Range { .. }) {
        eprintln!("note: --state applies to single scheduled runs (--at, or now); a backtest reads the history itself");
    }
    // The first-seen state has one writer at a time: `wisp run` on the same folder waits, and so do we.
    let _lock = match (a.state, when) {
        (true, When::At(_)) => Some(crate::detect::store::StateDir::open(&lake, None)?.lock("wisp detect --state")?.0),
        _ => None,
    };
    let mut out_alerts = Vec::new();
    for r in &selected {
        let started = std::time::Instant::now();
        let res = detect::execute(&ctx, &lake, r, when, a.state, now).await?;
        for w in &res.warnings {
            eprintln!("warning: {w}");
        }
        if let Some((used, terms)) = res.state {
            eprintln!("{}: first-seen state {used:?}, {terms} term(s)", r.meta.id);
        }
        let res = res.result;
        if res.cut > 0 {
            eprintln!("{}: {} alert(s) past max_alerts = {} were cut", r.meta.id, res.cut, r.meta.max_alerts);
        }
        eprintln!(
            "{}: {} alert(s), {} in {:.3}s",
            r.meta.id,
            res.alerts.len(),
            res.scan,
            started.elapsed().as_secs_f64()
        );
        out_alerts.extend(res.alerts);
    }
    let batch = detect::to_batch(&out_alerts)?;
    let (out, tty) = a.out.sink()?;
    crate::output::write_batches(&[batch], detect::alerts_schema(), a.out.format, out, tty)?;
    Ok(EXIT_OK)
}
