use super::{LakeArgs, OutArgs, EXIT_OK};
use crate::lake::Lake;
use clap::Args;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query (read-only: DDL, DML, COPY and SET are refused).
    pub query: String,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

pub async fn sql(a: SqlArgs) -> anyhow::Result<i32> {
    let lake = Lake::open(&a.lake.lake)?;
    let ctx = crate::session::open(&lake, &a.lake.session_options()).await?;
    let started = std::time::Instant::now();
    let df = crate::query::read_only_sql(&ctx, &a.query).await?;
    let (out, tty) = a.out.sink()?;
    let (n, scan) = crate::output::write_df(df, a.out.format, out, tty).await?;
    eprintln!("{n} row(s), {scan} in {:.3}s", started.elapsed().as_secs_f64());
    Ok(EXIT_OK)
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder of sample exports (default: the bundled `data/`).
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Keep the lake here instead of a temporary folder.
    #[arg(long)]
    pub lake: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub out: OutArgs,
}

pub async fn demo(a: DemoArgs) -> anyhow::Result<i32> {
    let data = a.data.unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"));
    let tmp;
    let lake_dir = match a.lake {
        Some(l) => l,
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    let report = crate::demo::run(&data, &lake_dir).await?;
    let (mut out, _) = a.out.sink()?;
    use std::io::Write;
    write!(out, "{report}")?;
    out.flush()?;
    Ok(EXIT_OK)
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!(
        "wisp-demo-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    ));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
