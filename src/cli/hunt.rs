use super::{LakeArgs, OutArgs, TimeArgs, EXIT_OK};
use crate::rules::{self, Rule};
use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp hunt sp_rare_action_multiple_ips --lake ./lake --last 30d
  wisp hunt sp_failed_signins --lake ./lake --from 2026-11-01T00:00:00Z --to 2026-11-08T00:00:00Z --format csv
  wisp hunt ./my-hunt.sql --lake ./lake --at 2026-11-20T00:00:00Z     # a rule file of your own, 30 days to --at
  wisp hunt sp_failed_signins --lake ./lake --last 1d --analyze        # the executed plan, each operator's rows and time
  wisp hunt sp_keyvault_read_from_new_source --lake ./lake --last 30d --backtest --analyze   # the one-pass backtest's plan")]
pub struct HuntArgs {
    /// A rule id or a rule file (.sql with a TOML header).
    pub rule: String,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub time: TimeArgs,
    #[command(flatten)]
    pub out: OutArgs,
    /// Run the query and print its executed plan instead of its rows (EXPLAIN ANALYZE, with the
    /// rule's parameters and `[settings]`): each operator's rows, time and, for scans, files,
    /// row groups and bytes; then, on stderr, where the planning's time went (SQL to a logical
    /// plan, logical optimization, listing, footers read ahead, physical planning and its
    /// optimizer rules).
    #[arg(long)]
    pub analyze: bool,
    /// Run the rule's one-pass backtest query (its `-- @backtest` section) over the range instead
    /// of its main query: the rows of every scheduled run ending in the range, each with its
    /// `run_end_us`, before `wisp detect` turns them into alerts (no cap, no suppression).
    #[arg(long)]
    pub backtest: bool,
}

pub async fn run(a: HuntArgs) -> anyhow::Result<i32> {
    let path = std::path::Path::new(&a.rule);
    let rule = if a.rule.ends_with(".sql") || path.is_file() {
        Rule::load_file(path)?
    } else {
        rules::by_id(&rules::load_all(None)?, &a.rule)?.clone()
    };
    let w = a.time.flags().window("30d", chrono::Utc::now())?;
    let (_lake, ctx) = a.lake.open_for(&[&rule]).await?;
    let what = if a.backtest { "backtest of" } else { "hunt" };
    eprintln!("{what} {} over [{}, {}]", rule.meta.id, w.start.to_rfc3339(), w.end.to_rfc3339());
    let started = std::time::Instant::now();
    let df = if a.backtest {
        rule.plan_backtest(&ctx, &w).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "rule {} has no one-pass backtest (no `-- @backtest` section); drop --backtest",
                rule.meta.id
            )
        })?
    } else {
        rule.plan(&ctx, &w).await?
    };
    let df = if a.analyze { df.explain(false, true)? } else { df };
    let (out, tty) = a.out.sink()?;
    let (n, scan) = crate::output::write_df(df, a.out.format, out, tty, started).await?;
    eprintln!("{}", crate::output::summary(n, &scan, started));
    if a.analyze {
        // The plan's own planning: the executed plan above shows each operator's time after it.
        eprintln!("planning: {}", scan.phases);
    }
    Ok(EXIT_OK)
}
