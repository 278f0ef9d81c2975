use super::{EXIT_OK, EXIT_STRICT_REJECTS, EXIT_UNREADABLE_INPUT};
use crate::ingest::{formats::Format, ingest, IngestOptions};
use crate::lake::Lake;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp ingest exports/ --lake ./lake --asn-db GeoLite2-ASN.mmdb --summary-json ingest.json
  wisp ingest 'insights-logs-*/**/PT1H.json' --lake ./lake            # a diagnostic-settings export
  wisp ingest az://insights-logs-signinlogs/ --lake az://lake/t1 --since 2026-11-29T00:00:00Z
  wisp ingest sentinel-export.csv --format log-analytics --lake ./lake --strict
  wisp ingest --reenrich --asn-db GeoLite2-ASN.mmdb --lake ./lake     # rows ingested without (or with an old) database")]
pub struct IngestArgs {
    /// Files, folders (recursive) or globs; `.gz` is read transparently.
    #[arg(required_unless_present = "reenrich")]
    pub inputs: Vec<String>,
    /// Re-enrich the rows already in the lake with --asn-db / --geo-db (files rewritten in place,
    /// nothing duplicated), then ingest the inputs, if any.
    #[arg(long)]
    pub reenrich: bool,
    /// The lake folder.
    #[arg(long, env = "WISP_LAKE")]
    pub lake: String,
    /// Force an input format instead of detecting it per file and record.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// MaxMind ASN database (or ASN range CSV/TSV): fills source_asn / source_as_org.
    #[arg(long)]
    pub asn_db: Option<PathBuf>,
    /// MaxMind City database: fills country / city when the log has none.
    #[arg(long)]
    pub geo_db: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Treat any rejected record as an error (exit code 3).
    #[arg(long)]
    pub strict: bool,
    /// Leave the original record out of the `raw` column (smaller lake, not lossless).
    #[arg(long)]
    pub no_raw: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Only inputs of the diagnostic-settings layout (`y=/m=/d=/h=` folders) from this hour on (UTC;
    /// object-store folders before it are not listed). Other inputs are always read.
    #[arg(long)]
    pub since: Option<String>,
    /// Only inputs of the diagnostic-settings layout before this time (exclusive).
    #[arg(long)]
    pub until: Option<String>,
    /// After the ingest, compact each day that has at least this many files (as `wisp compact`
    /// does); 0 never compacts.
    #[arg(long, default_value_t = 24)]
    pub compact_after: usize,
    /// Threads that parse and map JSON lines (0: one per core; 1: everything on one thread). The
    /// lake written is the same whatever the number.
    #[arg(long, default_value_t = 0, env = "WISP_INGEST_THREADS")]
    pub threads: usize,
    /// Read local JSON-lines files instead of mapping them into memory. Mapped (the default), a
    /// file must not shrink while it is ingested: if it does, the process stops with a bus error
    /// (exit code 1, the lake as a killed ingest leaves it: run the ingest again).
    #[arg(long)]
    pub no_mmap: bool,
}

/// Removes `dir` if nothing but empty folders is left in it (a failed ingest into a new folder
/// leaves no empty lake behind).
fn remove_if_empty(dir: &std::path::Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else { return false };
    let mut empty = true;
    for e in rd.flatten() {
        let p = e.path();
        empty &= e.file_type().is_ok_and(|t| t.is_dir()) && remove_if_empty(&p);
    }
    empty && std::fs::remove_dir(dir).is_ok()
}

pub async fn run(a: IngestArgs) -> anyhow::Result<i32> {
    let local = std::path::PathBuf::from(a.lake.strip_prefix("file://").unwrap_or(&a.lake));
    let new_folder = !a.lake.contains("://") || a.lake.starts_with("file://");
    let new_folder = new_folder && !local.exists();
    match ingest_into(a).await {
        Err(e) => {
            if new_folder {
                remove_if_empty(&local);
            }
            Err(e)
        }
        ok => ok,
    }
}

async fn ingest_into(a: IngestArgs) -> anyhow::Result<i32> {
    let lake = Lake::open(&a.lake)?;
    let opts = IngestOptions {
        inputs: a.inputs,
        format: a.format,
        asn_db: a.asn_db.as_deref().map(crate::lake::fetch::local_copy).transpose()?,
        geo_db: a.geo_db.as_deref().map(crate::lake::fetch::local_copy).transpose()?,
        keep_raw: !a.no_raw,
        progress: !a.no_progress,
        reenrich: a.reenrich,
        hours: crate::ingest::source::Hours {
            since: a.since.as_deref().map(crate::time::parse_utc).transpose()?,
            until: a.until.as_deref().map(crate::time::parse_utc).transpose()?,
        },
        threads: a.threads,
        mmap: !a.no_mmap,
        ..IngestOptions::new(Vec::new())
    };
    let summary = ingest(&lake, &opts).await?;
    eprintln!("{summary}");
    if a.compact_after > 0 && lake.local_root.is_some() && summary.written_total() > 0 {
        let _lock = crate::lake::WriteLock::acquire(&lake, "wisp ingest (compaction)")?;
        let o = crate::lake::compact::CompactOptions { min_files: a.compact_after, ..Default::default() };
        super::compact::compact_and_report(&lake, &o, false).await?;
    }
    if let Some(p) = &a.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    if !summary.unreadable.is_empty() {
        eprintln!(
            "error: {} input(s) could not be read, in whole or in part (listed above); everything else was ingested",
            summary.unreadable.len()
        );
        return Ok(EXIT_UNREADABLE_INPUT);
    }
    if a.strict && summary.rejected_total() > 0 {
        eprintln!("error: --strict and {} record(s) were rejected; see <lake>/_rejected/", summary.rejected_total());
        return Ok(EXIT_STRICT_REJECTS);
    }
    Ok(EXIT_OK)
}
