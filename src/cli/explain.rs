use super::{LakeArgs, OutArgs, EXIT_ERROR, EXIT_OK};
use crate::detect::{explain, sink, store::StateDir};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp explain 3f2a9c0e41d7b5a8 --lake ./lake                  # the alert (stderr) and its evidence rows (stdout)
  wisp explain 3f2a9c0e --lake ./lake --format jsonl -o evidence.jsonl")]
pub struct ExplainArgs {
    /// The alert's id (or a unique prefix of at least 8 characters), as `wisp run` sent it.
    pub alert_id: String,
    #[command(flatten)]
    pub lake: LakeArgs,
    /// State folder holding the alert store (default: <lake>/_state).
    #[arg(long)]
    pub state: Option<String>,
    /// Folder of extra or overriding rule files.
    #[arg(long)]
    pub rules_dir: Option<PathBuf>,
    #[command(flatten)]
    pub out: OutArgs,
}

pub async fn run(a: ExplainArgs) -> anyhow::Result<i32> {
    let (lake, ctx) = a.lake.open().await?;
    let dir = StateDir::open(&lake, a.state.as_deref())?;
    let Some(alert) = explain::find(&dir, &a.alert_id).await? else {
        eprintln!("no alert {} in the alert store {} (alerts are stored by `wisp run`)", a.alert_id, dir.url);
        return Ok(EXIT_ERROR);
    };
    eprintln!("{}", serde_json::to_string_pretty(&sink::alert_json(&alert))?);
    let rules = crate::rules::load_all(super::rules_dir(&a.rules_dir)?.as_deref())?;
    let rule = crate::rules::by_id(&rules, &alert.rule_id)?;
    match explain::evidence(&ctx, rule, &alert).await? {
        None => eprintln!("the alert names no principal, application or address to find evidence by"),
        Some(df) => {
            let (out, tty) = a.out.sink()?;
            let (n, _) = crate::output::write_df(df, a.out.format, out, tty, std::time::Instant::now()).await?;
            eprintln!("{n} evidence row(s) from {} in the alert's window", rule.meta.tables.join(", "));
        }
    }
    Ok(EXIT_OK)
}
