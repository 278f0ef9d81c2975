use super::EXIT_OK;
use crate::lake::compact::{compact, CompactOptions};
use crate::lake::{Lake, Table, WriteLock};
use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "Rewrites each selected day of a table that has several files into few files sorted by `ts`
with 128 Ki-row row groups: short windows then read an hour, not the day. Atomic per day (readers
see the old files or the new ones), lossless (the row counts are checked), and late data stays
visible to `wisp run` (each file names the ingest runs it holds). Then the rollups of the ended
(UTC) days in range whose files changed (or that have none) are written again (`<lake>/_rollups/`;
rules read a day's summary only while the day holds the files it was computed from; a replaced
summary stays an hour for sessions opened before). Holds the lake's write lock.

Examples:
  wisp compact --lake ./lake                                  # every day with 2 or more files, not all compacted
  wisp compact --lake ./lake --table signins --from 2026-11-01 --to 2026-11-30
  wisp compact --lake ./lake --table signins --force          # every day again, in the current layout")]
pub struct CompactArgs {
    /// The lake folder.
    #[arg(long, env = "WISP_LAKE")]
    pub lake: String,
    /// Only this table (repeatable; default: all).
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// First day (YYYY-MM-DD, UTC) to compact.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day (YYYY-MM-DD, UTC) to compact.
    #[arg(long)]
    pub to: Option<String>,
    /// Compact a day when it has at least this many files, one of them not compacted yet.
    #[arg(long, default_value_t = 2)]
    pub min_files: usize,
    /// Rewrite every selected day, compacted already or not, even of one file: gives the days
    /// of an older lake the current layout (sign-ins: a file per category, failures apart).
    #[arg(long)]
    pub force: bool,
    /// Memory pool of the merge in MiB (it spills beyond it).
    #[arg(long, default_value_t = 1024)]
    pub memory_mb: usize,
}

fn day(s: &str) -> anyhow::Result<String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| anyhow::anyhow!("'{s}' is not a day: give YYYY-MM-DD"))
}

pub async fn run(a: CompactArgs) -> anyhow::Result<i32> {
    let tables = a
        .tables
        .iter()
        .map(|t| {
            Table::from_name(t).ok_or_else(|| {
                let names: Vec<_> = crate::lake::ALL_TABLES.iter().map(|t| t.name()).collect();
                anyhow::anyhow!("unknown table '{t}': one of {}", names.join(", "))
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let days = match (a.from.as_deref().map(day).transpose()?, a.to.as_deref().map(day).transpose()?) {
        (None, None) => None,
        (f, t) => Some((f.unwrap_or_default(), t.unwrap_or_else(|| "9999-12-31".into()))),
    };
    let lake = Lake::open_existing(&a.lake)?;
    let _lock = WriteLock::acquire(&lake, "wisp compact")?;
    let removed = crate::lake::compact::remove_staging_folders(&lake);
    if removed > 0 {
        eprintln!("removed {removed} staging folder(s) of an interrupted compaction");
    }
    let min_files = if a.force { 1 } else { a.min_files.max(1) };
    let opts = CompactOptions { tables, days, min_files, force: a.force, memory_limit: a.memory_mb << 20 };
    compact_and_report(&lake, &opts, true).await?;
    Ok(EXIT_OK)
}

/// Compacts (the caller holds the write lock) and says what it did on stderr: a line per day
/// when `each`, and a total.
pub async fn compact_and_report(lake: &Lake, opts: &CompactOptions, each: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let done = compact(lake, opts).await?;
    for d in done.iter().filter(|_| each) {
        eprintln!(
            "{}/day={}: {} files → {}, {} rows, {:.1} → {:.1} MB, {:.2}s",
            d.table,
            d.day,
            d.files_before,
            d.files_after,
            d.rows,
            d.bytes_before as f64 / 1e6,
            d.bytes_after as f64 / 1e6,
            d.seconds
        );
    }
    if each || !done.is_empty() {
        let before: usize = done.iter().map(|d| d.files_before).sum();
        let after: usize = done.iter().map(|d| d.files_after).sum();
        eprintln!(
            "compacted {} day(s): {before} files → {after} in {:.1}s",
            done.len(),
            started.elapsed().as_secs_f64()
        );
    }
    // The rollups of the ended days in range follow their files (those unchanged are left as they are).
    let started = std::time::Instant::now();
    let written =
        crate::rollups::refresh(lake, opts.days.as_ref(), opts.memory_limit, crate::rollups::KEEP_REPLACED).await?;
    for w in written.iter().filter(|_| each) {
        eprintln!(
            "{}/{}{}/{}={}: {} events → {} rows, {:.2}s",
            crate::rollups::FOLDER,
            w.rollup,
            if w.week { "_week" } else { "" },
            if w.rollup == crate::version_days::NAME { "upto" } else { "day" },
            w.day,
            w.events,
            w.rows,
            w.seconds
        );
    }
    if each || !written.is_empty() {
        let weeks = written.iter().filter(|w| w.week).count();
        let index = written.iter().filter(|w| w.rollup == crate::version_days::NAME).count();
        eprintln!(
            "rolled up {} day(s) and {weeks} week(s){} in {:.1}s",
            written.len() - weeks - index,
            if index > 0 { ", indexed the risk detections' days" } else { "" },
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
