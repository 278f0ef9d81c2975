//! One ingest run: each record mapped, enriched, de-duplicated and buffered for the lake writer, or
//! rejected with its position and reason; the run recorded in the manifest at the end. Files and
//! records built in memory (the generator's [`RecordSink`]) go through the same path.

use super::enrich::Enricher;
use super::formats::{self, map_record, Format, Mapped};
use super::normalize::{day_of, fnv64};
use super::pool::{Done, Job, Pool};
use super::source;
use super::summary::{reason_class, Summary};
use super::{IngestError, IngestOptions};
use crate::lake::rows::{compact_rows_to_batch_in, rows_to_batch, CompactRow};
use crate::lake::{Lake, LakeError, LakeWriter, RejectWriter, Table, WriteLock};
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
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
    /// The position with `n` lines before it (a chunk's positions count from its first line).
    pub(super) fn after_lines(self, n: u64) -> Pos {
        match self {
            Pos::Line(l) => Pos::Line(l + n),
            Pos::LineRecord(l, r) => Pos::LineRecord(l + n, r),
            Pos::Record(r) => Pos::Record(r),
        }
    }

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

/// What mapping one record produced, before de-duplication: a row for a table (its key and day
/// computed), or a rejection. Mapping runs on any thread; [`Run::commit`] takes outcomes in input
/// order, so the lake and the counts are the same whatever the number of threads.
pub(super) enum Outcome {
    Row { table: Table, day: Arc<str>, key: i64, row: Row, bytes: usize },
    Reject { pos: Pos, reason: String, raw: String },
}

/// A mapped row: `Value`s in the table's column order, or the compact row of a typed reader.
pub(super) enum Row {
    Values(Vec<Value>),
    Compact(CompactRow),
}

impl Row {
    /// The row's time (column 0, `ts`, always set by the mapper; the writer sorts by the
    /// column itself, so this only orders the rows it gathers from).
    fn ts(&self) -> i64 {
        match self {
            Row::Values(v) => v[0].as_i64(),
            Row::Compact(c) => c.int(0),
        }
        .unwrap_or(i64::MIN)
    }

    pub(super) fn into_values(self) -> Vec<Value> {
        self.into_values_in("")
    }

    /// The row's values, its external cells ranges of `ext`.
    fn into_values_in(self, ext: &str) -> Vec<Value> {
        match self {
            Row::Values(v) => v,
            Row::Compact(c) => c.to_values_in(ext),
        }
    }
}

/// The rows of one (table, day), as `Value`s or, when each is compact, as compact rows; `ext` is
/// the text the compact rows' external cells are ranges of (the chunk they were read from).
fn rows_batch(table: Table, rows: Vec<Row>, ext: &str, shared: Option<&Buffer>) -> Result<RecordBatch, LakeError> {
    if rows.iter().all(|r| matches!(r, Row::Compact(_))) {
        let compact: Vec<CompactRow> =
            rows.into_iter().filter_map(|r| if let Row::Compact(c) = r { Some(c) } else { None }).collect();
        return compact_rows_to_batch_in(table, &compact, ext, shared);
    }
    rows_to_batch(table, &rows.into_iter().map(|r| r.into_values_in(ext)).collect::<Vec<_>>())
}

/// A record's de-duplication key: its table and id, or its whole text when it has no id.
fn key_of(table: Table, id: Option<&str>, raw: &str) -> i64 {
    match id {
        Some(id) => fnv64(&[table.name().as_bytes(), id.as_bytes()]),
        None => fnv64(&[table.name().as_bytes(), b"raw", raw.as_bytes()]),
    }
}

/// The rows of one (table, day) from one chunk of input, converted to Arrow on the thread that
/// mapped them, sorted by time; `keys[i]` is row i's de-duplication key. `read` counts the
/// chunk's records of the group, the later ones with a key seen earlier in the group included
/// (they are left out here, as the writer would leave them out).
pub(super) struct Group {
    table: Table,
    day: Arc<str>,
    read: u64,
    keys: Vec<i64>,
    batch: RecordBatch,
}

impl Group {
    /// The group of `rows` (in input order), without the later of two rows with one key, in
    /// time order (rows with one time in input order). The writer sorts a file's rows across
    /// groups by (time, group, row): that is the input order for equal times, as before, and its
    /// gathering reads each group's columns front to back instead of at random.
    fn new(
        table: Table,
        day: Arc<str>,
        keys: Vec<i64>,
        rows: Vec<Row>,
        ext: &str,
        shared: Option<&Buffer>,
    ) -> Result<Group, LakeError> {
        let read = keys.len() as u64;
        let mut seen = std::collections::HashSet::with_capacity_and_hasher(keys.len(), crate::lake::writer::KeyHasher);
        let mut order: Vec<(i64, usize)> = Vec::with_capacity(keys.len());
        for (i, (k, r)) in keys.iter().zip(&rows).enumerate() {
            if seen.insert(*k) {
                order.push((r.ts(), i));
            }
        }
        order.sort_unstable();
        let mut slots: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
        let rows: Vec<Row> = order.iter().map(|&(_, i)| slots[i].take().expect("each row once")).collect();
        let keys = order.iter().map(|&(_, i)| keys[i]).collect();
        Ok(Group { table, day, read, keys, batch: rows_batch(table, rows, ext, shared)? })
    }
}

/// A chunk's outcomes as [`Run::commit_prepared`] takes them: rows grouped by (table, day) in
/// Arrow, rejections in input order. Keys are per (table, day), so grouping keeps which of two
/// records with one key is kept (the first).
pub(super) struct Prepared {
    groups: Vec<Group>,
    rejects: Vec<Outcome>,
}

impl Prepared {
    pub(super) fn new(outcomes: Vec<Outcome>) -> Result<Prepared, LakeError> {
        Prepared::with_text(outcomes, "", None)
    }

    /// [`Prepared::new`] of outcomes whose rows' external cells are ranges of `ext`, the chunk of
    /// lines they were mapped from ([`Mapper::text_at`]); `shared`, when given, is `ext` as an
    /// Arrow buffer, which columns of external cells are then views into (not copies of).
    pub(super) fn with_text(outcomes: Vec<Outcome>, ext: &str, shared: Option<&Buffer>) -> Result<Prepared, LakeError> {
        // (table, day, keys, rows), in order of first appearance.
        type Rows = (Table, Arc<str>, Vec<i64>, Vec<Row>);
        let mut groups: Vec<Rows> = Vec::new();
        let mut rejects = Vec::new();
        // A chunk's rows are mostly of one group: the first has room for all that are left.
        let mut left = outcomes.len();
        for o in outcomes {
            left -= 1;
            match o {
                Outcome::Row { table, day, key, row, .. } => {
                    let g = match groups.iter().position(|g| g.0 == table && g.1 == day) {
                        Some(g) => g,
                        None => {
                            let room = if groups.is_empty() { left + 1 } else { 0 };
                            groups.push((table, day, Vec::with_capacity(room), Vec::with_capacity(room)));
                            groups.len() - 1
                        }
                    };
                    groups[g].2.push(key);
                    groups[g].3.push(row);
                }
                reject => rejects.push(reject),
            }
        }
        let groups = groups
            .into_iter()
            .map(|(table, day, keys, rows)| Group::new(table, day, keys, rows, ext, shared))
            .collect::<Result<_, LakeError>>()?;
        Ok(Prepared { groups, rejects })
    }
}

/// Maps, enriches and keys records: everything per record that needs no shared state. Each
/// ingest thread has its own (its own lookup caches).
pub(super) struct Mapper {
    enricher: Enricher,
    pub(super) format: Format,
    keep_raw: bool,
    now_us: i64,
    /// The last day seen: `[start, end)` in µs and its folder name.
    day: (i64, i64, Arc<str>),
}

impl Mapper {
    fn new(enricher: Enricher, format: Format, keep_raw: bool, now_us: i64) -> Self {
        Mapper { enricher, format, keep_raw, now_us, day: (0, 0, Arc::from("")) }
    }

    /// A mapper for another thread: the same settings and databases, its own caches.
    pub(super) fn fork(&self) -> Mapper {
        let enricher = Enricher::new(self.enricher.asn.clone(), self.enricher.geo.clone());
        Mapper::new(enricher, self.format, self.keep_raw, self.now_us)
    }

    pub(super) fn reject(&self, pos: Pos, reason: &str, raw: &str) -> Outcome {
        Outcome::Reject { pos, reason: reason.to_string(), raw: raw.to_string() }
    }

    /// One record (already parsed): map, enrich, key.
    pub(super) fn record(&mut self, pos: Pos, v: &Value, raw: &str) -> Outcome {
        match map_record(v, self.format) {
            Ok(m) => self.place(m, raw),
            Err(reason) => Outcome::Reject { pos, reason, raw: raw.to_string() },
        }
    }

    /// A record built in memory as a tree (the generator's `--as lake`), mapped as the same
    /// record in a file is: its text kept as `raw` only when asked. (Records written as text go
    /// through [`Mapper::text_at`] in chunks, as the lines of an export do.)
    pub(super) fn generated(&mut self, pos: Pos, v: &Value, out: &mut Vec<Outcome>) {
        let raw = if self.keep_raw { serde_json::to_string(v).expect("Value serializes") } else { String::new() };
        // A tree of a category the typed reader reads (Graph calls), whose text is made
        // anyway: read as that text, as the line of an export would be.
        let typed = self.keep_raw
            && matches!(self.format, Format::Auto | Format::Diagnostic)
            && v.get("category").and_then(Value::as_str).is_some_and(formats::typed::reads_category);
        if let Some(m) = typed.then(|| formats::typed::diagnostic_compact(&raw)).flatten() {
            out.push(self.place_compact(m, &raw, None));
            return;
        }
        out.push(self.record(pos, v, &raw))
    }

    /// One JSON text (a line of an export, a generated record): the typed reader's row when it is
    /// sure of the shape (diagnostic-settings sign-ins and Graph calls), else parsed and mapped,
    /// an envelope's records each. The error is the parse's: the caller sets the text aside at `pos`.
    pub(super) fn text(&mut self, pos: Pos, text: &str, out: &mut Vec<Outcome>) -> Result<(), serde_json::Error> {
        self.text_at(pos, text, None, out)
    }

    /// [`Mapper::text`] of a text at byte `at` of the chunk its outcomes are prepared with
    /// ([`Prepared::with_text`]): a typed row's `raw` is then that range of the chunk, not a copy.
    pub(super) fn text_at(
        &mut self,
        pos: Pos,
        text: &str,
        at: Option<usize>,
        out: &mut Vec<Outcome>,
    ) -> Result<(), serde_json::Error> {
        let text = text.trim_end();
        if matches!(self.format, Format::Auto | Format::Diagnostic) {
            let apart = at.filter(|_| self.keep_raw);
            if let Some(m) = formats::typed::compact_with(text, apart.is_none(), self.format == Format::Auto) {
                out.push(self.place_compact(m, text, apart));
                return Ok(());
            }
        }
        // The same value as serde_json's (`formats::json`), which parses it again only to say
        // what is wrong with a line the faster reader did not take.
        let v = match formats::json::from_str::<Value>(text) {
            Ok(v) => v,
            Err(_) => serde_json::from_str::<Value>(text)?,
        };
        self.value(pos, v, text, out);
        Ok(())
    }

    pub(super) fn place(&mut self, m: Mapped, raw: &str) -> Outcome {
        let Mapped { table, ts, dedup_id, mut row, ingested_at } = m;
        let key = key_of(table, dedup_id.as_deref(), raw);
        row[0] = Value::from(ts);
        row[1] = Value::from(ingested_at.unwrap_or(self.now_us));
        row[2] = if self.keep_raw { Value::String(raw.to_string()) } else { Value::Null };
        row[3] = Value::from(key);
        self.enricher.apply(table, &mut row[..]);
        Outcome::Row { table, day: self.day_of(ts), key, row: Row::Values(row), bytes: raw.len() + 256 }
    }

    /// [`Mapper::place`] for a record the typed reader read: the same row, kept compact; its
    /// `raw` the range of the chunk at byte `at` when given (not copied), else a copy.
    fn place_compact(&mut self, m: formats::typed::CompactMapped, raw: &str, at: Option<usize>) -> Outcome {
        let formats::typed::CompactMapped { table, ts, id, mut row } = m;
        let key = key_of(table, id.as_deref(), raw);
        row.set_int(0, ts);
        row.set_int(1, self.now_us);
        if !at.is_some_and(|at| row.set_ext(2, at, at + raw.len())) {
            row.set_opt_str(2, self.keep_raw.then_some(raw));
        }
        row.set_int(3, key);
        self.enricher.apply(table, &mut row);
        Outcome::Row { table, day: self.day_of(ts), key, row: Row::Compact(row), bytes: raw.len() + 256 }
    }

    /// The day folder of a time (the last one is kept: records come mostly in time order).
    fn day_of(&mut self, ts: i64) -> Arc<str> {
        if !(self.day.0..self.day.1).contains(&ts) {
            let start = ts.div_euclid(86_400_000_000) * 86_400_000_000;
            self.day = (start, start + 86_400_000_000, Arc::from(day_of(ts)));
        }
        self.day.2.clone()
    }

    /// A parsed JSON value at `pos` that may be an envelope of records: the k-th record of an
    /// envelope on line l is at `LineRecord(l, k)`; of one that is record r, at `Record(r + k)`.
    pub(super) fn value(&mut self, pos: Pos, v: Value, raw: &str, out: &mut Vec<Outcome>) {
        if let Some(items) = formats::envelope::items(&v) {
            for (k, item) in items.iter().enumerate() {
                let k = k as u64;
                let pos = match pos {
                    Pos::Line(l) | Pos::LineRecord(l, _) => Pos::LineRecord(l, k),
                    Pos::Record(r) => Pos::Record(r + k),
                };
                let raw = serde_json::to_string(item).expect("Value serializes");
                out.push(self.record(pos, item, &raw));
            }
            return;
        }
        out.push(self.record(pos, &v, raw));
    }
}

/// One ingest run: the writers, the mappers and the running summary.
pub(super) struct Run {
    writer: LakeWriter,
    rejects: RejectWriter,
    /// The run's own mapper (sequential inputs), and the threads that map JSON lines and
    /// generated records in parallel (none with one thread).
    pub(super) mapper: Mapper,
    pub(super) pool: Option<Pool>,
    /// Bytes of JSON lines per chunk.
    pub(super) chunk_bytes: usize,
    /// Local, uncompressed JSON lines are mapped, not read (`chunks::MappedFile`).
    pub(super) mmap: bool,
    pub(super) summary: Summary,
    pub(super) format: Format,
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
        let mapper = Mapper::new(Enricher::new(asn, geo), opts.format, opts.keep_raw, now.timestamp_micros());
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let pool = (threads > 1).then(|| Pool::start((0..threads).map(|_| mapper.fork()).collect()));
        // Encoding a file takes about a third of an ingest's CPU: with one thread per core
        // mapping, one encoding thread would leave cores idle while files wait for it.
        let encoders = if threads > 1 { threads.div_ceil(2).max(2) } else { 1 };
        let run = Run {
            writer: LakeWriter::new(lake.clone(), run_id.clone(), handle.clone(), encoders),
            rejects: RejectWriter::new(
                lake.clone(),
                run_id.clone(),
                now.format("%Y-%m-%d").to_string(),
                handle.clone(),
            ),
            mapper,
            pool,
            chunk_bytes: opts.chunk_bytes.max(1),
            mmap: opts.mmap,
            summary: Summary::default(),
            format: opts.format,
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
        let Run { writer, mut rejects, mut summary, mapper, lock, .. } = self;
        let stats = writer.finish()?;
        // Every file written: the chunks its batches pointed into are spare now, and not needed.
        super::chunks::release();
        rejects.flush()?;
        summary.parquet_files = stats.files.len() as u64;
        summary.unreadable = unreadable;
        source::write_manifest(
            lake,
            handle,
            run_id,
            entries,
            &summary,
            mapper.enricher.asn.as_deref(),
            mapper.enricher.geo.as_deref(),
        )?;
        drop(lock);
        Ok(summary)
    }

    /// Re-enriches the rows already in the lake (holding the run's write lock).
    pub(super) fn reenrich(&mut self, lake: &Lake, handle: &tokio::runtime::Handle) -> Result<(), IngestError> {
        let r = handle.block_on(super::reenrich::reenrich(lake, &mut self.mapper.enricher))?;
        self.summary.reenriched = Some(r);
        Ok(())
    }

    /// Takes one outcome, in input order: de-duplicates and buffers a row, or sets a rejection
    /// aside, and counts it.
    pub(super) fn commit(&mut self, file: &str, o: Outcome) -> Result<(), LakeError> {
        self.summary.read += 1;
        if self.summary.read.is_multiple_of(16_384) && !self.bar.is_hidden() {
            self.bar.set_message(format!("{} records", self.summary.read));
        }
        match o {
            Outcome::Row { table, day, key, row, bytes } => {
                if self.writer.push(table, &day, key, row.into_values(), bytes)? {
                    *self.summary.written.entry(table.name().to_string()).or_default() += 1;
                } else {
                    self.summary.duplicates += 1;
                }
            }
            Outcome::Reject { pos, reason, raw } => {
                *self.summary.rejected.entry(reason_class(&reason)).or_default() += 1;
                let mut m = Map::new();
                m.insert("source".into(), file.into());
                pos.json(&mut m);
                m.insert("reason".into(), reason.into());
                m.insert("raw".into(), raw.into());
                self.rejects.push(&Value::Object(m))?;
            }
        }
        Ok(())
    }

    /// Takes one chunk's prepared rows and rejections (see [`Prepared`]); the chunk starts after
    /// line `lines_before` of its file.
    pub(super) fn commit_prepared(&mut self, file: &str, p: Prepared, lines_before: u64) -> Result<(), LakeError> {
        let before = self.summary.read;
        for g in p.groups {
            let n = g.read;
            let added = self.writer.push_batch(g.table, &g.day, &g.keys, g.batch)?;
            self.summary.read += n;
            if added > 0 {
                *self.summary.written.entry(g.table.name().to_string()).or_default() += added;
            }
            self.summary.duplicates += n - added;
        }
        if before / 16_384 != self.summary.read / 16_384 && !self.bar.is_hidden() {
            self.bar.set_message(format!("{} records", self.summary.read));
        }
        p.rejects.into_iter().try_for_each(|o| match o {
            Outcome::Reject { pos, reason, raw } => {
                self.commit(file, Outcome::Reject { pos: pos.after_lines(lines_before), reason, raw })
            }
            row => self.commit(file, row),
        })
    }

    pub(super) fn reject(&mut self, file: &str, pos: Pos, reason: &str, raw: &str) -> Result<(), LakeError> {
        let o = self.mapper.reject(pos, reason, raw);
        self.commit(file, o)
    }

    /// One record (already parsed): map, enrich, de-duplicate, buffer.
    pub(super) fn record(&mut self, file: &str, pos: Pos, v: &Value, raw: &str) -> Result<(), LakeError> {
        let o = self.mapper.record(pos, v, raw);
        self.commit(file, o)
    }

    pub(super) fn place(&mut self, file: &str, m: Mapped, raw: &str) -> Result<(), LakeError> {
        let o = self.mapper.place(m, raw);
        self.commit(file, o)
    }

    /// A parsed JSON value that may be an envelope of records.
    pub(super) fn value(&mut self, file: &str, pos: Pos, v: Value, raw: &str) -> Result<(), LakeError> {
        let mut out = Vec::new();
        self.mapper.value(pos, v, raw, &mut out);
        out.into_iter().try_for_each(|o| self.commit(file, o))
    }
}

/// Feeds records built in memory (the generator's `--as lake`) through the same mapping,
/// enrichment, de-duplication and writer as files, with the same accounting; with several
/// threads, batches of records are mapped in parallel and committed in order. Records written as
/// JSON text go into chunks of lines mapped as a file's chunks are (the same typed reader, the
/// same `raw` taken from the chunk); records built as trees go in batches of trees.
pub struct RecordSink {
    run: Run,
    lake: Lake,
    handle: tokio::runtime::Handle,
    run_id: String,
    /// Trees not yet handed to a mapping thread.
    pending: Vec<Value>,
    /// Lines of JSON text not yet handed to a mapping thread (and how many), and spent chunks'
    /// buffers.
    chunk: String,
    chunk_lines: u64,
    spare: Vec<Vec<u8>>,
    /// Records handed over (the next one's index), records committed, and the records of each
    /// job in flight, oldest first.
    sent: u64,
    committed: u64,
    in_flight: std::collections::VecDeque<u64>,
}

/// Records per batch of trees handed to a mapping thread.
const SINK_BATCH: usize = 4096;

impl RecordSink {
    /// Must be created and used on a blocking thread inside a Tokio runtime.
    pub fn new(lake: &Lake, opts: &IngestOptions, handle: tokio::runtime::Handle) -> Result<Self, IngestError> {
        let (run, run_id, _) = Run::open(lake, opts, &handle, "-gen", indicatif::ProgressBar::hidden())?;
        Ok(RecordSink {
            run,
            lake: lake.clone(),
            handle,
            run_id,
            pending: Vec::new(),
            chunk: String::new(),
            chunk_lines: 0,
            spare: Vec::new(),
            sent: 0,
            committed: 0,
            in_flight: Default::default(),
        })
    }

    /// One record, as it would appear in an export.
    pub fn push(&mut self, v: Value) -> Result<(), IngestError> {
        if !self.chunk.is_empty() {
            self.send_chunk()?;
        }
        self.pending.push(v);
        if self.pending.len() >= SINK_BATCH {
            self.send()?;
        }
        Ok(())
    }

    /// One record as one line of JSON text, as it would appear in an export: `write` appends it
    /// (without a newline) to the chunk being filled.
    pub fn push_text(&mut self, write: impl FnOnce(&mut String)) -> Result<(), IngestError> {
        if !self.pending.is_empty() {
            self.send()?;
        }
        if self.chunk.capacity() == 0 {
            // A spent chunk's buffer, cleared: valid UTF-8.
            let mut buf = self.spare.pop().unwrap_or_default();
            buf.clear();
            buf.reserve(self.run.chunk_bytes + (64 << 10));
            self.chunk = String::from_utf8(buf).expect("an empty buffer");
        }
        write(&mut self.chunk);
        self.chunk.push('\n');
        self.chunk_lines += 1;
        if self.chunk.len() >= self.run.chunk_bytes {
            self.send_chunk()?;
        }
        Ok(())
    }

    /// Hands the pending trees to the pool (or maps them here), committing what comes back.
    fn send(&mut self) -> Result<(), IngestError> {
        let values = std::mem::take(&mut self.pending);
        let first = self.sent;
        self.sent += values.len() as u64;
        self.in_flight.push_back(values.len() as u64);
        let done = match self.run.pool.as_mut() {
            Some(pool) => pool.submit(Job::Values { first, values }),
            None => Some(super::pool::map_values(&mut self.run.mapper, first, values)),
        };
        done.map_or(Ok(()), |d| self.commit(d))
    }

    /// Hands the chunk of lines to the pool (or maps it here), committing what comes back.
    fn send_chunk(&mut self) -> Result<(), IngestError> {
        let chunk = std::mem::take(&mut self.chunk).into_bytes();
        let records = std::mem::take(&mut self.chunk_lines);
        self.sent += records;
        self.in_flight.push_back(records);
        let done = match self.run.pool.as_mut() {
            Some(pool) => pool.submit(Job::Lines(chunk.into())),
            None => Some(Done::Lines(super::readers::map_lines(&mut self.run.mapper, chunk.into()))),
        };
        done.map_or(Ok(()), |d| self.commit(d))
    }

    fn commit(&mut self, done: Done) -> Result<(), IngestError> {
        // A rejected line's position counts the records before its chunk.
        let before = self.committed;
        self.committed += self.in_flight.pop_front().expect("a job in flight");
        match done {
            Done::Values(p) => self.run.commit_prepared("generator", p?, 0)?,
            Done::Lines(out) => {
                let (prepared, chunk) = out.into_parts();
                self.spare.push(chunk);
                self.run.commit_prepared("generator", prepared?, before)?
            }
        }
        Ok(())
    }

    /// Flushes everything and records the run in the manifest.
    pub fn finish(mut self) -> Result<Summary, IngestError> {
        if !self.pending.is_empty() {
            self.send()?;
        }
        if !self.chunk.is_empty() {
            self.send_chunk()?;
        }
        while let Some(done) = self.run.pool.as_mut().and_then(Pool::next) {
            self.commit(done)?;
        }
        self.run.finish(&self.lake, &self.handle, &self.run_id, &[], Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;

    /// A line the typed reader takes becomes the outcome the general path makes of it: the same
    /// table, day, key and bytes, and a compact row whose values are the general row (the raw line
    /// kept or left out, the ingest time, the key).
    #[test]
    fn a_compact_row_is_placed_as_the_general_path_places_it() {
        let line = r#"{"time":"2026-11-19T10:56:07.5528720Z","category":"ServicePrincipalSignInLogs","operationName":"Sign-in activity","callerIpAddress":"11.4.120.85","resultType":"0","tenantId":"t-1","properties":{"id":"id-1","createdDateTime":"2026-11-19T10:56:07.5528720Z","servicePrincipalId":"sp-1","appId":"app-1","ipAddress":"11.4.120.85","status":{"errorCode":7000215,"failureReason":"bad secret"},"isInteractive":false,"autonomousSystemNumber":8075}}"#;
        let no_id = line.replace(r#""id":"id-1","#, "");
        let graph = r#"{"time":"2026-11-19T10:56:07.5528720Z","category":"MicrosoftGraphActivityLogs","callerIpAddress":"11.4.120.85","tenantId":"t-1","properties":{"requestId":"r-1","timeGenerated":"2026-11-19T10:56:07Z","servicePrincipalId":"sp-1","appId":"app-1","ipAddress":"11.4.120.85","requestMethod":"GET","roles":["a","b"],"responseStatusCode":200,"clientAuthMethod":"2","responseSizeBytes":364}}"#;
        for keep_raw in [true, false] {
            for text in [line, no_id.as_str(), graph] {
                let mut m = Mapper::new(Enricher::new(None, None), Format::Auto, keep_raw, 1_700_000_000_000_000);
                let mut typed = Vec::new();
                m.text(Pos::Line(1), text, &mut typed).unwrap();
                let mut general = Vec::new();
                m.value(Pos::Line(1), serde_json::from_str(text).unwrap(), text, &mut general);
                let (
                    [Outcome::Row { table: t1, day: d1, key: k1, row: r1 @ Row::Compact(_), bytes: b1 }],
                    [Outcome::Row { table: t2, day: d2, key: k2, row: r2 @ Row::Values(_), bytes: b2 }],
                ) = (&mut typed[..], &mut general[..])
                else {
                    panic!("expected one compact row and one row of values");
                };
                assert_eq!((*t1, d1.as_ref(), *k1, *b1), (*t2, d2.as_ref(), *k2, *b2));
                let r1 = std::mem::replace(r1, Row::Values(Vec::new())).into_values();
                let r2 = std::mem::replace(r2, Row::Values(Vec::new())).into_values();
                assert_eq!(r1, r2, "keep_raw {keep_raw}: {text}");
                assert_eq!(r1[2].as_str(), keep_raw.then_some(text));
            }
        }
    }

    /// A batch with its view columns cast to the table's types (the same text).
    fn as_stored(batch: &RecordBatch, table: Table) -> RecordBatch {
        crate::rollups::cast_to(batch, &table.schema()).unwrap()
    }

    /// A chunk of lines maps to the groups its lines map to one by one: typed rows whose `raw`
    /// is a range of the chunk (not a copy) make the same batches as rows holding their own
    /// text, beside rows of the general path in one group; a chunk that is not UTF-8 throughout
    /// (one bad line, set aside) makes the same batches too.
    #[test]
    fn a_chunks_rows_keep_raw_as_ranges_of_it_to_the_same_batches() {
        let signin = r#"{"time":"2026-11-19T10:56:07.5528720Z","category":"ServicePrincipalSignInLogs","operationName":"Sign-in activity","callerIpAddress":"11.4.120.85","resultType":"0","tenantId":"t-1","properties":{"id":"ID","createdDateTime":"2026-11-19T10:56:07.5528720Z","servicePrincipalId":"sp-1","appId":"app-1","appDisplayName":"Zürich app ✓","ipAddress":"11.4.120.85","status":{"errorCode":0},"isInteractive":false}}"#;
        let graph = r#"{"time":"2026-11-19T09:56:07.5528720Z","category":"MicrosoftGraphActivityLogs","callerIpAddress":"11.4.120.85","tenantId":"t-1","properties":{"requestId":"ID","timeGenerated":"2026-11-19T09:56:07Z","servicePrincipalId":"sp-1","requestMethod":"GET","responseStatusCode":200}}"#;
        // A sign-in the typed reader leaves to the general path (a properties value of a type it
        // does not read), in the same table and day as the typed ones.
        let general = signin.replace(r#""isInteractive":false"#, r#""isInteractive":{"x":1}"#).replace("ID", "g-1");
        let mut text = String::new();
        for (i, t) in [signin, graph, &general, signin, "", graph].iter().enumerate() {
            text += &t.replace("ID", &format!("id-{}", 9 - i));
            text += if i % 2 == 0 { "\r\n" } else { "\n" };
        }
        for keep_raw in [true, false] {
            for bad in [false, true] {
                let mut chunk = text.clone().into_bytes();
                if bad {
                    chunk.extend_from_slice(b"{\"x\":\"\xff\"}\n");
                }
                let mapper = || Mapper::new(Enricher::new(None, None), Format::Auto, keep_raw, 1_700_000_000_000_000);
                let out = super::super::readers::map_lines(&mut mapper(), chunk.clone().into());
                let got = out.prepared.unwrap();
                let mut m = mapper();
                let mut outcomes = Vec::new();
                for (l, line) in chunk.split(|&b| b == b'\n').enumerate() {
                    let line = String::from_utf8_lossy(line).trim().to_string();
                    if !line.is_empty() && !line.contains('\u{fffd}') {
                        m.text(Pos::Line(l as u64 + 1), &line, &mut outcomes).unwrap();
                    }
                }
                let want = Prepared::new(outcomes).unwrap();
                assert_eq!(got.groups.len(), want.groups.len());
                assert_eq!(got.groups.len(), 2);
                for (g, w) in got.groups.iter().zip(&want.groups) {
                    assert_eq!((g.table, &g.day, g.read, &g.keys), (w.table, &w.day, w.read, &w.keys));
                    assert_eq!(as_stored(&g.batch, g.table), w.batch, "keep_raw {keep_raw}, bad line {bad}");
                }
                let raw = got.groups[0].batch.column(2);
                assert_eq!(raw.null_count(), if keep_raw { 0 } else { raw.len() });
                // Rows of two tables: copies, not views into the chunk (`map_lines`).
                assert!(got.groups.iter().all(|g| *g.batch.column(2).data_type() == DataType::Utf8));
                assert_eq!(got.rejects.len(), usize::from(bad));
            }
        }
    }

    /// A chunk whose typed rows are all of one (table, day) is handed over whole: their `raw` is
    /// views into the chunk's own bytes, the same text the lines make one by one; with a row of
    /// another day among them, copies.
    #[test]
    fn a_chunk_of_one_tables_typed_rows_is_shared_by_their_raw_views() {
        let graph = r#"{"time":"2026-11-19T09:56:07.5528720Z","category":"MicrosoftGraphActivityLogs","callerIpAddress":"11.4.120.85","tenantId":"t-1","properties":{"requestId":"ID","timeGenerated":"2026-11-19T09:56:07Z","servicePrincipalId":"sp-1","requestMethod":"GET","responseStatusCode":200}}"#;
        let lines: Vec<String> =
            (0..5).map(|i| graph.replace("ID", &format!("r-{i}")).replace("T09", &format!("T0{i}"))).collect();
        for next_day in [false, true] {
            let mut text = lines.join("\n") + "\n";
            if next_day {
                text += &graph.replace("ID", "r-9").replace("-19T", "-20T");
                text += "\n";
            }
            let chunk = text.into_bytes();
            let mapper = || Mapper::new(Enricher::new(None, None), Format::Auto, true, 1_700_000_000_000_000);
            let got = super::super::readers::map_lines(&mut mapper(), chunk.clone().into()).prepared.unwrap();
            let mut m = mapper();
            let mut outcomes = Vec::new();
            for (l, line) in std::str::from_utf8(&chunk).unwrap().lines().enumerate() {
                m.text(Pos::Line(l as u64 + 1), line, &mut outcomes).unwrap();
            }
            let want = Prepared::new(outcomes).unwrap();
            assert_eq!(got.groups.len(), 1 + usize::from(next_day));
            for (g, w) in got.groups.iter().zip(&want.groups) {
                assert_eq!((g.table, &g.day, &g.keys), (w.table, &w.day, &w.keys));
                assert_eq!(as_stored(&g.batch, g.table), w.batch);
                let raw = g.batch.column(2);
                assert_eq!(*raw.data_type() == DataType::Utf8View, !next_day, "views only for one group");
                if !next_day {
                    let views = raw.as_string_view();
                    assert_eq!(views.data_buffers().len(), 1);
                    assert_eq!(views.data_buffers()[0].as_slice(), &chunk[..], "views into the chunk's bytes");
                }
            }
        }
    }

    /// A generated Graph call or audit record (a tree) is read as its text by the typed reader, to
    /// the row the general path makes of the tree; a tree of another category stays on the
    /// general path.
    #[test]
    fn a_generated_graph_call_takes_the_typed_reader() {
        let graph: Value = serde_json::json!({"time": "2026-11-19T10:56:07Z", "category": "MicrosoftGraphActivityLogs",
            "callerIpAddress": "11.4.120.85", "properties": {"requestId": "r-1", "servicePrincipalId": "sp-1",
            "roles": ["a", "b"], "responseStatusCode": 200, "timeGenerated": "2026-11-19T10:56:07Z"}});
        let mut audit = graph.clone();
        audit["category"] = Value::from("AuditLogs");
        audit["properties"] = serde_json::json!({"id": "a-1", "activityDisplayName": "Add service principal",
            "targetResources": [{"id": "sp-9", "modifiedProperties": [{"displayName": "KeyDescription"}]}]});
        let mut risk = graph.clone();
        risk["category"] = Value::from("ServicePrincipalRiskEvents");
        risk["properties"] = serde_json::json!({"id": "k-1", "servicePrincipalId": "sp-1", "riskEventType": "x"});
        for (v, compact) in [(graph, true), (audit, true), (risk, false)] {
            let mut m = Mapper::new(Enricher::new(None, None), Format::Auto, true, 1_700_000_000_000_000);
            let mut out = Vec::new();
            m.generated(Pos::Line(1), &v, &mut out);
            let raw = serde_json::to_string(&v).unwrap();
            let general = m.record(Pos::Line(1), &v, &raw);
            let ([Outcome::Row { key: k1, row: r1, .. }], Outcome::Row { key: k2, row: r2, .. }) =
                (&mut out[..], general)
            else {
                panic!("expected rows");
            };
            assert_eq!(matches!(r1, Row::Compact(_)), compact);
            assert_eq!(*k1, k2);
            let r1 = std::mem::replace(r1, Row::Values(Vec::new())).into_values();
            assert_eq!(r1, r2.into_values());
        }
    }
}
