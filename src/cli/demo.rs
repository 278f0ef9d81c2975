use super::{OutArgs, EXIT_OK};
use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp demo
  wisp demo --lake /tmp/demo-lake      # keep the lake, then: wisp sql --lake /tmp/demo-lake \"SELECT * FROM signins\"")]
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

pub async fn run(a: DemoArgs) -> anyhow::Result<i32> {
    let data = a.data.unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"));
    // A lake of our own in the temporary folder is removed when the demo ends, as it went well or
    // not (`--lake` keeps one); a guard, so an error's early return removes it too.
    let (lake_dir, temp) = match a.lake {
        Some(l) => (l, None),
        None => {
            let t = TempLake(tempdir()?);
            (t.0.clone(), Some(t))
        }
    };
    let report = crate::demo::run(&data, &lake_dir, temp.is_some()).await?;
    let (mut out, _) = a.out.sink()?;
    use std::io::Write;
    write!(out, "{report}")?;
    out.flush()?;
    Ok(EXIT_OK)
}

/// A temporary lake folder, removed when dropped.
struct TempLake(std::path::PathBuf);

impl Drop for TempLake {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("wisp demo: could not remove the temporary lake {}: {e}", self.0.display());
        }
    }
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
