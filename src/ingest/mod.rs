//! Ingest: discover inputs, read them (gzip, JSON lines, JSON documents, CSV), recognize each
//! record's format and table, normalize and enrich it once, and hand rows to the lake writer.
//! Every record read ends in exactly one place: a table, `_rejected/`, or the duplicate count.

mod chunks;
mod enrich;
pub mod formats;
pub mod normalize;
mod pool;
mod readers;
mod reenrich;
mod run;
pub mod source;
mod summary;

pub use reenrich::Reenriched;
pub use run::RecordSink;
pub use summary::{reason_class, Summary};

use crate::lake::{Lake, LakeError};
use formats::Format;
use readers::FileError;
use run::Run;

/// Ingest failed as a whole (a single bad input is not this: it is counted and reported).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Db(#[from] wisp_udfs::DbError),
    #[error("no input given: name files, folders or globs to ingest")]
    NoInput,
    #[error("--reenrich needs a database to enrich with: give --asn-db and/or --geo-db")]
    NothingToReenrich,
    #[error("ingest task failed: {0}")]
    Join(String),
}

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub inputs: Vec<String>,
    pub format: Format,
    pub asn_db: Option<std::path::PathBuf>,
    pub geo_db: Option<std::path::PathBuf>,
    /// Keep the original record in the `raw` column (default true).
    pub keep_raw: bool,
    /// Show a progress bar on stderr when it is a terminal.
    pub progress: bool,
    /// Re-enrich the rows already in the lake with `asn_db` / `geo_db` first (`reenrich.rs`).
    pub reenrich: bool,
    /// Only inputs whose diagnostic-settings folders (`y=/m=/d=/h=`) name hours overlapping
    /// `[since, until)`; inputs outside that layout are always read.
    pub hours: source::Hours,
    /// Threads that parse and map JSON lines (0: one per core; 1: all on the calling thread).
    pub threads: usize,
    /// JSON lines are mapped in chunks of whole lines of about this many bytes (one chunk per
    /// thread at a time).
    pub chunk_bytes: usize,
    /// Map local, uncompressed JSON-lines inputs into memory instead of reading them (default
    /// true): no copy from the page cache. An input that shrinks while it is mapped stops the
    /// process with a bus error (`chunks::on_sigbus` says so).
    pub mmap: bool,
}

impl IngestOptions {
    /// These inputs, every format recognized, no enrichment, `raw` kept, no progress bar.
    pub fn new(inputs: Vec<String>) -> Self {
        IngestOptions {
            inputs,
            format: Format::Auto,
            asn_db: None,
            geo_db: None,
            keep_raw: true,
            progress: false,
            reenrich: false,
            hours: source::Hours::default(),
            threads: 0,
            chunk_bytes: 2 << 20,
            mmap: true,
        }
    }
}

/// Ingests every input into the lake. Runs the CPU-bound parsing on a blocking thread.
pub async fn ingest(lake: &Lake, opts: &IngestOptions) -> Result<Summary, IngestError> {
    if opts.inputs.is_empty() && !opts.reenrich {
        return Err(IngestError::NoInput);
    }
    if opts.reenrich && opts.asn_db.is_none() && opts.geo_db.is_none() {
        return Err(IngestError::NothingToReenrich);
    }
    let lake = lake.clone();
    let opts = opts.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || ingest_blocking(&lake, &opts, handle))
        .await
        .map_err(|e| IngestError::Join(e.to_string()))?
}

fn ingest_blocking(lake: &Lake, opts: &IngestOptions, handle: tokio::runtime::Handle) -> Result<Summary, IngestError> {
    let (mut run, run_id, manifest) = Run::open(lake, opts, &handle, "", indicatif::ProgressBar::hidden())?;
    if opts.reenrich {
        run.reenrich(lake, &handle)?;
    }
    let (files, mut unreadable) = source::discover(&opts.inputs, &opts.hours);
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let bar = progress_bar(opts.progress, total_bytes);
    run.bar = bar.clone();
    let mut entries = Vec::new();
    for f in &files {
        run.summary.files += 1;
        let prior = manifest.get(&f.url);
        let before = run.summary.read;
        match readers::read_file(&mut run, f, prior, &bar) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => run.summary.files_unchanged += 1,
            Err(FileError::Lake(e)) => return Err(e.into()),
            Err(FileError::Read(msg)) => match run.summary.read - before {
                0 => unreadable.push(format!("{}: could not be read: {msg}", f.display)),
                n => unreadable
                    .push(format!("{}: read partly ({n} record(s) before the error were taken): {msg}", f.display)),
            },
        }
    }
    bar.finish_and_clear();
    run.finish(lake, &handle, &run_id, &entries, unreadable)
}

fn progress_bar(enabled: bool, total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .expect("valid template"),
    );
    bar
}
