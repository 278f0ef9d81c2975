//! `wisp gen`: a synthetic tenant that looks like a real one, with injected attack scenarios and a
//! ground-truth file of what each detection must (and must not) report.
//!
//! Principals have heavy-tailed activity (Zipf weights): a few automation principals sign in
//! thousands of times a day from a handful of cloud networks, a long tail rarely. Microsoft
//! first-party apps, managed identities without IPs, users' interactive and non-interactive
//! sign-ins, AADSTS failures, audit events, Graph activity, Office 365 audit (MailItemsAccessed),
//! risk events re-sent as versions, network alerts and Azure activity fill the days.
//! Output is either the native export format (diagnostic-settings JSON lines, gzip, one file per
//! category and day) or the Parquet lake directly (through the same mapping as ingest).
//! Deterministic for a seed; streams day by day (bounded memory).

mod background;
mod records;
mod scenarios;
mod sink;
mod tenant;
mod truth;

pub use tenant::{MS_TENANTS, TENANT};
pub use truth::{check_ground_truth, Expectation, Mode};

use crate::ingest::{IngestOptions, RecordSink, Summary};
use crate::lake::Lake;
use background::Day;
use chrono::{DateTime, Duration, Utc};
use records::category_of;
use serde::Serialize;
use serde_json::Value;
use sink::{LakeSink, RawSink, Sink};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tenant::{tenant, write_asn_table, Rng};
use truth::Truth;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Small,
    Medium,
    Large,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenOutput {
    Raw,
    Lake,
}

/// Sizes of a profile; rates are per day.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub sps: usize,
    pub mis: usize,
    pub users: usize,
    pub signins_per_day: f64,
    pub other_per_day: f64,
}

impl Profile {
    /// About 100k sign-ins (small), 30M + 10M (medium) and 100M + 30M (large) over 30 days.
    pub fn scale(self) -> Scale {
        match self {
            Profile::Small => {
                Scale { sps: 300, mis: 100, users: 1000, signins_per_day: 3_400.0, other_per_day: 1_100.0 }
            }
            Profile::Medium => {
                Scale { sps: 2000, mis: 800, users: 20_000, signins_per_day: 1_000_000.0, other_per_day: 333_000.0 }
            }
            Profile::Large => {
                Scale { sps: 5000, mis: 2000, users: 50_000, signins_per_day: 3_333_000.0, other_per_day: 1_000_000.0 }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenOptions {
    pub profile: Profile,
    pub days: u32,
    pub seed: u64,
    pub output: GenOutput,
    pub out: PathBuf,
    /// Exclusive end of the data (default 2026-11-20T00:00:00Z, so outputs are reproducible).
    pub end: DateTime<Utc>,
    pub keep_raw: bool,
    /// Gzip the raw files (as storage exports usually are).
    pub gzip: bool,
    pub progress: bool,
    /// Threads mapping records into the lake (`--as lake`; 0: one per core).
    pub threads: usize,
}

/// What a generator run wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GenReport {
    pub records: u64,
    pub by_category: BTreeMap<String, u64>,
    pub files: u64,
    pub ingest: Option<Summary>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
}

/// Records emitted, counted per category.
pub(super) struct Out {
    sink: Box<dyn Sink>,
    counts: BTreeMap<String, u64>,
    total: u64,
}

impl Out {
    pub(super) fn emit(&mut self, day: &str, v: Value) -> Result<(), GenError> {
        self.count(category_of(&v));
        self.sink.emit(day, v)
    }

    /// A record of `category` as one line of JSON text, which `write` appends.
    pub(super) fn emit_text(
        &mut self,
        day: &str,
        category: &str,
        write: &mut dyn FnMut(&mut String),
    ) -> Result<(), GenError> {
        self.count(category);
        self.sink.emit_text(day, category, write)
    }

    fn count(&mut self, category: &str) {
        match self.counts.get_mut(category) {
            Some(n) => *n += 1,
            None => {
                self.counts.insert(category.to_string(), 1);
            }
        }
        self.total += 1;
    }
}

/// Generates a tenant. `--as lake` must run on a blocking thread inside a Tokio runtime.
pub fn generate(o: &GenOptions, handle: tokio::runtime::Handle) -> Result<GenReport, GenError> {
    std::fs::create_dir_all(&o.out).map_err(|e| GenError::Io { path: o.out.clone(), source: e })?;
    let s = o.profile.scale();
    let t = tenant(o.seed, s);
    let asn_path = o.out.join("asn.csv");
    write_asn_table(&asn_path, &t.nets).map_err(|e| GenError::Io { path: asn_path.clone(), source: e })?;
    let sink: Box<dyn Sink> = match o.output {
        GenOutput::Raw => Box::new(RawSink::new(o.out.join("raw"), o.gzip)),
        GenOutput::Lake => {
            let lake = Lake::open(&o.out.join("lake").display().to_string())?;
            let opts = IngestOptions {
                asn_db: Some(asn_path.clone()),
                keep_raw: o.keep_raw,
                threads: o.threads,
                ..IngestOptions::new(vec![])
            };
            Box::new(LakeSink(RecordSink::new(&lake, &opts, handle)?))
        }
    };
    let mut out = Out { sink, counts: BTreeMap::new(), total: 0 };
    let start = o.end - Duration::days(o.days as i64);
    // The scenarios' attacks happen on the last day; their history on earlier days.
    let last0 = o.end - Duration::days(1);
    let bar = progress(o.progress, o.days as u64);
    let mut truth = Truth::default();
    for d in 0..o.days as i64 {
        let day0 = start + Duration::days(d);
        let mut day = Day {
            seed: o.seed,
            index: d,
            start: day0,
            name: day0.format("%Y-%m-%d").to_string(),
            rng: Rng::new(o.seed, 1000 + d as u64),
            out: &mut out,
        };
        background::signins(&mut day, &t, s)?;
        background::other_events(&mut day, &t, s)?;
        let is_last = d == o.days as i64 - 1;
        scenarios::inject(&t, o.seed, day0, last0, &mut |v| day.emit(v), &mut truth, is_last)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let Out { sink, counts, total } = out;
    let (files, ingest) = sink.finish()?;
    let gt = o.out.join("ground_truth.json");
    std::fs::write(&gt, serde_json::to_vec_pretty(&truth.0).expect("serializable"))
        .map_err(|e| GenError::Io { path: gt, source: e })?;
    Ok(GenReport { records: total, by_category: counts, files, ingest })
}

fn progress(enabled: bool, days: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(days);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} day {pos}/{len} {elapsed}").expect("valid template"),
    );
    bar
}
