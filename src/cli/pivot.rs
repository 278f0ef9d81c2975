use super::{LakeArgs, OutArgs, TimeArgs, EXIT_OK};
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp pivot sp payroll-sync --lake ./lake --last 7d                 # by display name
  wisp pivot sp 8d7c5e1a-0000-4000-8000-000000000001 --lake ./lake --format jsonl
  wisp pivot sp payroll-sync --lake ./lake --at 2026-11-20T00:00:00Z  # the 7 days before --at")]
pub struct PivotArgs {
    #[command(subcommand)]
    pub what: PivotWhat,
}

#[derive(Debug, Subcommand)]
pub enum PivotWhat {
    /// A service principal or managed identity: by object id, app id or display name.
    Sp {
        who: String,
        #[command(flatten)]
        lake: LakeArgs,
        #[command(flatten)]
        time: TimeArgs,
        #[command(flatten)]
        out: OutArgs,
    },
}

pub async fn run(a: PivotArgs) -> anyhow::Result<i32> {
    let PivotWhat::Sp { who, lake, time, out } = a.what;
    let w = time.flags().window("7d", chrono::Utc::now())?;
    let (_lake, ctx) = lake.open().await?;
    let id = crate::pivot::resolve(&ctx, &who, w.start, w.end).await?;
    eprintln!("pivot on {who}: service principal ids {:?}, app ids {:?}, names {:?}", id.sp_ids, id.app_ids, id.names);
    let df = crate::pivot::timeline(&ctx, &id, w.start, w.end).await?;
    let (sink, tty) = out.sink()?;
    crate::output::write_stream(df.execute_stream().await?, out.format, sink, tty).await?;
    Ok(EXIT_OK)
}
