//! One ingest run: each record mapped, enriched, de-duplicated and buffered for the lake writer, or
//! rejected with its position and reason; the run recorded in the manifest at the end. Files and
//! records built in memory (the generator's [`RecordSink`]) go through the same path.

use super::enrich::Enricher;
use super::formats::{self, map_record, Format, Mapped};
use super::normalize::{day_of, fnv64};
use super::source;
use super::summary::{reason_class, Summary};
use super::{IngestError, IngestOptions};
use crate::lake::{Lake, LakeError, LakeWriter, RejectWriter, WriteLock};
use serde_json::{Map, Value};
use std::sync::Arc;
use wisp_udfs::{AsnDb, GeoDb};

/// Where a record came from, for rejects.
#[derive(Clone, Copy)]
pub(super) enum Pos {
    Line(u64),
    LineRecord(u64, u64),
    Record(u64),
}

impl Pos {
    fn json(self, v: &mut Map<String, Value>) {
        match self {
            Pos::Line(l) => {
                v.insert("line".into(), l.into());
            }
            Pos::LineRecord(l, r) => {
                v.insert("line".into(), l.into());
                v.insert("record".into(), r.into());
            }
            Pos::Record(r) => {
                v.insert("record".into(), r.into());
            }
        }
    }
}

/// One ingest run: the writers, the enrichment and the running summary.
pub(super) struct Run {
    writer: LakeWriter,
    rejects: RejectWriter,
    enricher: Enricher,
    pub(super) summary: Summary,
    pub(super) format: Format,
    keep_raw: bool,
    now_us: i64,
    /// The progress bar (hidden when not on a terminal): bytes as its position, records as its message.
    pub(super) bar: indicatif::ProgressBar,
    /// The lake's write lock, held until the manifest is written.
    lock: WriteLock,
}

impl Run {
    /// Opens the databases, takes the lake's write lock (waiting for another writer), repairs
    /// what a killed writer left, and opens the writers of one ingest run; the run id ends with
    /// `tag`. Returns the run, its id and the manifest of earlier runs.
    pub(super) fn open(
        lake: &Lake,
        opts: &IngestOptions,
        handle: &tokio::runtime::Handle,
        tag: &str,
        bar: indicatif::ProgressBar,
    ) -> Result<(Run, String, source::Manifest), IngestError> {
        let asn = opts.asn_db.as_ref().map(AsnDb::open).transpose()?.map(Arc::new);
        let geo = opts.geo_db.as_ref().map(GeoDb::open).transpose()?.map(Arc::new);
        let lock = WriteLock::acquire(lake, "wisp ingest")?;
        let manifest = source::Manifest::load(lake, handle)?;
        let repairs = crate::lake::lock::repair(lake, manifest.run_ids());
        if repairs != Default::default() {
            eprintln!(
                "repaired what an interrupted ingest left: {} staging file(s), {} file(s) of rejects from a run that never finished (they are rejected again now)",
                repairs.staging_files, repairs.uncommitted_reject_files
            );
        }
        let now = chrono::Utc::now();
        let run_id = format!("{}-{}{tag}", now.format("%Y%m%dT%H%M%S%.6fZ"), std::process::id());
        let run = Run {
            writer: LakeWriter::new(lake.clone(), run_id.clone(), handle.clone()),
            rejects: RejectWriter::new(
                lake.clone(),
                run_id.clone(),
                now.format("%Y-%m-%d").to_string(),
                handle.clone(),
            ),
            enricher: Enricher::new(asn, geo),
            summary: Summary::default(),
            format: opts.format,
            keep_raw: opts.keep_raw,
            now_us: now.timestamp_micros(),
            bar,
            lock,
        };
        Ok((run, run_id, manifest))
    }

    /// Flushes the writers and records the run (and the files it read) in the manifest.
    pub(super) fn finish(
        self,
        lake: &Lake,
        handle: &tokio::runtime::Handle,
        run_id: &str,
        entries: &[source::ManifestEntry],
        unreadable: Vec<String>,
    ) -> Result<Summary, IngestError> {
        let Run { writer, mut rejects, mut summary, enricher, lock, .. } = self;
        let stats = writer.finish()?;
        rejects.flush()?;
        summary.parquet_files = stats.files.len() as u64;
        summary.unreadable = unreadable;
        source::write_manifest(
            lake,
            handle,
            run_id,
            entries,
            &summary,
            enricher.asn.as_deref(),
            enricher.geo.as_deref(),
        )?;
        drop(lock);
        Ok(summary)
    }

    /// Re-enriches the rows already in the lake (holding the run's write lock).
    pub(super) fn reenrich(&mut self, lake: &Lake, handle: &tokio::runtime::Handle) -> Result<(), IngestError> {
        let r = handle.block_on(super::reenrich::reenrich(lake, &mut self.enricher))?;
        self.summary.reenriched = Some(r);
        Ok(())
    }

    pub(super) fn reject(&mut self, file: &str, pos: Pos, reason: &str, raw: &str) -> Result<(), LakeError> {
        self.summary.read += 1;
        *self.summary.rejected.entry(reason_class(reason)).or_default() += 1;
        let mut m = Map::new();
        m.insert("source".into(), file.into());
        pos.json(&mut m);
        m.insert("reason".into(), reason.into());
        m.insert("raw".into(), raw.into());
        self.rejects.push(&Value::Object(m))
    }

    /// One record (already parsed): map, enrich, de-duplicate, buffer.
    pub(super) fn record(&mut self, file: &str, pos: Pos, v: &Value, raw: &str) -> Result<(), LakeError> {
        let mapped = match map_record(v, self.format) {
            Ok(m) => m,
            Err(reason) => return self.reject(file, pos, &reason, raw),
        };
        self.place(mapped, raw)
    }

    pub(super) fn place(&mut self, m: Mapped, raw: &str) -> Result<(), LakeError> {
        let Mapped { table, ts, dedup_id, mut row, ingested_at } = m;
        self.summary.read += 1;
        if self.summary.read.is_multiple_of(16_384) && !self.bar.is_hidden() {
            self.bar.set_message(format!("{} records", self.summary.read));
        }
        let key = match &dedup_id {
            Some(id) => fnv64(&[table.name().as_bytes(), id.as_bytes()]),
            None => fnv64(&[table.name().as_bytes(), b"raw", raw.as_bytes()]),
        };
        row[0] = Value::from(ts);
        row[1] = Value::from(ingested_at.unwrap_or(self.now_us));
        row[2] = if self.keep_raw { Value::String(raw.to_string()) } else { Value::Null };
        row[3] = Value::from(key);
        self.enricher.apply(table, &mut row);
        let day = day_of(ts);
        if self.writer.push(table, &day, key, row, raw.len() + 256)? {
            *self.summary.written.entry(table.name().to_string()).or_default() += 1;
        } else {
            self.summary.duplicates += 1;
        }
        Ok(())
    }

    /// A parsed JSON value that may be an envelope of records.
    pub(super) fn value(&mut self, file: &str, pos_line: Option<u64>, v: Value, raw: &str) -> Result<(), LakeError> {
        if let Some(items) = formats::envelope::items(&v) {
            for (k, item) in items.iter().enumerate() {
                let pos = match pos_line {
                    Some(l) => Pos::LineRecord(l, k as u64),
                    None => Pos::Record(k as u64),
                };
                let raw = serde_json::to_string(item).expect("Value serializes");
                self.record(file, pos, item, &raw)?;
            }
            return Ok(());
        }
        let pos = pos_line.map(Pos::Line).unwrap_or(Pos::Record(0));
        self.record(file, pos, &v, raw)
    }
}

/// Feeds records built in memory (the generator's `--as lake`) through the same mapping,
/// enrichment, de-duplication and writer as files, with the same accounting.
pub struct RecordSink {
    run: Run,
    lake: Lake,
    handle: tokio::runtime::Handle,
    run_id: String,
}

impl RecordSink {
    /// Must be created and used on a blocking thread inside a Tokio runtime.
    pub fn new(lake: &Lake, opts: &IngestOptions, handle: tokio::runtime::Handle) -> Result<Self, IngestError> {
        let (run, run_id, _) = Run::open(lake, opts, &handle, "-gen", indicatif::ProgressBar::hidden())?;
        Ok(RecordSink { run, lake: lake.clone(), handle, run_id })
    }

    /// One record, as it would appear in an export.
    pub fn push(&mut self, v: &Value) -> Result<(), IngestError> {
        let raw = if self.run.keep_raw { serde_json::to_string(v).expect("Value serializes") } else { String::new() };
        self.run.record("generator", Pos::Record(self.run.summary.read), v, &raw)?;
        Ok(())
    }

    pub fn summary(&self) -> &Summary {
        &self.run.summary
    }

    /// Flushes everything and records the run in the manifest.
    pub fn finish(self) -> Result<Summary, IngestError> {
        self.run.finish(&self.lake, &self.handle, &self.run_id, &[], Vec::new())
    }
}
