use super::EXIT_OK;
use crate::gen::{generate, GenOptions, GenOutput, Profile};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp gen --profile small --days 14 --out /tmp/tenant                 # raw exports, then: wisp ingest /tmp/tenant/raw --lake …
  wisp gen --profile medium --days 30 --as lake --out /tmp/medium      # the Parquet lake directly
  wisp gen --profile small --seed 7 --no-gzip --out /tmp/t7")]
pub struct GenArgs {
    #[arg(long, value_enum, default_value_t = Profile::Small)]
    pub profile: Profile,
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// `raw`: native export files (gzip JSON lines) to ingest; `lake`: the Parquet lake directly.
    #[arg(long = "as", value_enum, default_value_t = GenOutput::Raw)]
    pub output: GenOutput,
    /// Output folder: raw/ or lake/, asn.csv (the ASN table to ingest with) and ground_truth.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Exclusive end of the generated data (UTC).
    #[arg(long, default_value = "2026-11-20T00:00:00Z")]
    pub end: String,
    /// Keep the `raw` column when writing the lake directly.
    #[arg(long)]
    pub raw_column: bool,
    /// Write raw files uncompressed (PT24H.json instead of .json.gz).
    #[arg(long)]
    pub no_gzip: bool,
    #[arg(long)]
    pub no_progress: bool,
    /// Threads that map records into the lake with `--as lake` (0: one per core); the lake is
    /// the same whatever the number.
    #[arg(long, default_value_t = 0, env = "WISP_INGEST_THREADS")]
    pub threads: usize,
    /// With `--as lake`, compact each day that has at least this many files afterwards (as
    /// `wisp compact` does); 0 never compacts.
    #[arg(long, default_value_t = 2)]
    pub compact_after: usize,
}

pub async fn run(a: GenArgs) -> anyhow::Result<i32> {
    let end = chrono::DateTime::parse_from_rfc3339(&a.end)
        .map_err(|e| anyhow::anyhow!("bad --end '{}': {e}", a.end))?
        .with_timezone(&chrono::Utc);
    let o = GenOptions {
        profile: a.profile,
        days: a.days.max(1),
        seed: a.seed,
        output: a.output,
        out: a.out,
        end,
        keep_raw: a.raw_column,
        gzip: !a.no_gzip,
        progress: !a.no_progress,
        threads: a.threads,
    };
    if a.days < 12 {
        eprintln!(
            "note: with fewer than 12 days the scenarios lack their 11 days of history; ground truth may not hold"
        );
    }
    let lake_dir = o.out.join("lake");
    let compact_after = a.compact_after;
    let handle = tokio::runtime::Handle::current();
    let started = std::time::Instant::now();
    let report = tokio::task::spawn_blocking(move || generate(&o, handle)).await??;
    eprintln!("generated {} records in {:.1}s:", report.records, started.elapsed().as_secs_f64());
    for (c, n) in &report.by_category {
        eprintln!("  {c:<32} {n}");
    }
    if let Some(s) = &report.ingest {
        eprintln!("{s}");
        // The generator writes each day in many overlapping files, as a busy ingest would.
        if compact_after > 0 {
            let lake = crate::lake::Lake::open_existing(&lake_dir.display().to_string())?;
            let _lock = crate::lake::WriteLock::acquire(&lake, "wisp gen (compaction)")?;
            let o = crate::lake::compact::CompactOptions { min_files: compact_after, ..Default::default() };
            super::compact::compact_and_report(&lake, &o, false).await?;
        }
    }
    Ok(EXIT_OK)
}
