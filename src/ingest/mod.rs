//! Ingest: discover inputs, read them (gzip, JSON lines, JSON documents, CSV), recognize each
//! record's format and table, normalize and enrich it once, and hand rows to the lake writer.
//! Every record read ends in exactly one place: a table, `_rejected/`, or the duplicate count.

pub mod formats;
pub mod normalize;
pub mod source;

use crate::lake::{Lake, LakeError, LakeWriter, RejectWriter, Table};
use formats::{map_record, Format, Mapped};
use normalize::{day_of, fnv64};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use source::{InputFile, ManifestEntry};
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::sync::Arc;
use wisp_udfs::db::{AsnCache, GeoCache};
use wisp_udfs::{AsnDb, GeoDb};

/// Ingest failed as a whole (a single bad input is not this: it is counted and reported).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Db(#[from] wisp_udfs::DbError),
    #[error("no input given: name files, folders or globs to ingest")]
    NoInput,
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
}

/// The closing summary: read = Σ written + Σ rejected + duplicates.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub read: u64,
    pub written: BTreeMap<String, u64>,
    pub rejected: BTreeMap<String, u64>,
    pub duplicates: u64,
    pub files: u64,
    /// Files skipped because the manifest shows them already ingested, unchanged.
    pub files_unchanged: u64,
    /// Inputs that could not be read at all, with the reason.
    pub unreadable: Vec<String>,
    pub parquet_files: u64,
    pub bytes: u64,
}

impl Summary {
    pub fn written_total(&self) -> u64 {
        self.written.values().sum()
    }
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
    /// True when every record read is accounted for.
    pub fn balanced(&self) -> bool {
        self.read == self.written_total() + self.rejected_total() + self.duplicates
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "read {} records from {} files ({} bytes; {} unchanged files skipped)",
            self.read, self.files, self.bytes, self.files_unchanged
        )?;
        for (t, n) in &self.written {
            writeln!(f, "  written  {t:<16} {n}")?;
        }
        for (r, n) in &self.rejected {
            writeln!(f, "  rejected {r:<40} {n}")?;
        }
        writeln!(f, "  duplicates skipped {}", self.duplicates)?;
        for u in &self.unreadable {
            writeln!(f, "  unreadable: {u}")?;
        }
        write!(f, "{} Parquet files written", self.parquet_files)
    }
}

/// A short, countable class of a rejection reason (the full reason goes to `_rejected/`).
pub fn reason_class(reason: &str) -> String {
    if reason.starts_with("missing or unparsable timestamp") {
        return "missing or unparsable timestamp".into();
    }
    if reason.starts_with("CSV row has") {
        return "CSV row with the wrong number of fields".into();
    }
    reason.split([':', '\'', '(']).next().unwrap_or(reason).trim().to_string()
}

struct Enricher {
    asn: Option<Arc<AsnDb>>,
    geo: Option<Arc<GeoDb>>,
    asn_cache: AsnCache,
    geo_cache: GeoCache,
}

impl Enricher {
    fn apply(&mut self, table: Table, row: &mut [Value]) {
        let (Some(ip_i), true) = (table.col("source_ip"), self.asn.is_some() || self.geo.is_some()) else {
            return;
        };
        let Some(ip) = row[ip_i].as_str().and_then(wisp_udfs::ip::parse_ip) else {
            return;
        };
        if let (Some(db), Some(asn_i), Some(org_i)) = (&self.asn, table.col("source_asn"), table.col("source_as_org")) {
            if self.asn_cache.len() > 100_000 {
                self.asn_cache.clear();
            }
            if let Some(hit) = db.lookup(ip, &mut self.asn_cache) {
                row[asn_i] = Value::from(hit.number);
                row[org_i] = hit.organization.map(|o| Value::String(o.to_string())).unwrap_or(Value::Null);
            }
        }
        if let (Some(db), Some(c_i), Some(city_i)) = (&self.geo, table.col("country"), table.col("city")) {
            if row[c_i].is_null() {
                if self.geo_cache.len() > 100_000 {
                    self.geo_cache.clear();
                }
                if let Some(g) = db.lookup(ip, &mut self.geo_cache) {
                    row[c_i] = g.country_iso.map(Value::String).unwrap_or(Value::Null);
                    if row[city_i].is_null() {
                        row[city_i] = g.city.map(Value::String).unwrap_or(Value::Null);
                    }
                }
            }
        }
    }
}

/// Where a record came from, for rejects.
#[derive(Clone, Copy)]
enum Pos {
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

struct Run {
    writer: LakeWriter,
    rejects: RejectWriter,
    enricher: Enricher,
    summary: Summary,
    format: Format,
    keep_raw: bool,
    now_us: i64,
    /// The progress bar (hidden when not on a terminal): bytes as its position, records as its message.
    bar: indicatif::ProgressBar,
}

impl Run {
    /// Opens the databases and the writers of one ingest run; the run id ends with `tag`.
    fn open(
        lake: &Lake,
        opts: &IngestOptions,
        handle: &tokio::runtime::Handle,
        tag: &str,
        bar: indicatif::ProgressBar,
    ) -> Result<(Run, String), IngestError> {
        let asn = opts.asn_db.as_ref().map(AsnDb::open).transpose()?.map(Arc::new);
        let geo = opts.geo_db.as_ref().map(GeoDb::open).transpose()?.map(Arc::new);
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
            enricher: Enricher { asn, geo, asn_cache: AsnCache::new(), geo_cache: GeoCache::new() },
            summary: Summary::default(),
            format: opts.format,
            keep_raw: opts.keep_raw,
            now_us: now.timestamp_micros(),
            bar,
        };
        Ok((run, run_id))
    }

    /// Flushes the writers and records the run (and the files it read) in the manifest.
    fn finish(
        self,
        lake: &Lake,
        handle: &tokio::runtime::Handle,
        run_id: &str,
        entries: &[source::ManifestEntry],
        unreadable: Vec<String>,
    ) -> Result<Summary, IngestError> {
        let Run { writer, mut rejects, mut summary, enricher, .. } = self;
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
        Ok(summary)
    }

    fn reject(&mut self, file: &str, pos: Pos, reason: &str, raw: &str) -> Result<(), LakeError> {
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
    fn record(&mut self, file: &str, pos: Pos, v: &Value, raw: &str) -> Result<(), LakeError> {
        let mapped = match map_record(v, self.format) {
            Ok(m) => m,
            Err(reason) => return self.reject(file, pos, &reason, raw),
        };
        self.place(mapped, raw)
    }

    fn place(&mut self, m: Mapped, raw: &str) -> Result<(), LakeError> {
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
    fn value(&mut self, file: &str, pos_line: Option<u64>, v: Value, raw: &str) -> Result<(), LakeError> {
        if let Some(items) = envelope_items(&v) {
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
        let (run, run_id) = Run::open(lake, opts, &handle, "-gen", indicatif::ProgressBar::hidden())?;
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

/// Records inside an envelope: diagnostic `records[]`, Graph `value[]`, search `hits.hits[]._source`,
/// or a top-level array.
fn envelope_items(v: &Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) => Some(a.clone()),
        Value::Object(o) => {
            if let Some(Value::Array(a)) = o.get("records") {
                return Some(a.clone());
            }
            // Elastic pipeline test files: {"expected": [ECS documents]}.
            if let (Some(Value::Array(a)), 1) = (o.get("expected"), o.len()) {
                return Some(a.clone());
            }
            if let Some(Value::Array(a)) = o.get("value") {
                if o.contains_key("@odata.context") || o.contains_key("@odata.nextLink") || o.len() <= 3 {
                    return Some(a.clone());
                }
            }
            if let Some(Value::Array(h)) = o.get("hits").and_then(|h| h.get("hits")) {
                return Some(h.iter().map(|x| x.get("_source").cloned().unwrap_or_else(|| x.clone())).collect());
            }
            if let Some(src) = o.get("_source") {
                if o.contains_key("_index") {
                    return Some(vec![src.clone()]);
                }
            }
            None
        }
        _ => None,
    }
}

/// Ingests every input into the lake. Runs the CPU-bound parsing on a blocking thread.
pub async fn ingest(lake: &Lake, opts: &IngestOptions) -> Result<Summary, IngestError> {
    if opts.inputs.is_empty() {
        return Err(IngestError::NoInput);
    }
    let lake = lake.clone();
    let opts = opts.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || ingest_blocking(&lake, &opts, handle))
        .await
        .map_err(|e| IngestError::Join(e.to_string()))?
}

fn ingest_blocking(lake: &Lake, opts: &IngestOptions, handle: tokio::runtime::Handle) -> Result<Summary, IngestError> {
    let (mut run, run_id) = Run::open(lake, opts, &handle, "", indicatif::ProgressBar::hidden())?;
    let manifest = source::Manifest::load(lake, &handle)?;
    let (files, mut unreadable) = source::discover(&opts.inputs);
    let total_bytes: u64 = files.iter().map(|f| f.size).sum();
    let bar = progress_bar(opts.progress, total_bytes);
    run.bar = bar.clone();
    let mut entries = Vec::new();
    for f in &files {
        run.summary.files += 1;
        let prior = manifest.get(&f.url);
        match ingest_file(&mut run, f, prior, &bar) {
            Ok(Some(entry)) => entries.push(entry),
            Ok(None) => run.summary.files_unchanged += 1,
            Err(FileError::Lake(e)) => return Err(e.into()),
            Err(FileError::Read(msg)) => unreadable.push(format!("{}: {msg}", f.display)),
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

enum FileError {
    Lake(LakeError),
    Read(String),
}

impl From<LakeError> for FileError {
    fn from(e: LakeError) -> Self {
        FileError::Lake(e)
    }
}

/// Ingests one file. Returns `None` when the manifest shows it unchanged.
fn ingest_file(
    run: &mut Run,
    f: &InputFile,
    prior: Option<&ManifestEntry>,
    bar: &indicatif::ProgressBar,
) -> Result<Option<ManifestEntry>, FileError> {
    let head = f.head_hash(source::HEAD_LEN).map_err(FileError::Read)?;
    let mut start = (0u64, 0u64);
    if let Some(p) = prior {
        // Compare the same leading bytes the earlier run hashed: a grown file keeps its head.
        let same_head = if p.head_len == f.size.min(source::HEAD_LEN) {
            p.head_hash == head
        } else {
            p.head_len <= f.size && f.head_hash(p.head_len).map_err(FileError::Read)? == p.head_hash
        };
        if same_head && p.size == f.size && p.consumed_bytes == f.size {
            return Ok(None);
        }
        if same_head && p.resumable && f.size > p.consumed_bytes {
            start = (p.consumed_bytes, p.consumed_lines); // an append blob that grew
        }
    }
    run.summary.bytes += f.size - start.0;
    let counted = CountingReader { inner: f.open(start.0).map_err(FileError::Read)?, n: 0, bar: bar.clone() };
    let mut reader: Box<dyn BufRead> = if f.gzip {
        Box::new(std::io::BufReader::with_capacity(1 << 20, flate2::read::MultiGzDecoder::new(counted)))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 20, counted))
    };
    let display = f.display.clone();
    let mut first = Vec::new();
    let read_err = |e: std::io::Error| FileError::Read(e.to_string());
    // Skip leading blank lines to find the shape.
    let mut lines_before = 0u64;
    let mut offset = start.0;
    loop {
        first.clear();
        let n = match reader.read_until(b'\n', &mut first) {
            Ok(n) => n,
            // A 0-byte or truncated gzip is an empty file for our purposes when nothing was read.
            Err(e) if f.gzip && e.kind() == std::io::ErrorKind::UnexpectedEof && offset == 0 => 0,
            Err(e) => return Err(read_err(e)),
        };
        if n == 0 {
            return Ok(Some(f.entry(head, f.size, start.1 + lines_before, !f.gzip)));
        }
        if first.iter().all(u8::is_ascii_whitespace) {
            lines_before += 1;
            offset += n as u64;
            continue;
        }
        break;
    }
    let lead = first.iter().find(|b| !b.is_ascii_whitespace()).copied().unwrap_or(b' ');
    let forced_csv = matches!(run.format, Format::NetworkCsv)
        || (run.format == Format::LogAnalytics && lead != b'{' && lead != b'[');
    let not_json = lead != b'{' && lead != b'[' && !first.starts_with(&[0xef, 0xbb, 0xbf, b'{']);
    if (forced_csv || not_json) && (lead.is_ascii_graphic() || lead >= 0x80) {
        let mut all = first.clone();
        reader.read_to_end(&mut all).map_err(read_err)?;
        csv_file(run, &display, &all, start.1 + lines_before)?;
        return Ok(Some(f.entry(head, f.size, 0, false)));
    }
    if lead == b'[' {
        // A JSON array (a Log Analytics or O365 export): streamed element by element.
        json_array(run, &display, first, &mut reader)?;
        return Ok(Some(f.entry(head, f.size, 0, false)));
    }
    let first_ok = serde_json::from_slice::<Value>(trim_bom(&first)).ok();
    if first_ok.is_none() && (lead == b'[' || lead == b'{') {
        // A pretty-printed or single-line document: read it whole.
        let mut all = first.clone();
        reader.read_to_end(&mut all).map_err(read_err)?;
        match serde_json::from_slice::<Value>(trim_bom(&all)) {
            Ok(v) => {
                let raw = String::from_utf8_lossy(&all).trim().to_string();
                run.value(&display, None, v, &raw)?;
                return Ok(Some(f.entry(head, f.size, 0, false)));
            }
            Err(_) if all.iter().filter(|&&b| b == b'\n').count() <= 1 => {
                let raw = String::from_utf8_lossy(&all).trim().to_string();
                let line = start.1 + lines_before + 1;
                let err = serde_json::from_slice::<Value>(trim_bom(&all)).unwrap_err();
                run.reject(&display, Pos::Line(line), &json_reason(&err, &all), &raw)?;
                return Ok(Some(f.entry(head, f.size, start.1 + lines_before + 1, !f.gzip)));
            }
            Err(_) => {
                // Not one document: JSON lines whose first line is broken.
                let mut cursor = std::io::Cursor::new(all);
                let (lines, consumed) = json_lines(run, &display, &mut cursor, start.1 + lines_before, Vec::new())?;
                let _ = consumed;
                return Ok(Some(f.entry(head, f.size, lines, false)));
            }
        }
    }
    let (lines, consumed) = json_lines(run, &display, &mut reader, start.1 + lines_before, first)?;
    let consumed_bytes = offset + consumed;
    let size = if f.gzip { f.size } else { consumed_bytes };
    Ok(Some(f.entry(head, size, lines, !f.gzip)))
}

/// Streams the elements of a top-level JSON array without holding the whole document: each
/// element is one record (index from 0). A malformed or truncated element is rejected; the rest
/// of the array still ingests.
fn json_array(run: &mut Run, file: &str, first: Vec<u8>, reader: &mut dyn BufRead) -> Result<(), FileError> {
    let mut depth = 0usize; // 1 = inside the top-level array
    let (mut in_str, mut esc) = (false, false);
    let mut elem: Vec<u8> = Vec::new();
    let mut index = 0u64;
    let mut done = false;
    let emit = |run: &mut Run, elem: &mut Vec<u8>, index: &mut u64| -> Result<(), FileError> {
        let text = elem.trim_ascii();
        if !text.is_empty() {
            let pos = Pos::Record(*index);
            *index += 1;
            match serde_json::from_slice::<Value>(text) {
                Ok(v) => {
                    let raw = String::from_utf8_lossy(text).into_owned();
                    run.record(file, pos, &v, &raw)?;
                }
                Err(e) => run.reject(file, pos, &json_reason(&e, text), &String::from_utf8_lossy(text))?,
            }
        }
        elem.clear();
        Ok(())
    };
    let mut feed = |run: &mut Run, chunk: &[u8], elem: &mut Vec<u8>, index: &mut u64| -> Result<bool, FileError> {
        for &c in chunk {
            if depth == 0 {
                if c == b'[' {
                    depth = 1;
                }
                continue;
            }
            if in_str {
                elem.push(c);
                if esc {
                    esc = false;
                } else if c == b'\\' {
                    esc = true;
                } else if c == b'"' {
                    in_str = false;
                }
                continue;
            }
            match c {
                b'"' => {
                    in_str = true;
                    elem.push(c);
                }
                b'{' | b'[' => {
                    depth += 1;
                    elem.push(c);
                }
                b'}' | b']' if depth > 1 => {
                    depth -= 1;
                    elem.push(c);
                }
                b']' => {
                    emit(run, elem, index)?;
                    return Ok(true);
                }
                b',' if depth == 1 => emit(run, elem, index)?,
                _ => elem.push(c),
            }
        }
        Ok(false)
    };
    done |= feed(run, trim_bom(&first), &mut elem, &mut index)?;
    while !done {
        let chunk = reader.fill_buf().map_err(|e| FileError::Read(format!("after record {index}: {e}")))?;
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        done = feed(run, chunk, &mut elem, &mut index)?;
        reader.consume(n);
    }
    if !done {
        // The array never closed: whatever is left is a truncated record.
        emit(run, &mut elem, &mut index)?;
    }
    Ok(())
}

fn trim_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(b)
}

fn json_reason(e: &serde_json::Error, bytes: &[u8]) -> String {
    if std::str::from_utf8(bytes).is_err() {
        return "invalid JSON: not UTF-8 text (binary data?)".into();
    }
    if e.is_eof() {
        return format!("truncated JSON: {e}");
    }
    format!("invalid JSON: {e}")
}

/// JSON Lines: one record (or one envelope) per line. Returns (lines consumed, bytes consumed);
/// an unterminated, unparsable last line is rejected but not counted as consumed, so a grown
/// append blob re-reads it whole next time.
fn json_lines(
    run: &mut Run,
    file: &str,
    reader: &mut dyn BufRead,
    mut line_no: u64,
    first: Vec<u8>,
) -> Result<(u64, u64), FileError> {
    let mut buf = first;
    let mut consumed = 0u64;
    let mut have = !buf.is_empty();
    loop {
        if !have {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| FileError::Read(format!("after line {line_no}: {e}")))?;
            if n == 0 {
                break;
            }
        }
        have = false;
        line_no += 1;
        let terminated = buf.last() == Some(&b'\n');
        let text = trim_bom(buf.trim_ascii_end());
        if text.iter().all(u8::is_ascii_whitespace) {
            consumed += buf.len() as u64;
            continue;
        }
        match serde_json::from_slice::<Value>(text) {
            Ok(v) => {
                let raw = std::str::from_utf8(text).map(|s| s.trim_end()).unwrap_or_default();
                run.value(file, Some(line_no), v, raw)?;
                consumed += buf.len() as u64;
            }
            Err(e) => {
                let raw = String::from_utf8_lossy(text).trim_end().to_string();
                run.reject(file, Pos::Line(line_no), &json_reason(&e, text), &raw)?;
                if terminated {
                    consumed += buf.len() as u64;
                } else {
                    line_no -= 1;
                }
            }
        }
    }
    Ok((line_no, consumed))
}

/// CSV with a header row: Log Analytics exports (`Type` column) or network alerts.
fn csv_file(run: &mut Run, file: &str, bytes: &[u8], line_base: u64) -> Result<(), FileError> {
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(trim_bom(bytes));
    let headers = match rdr.byte_headers() {
        Ok(h) => h.iter().map(|h| String::from_utf8_lossy(h).trim().to_string()).collect::<Vec<_>>(),
        Err(e) => return Err(FileError::Read(format!("not JSON and not CSV: {e}"))),
    };
    if headers.len() < 2 {
        // Not a CSV at all (binary garbage, plain text): each line is a rejected record.
        let text = String::from_utf8_lossy(bytes).to_string();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            run.reject(file, Pos::Line(line_base + i as u64 + 1), "not JSON and not CSV", line)?;
        }
        return Ok(());
    }
    let la = headers.iter().any(|h| h == "Type" || h == "TimeGenerated");
    let mut rec = csv::ByteRecord::new();
    loop {
        let line = line_base + rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let raw = rec.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>();
                let raw_line = csv_line(&raw);
                if rec.len() != headers.len() {
                    run.reject(
                        file,
                        Pos::Line(line),
                        &format!("CSV row has {} fields, header has {}", rec.len(), headers.len()),
                        &raw_line,
                    )?;
                    continue;
                }
                let mut m = Map::new();
                for (h, v) in headers.iter().zip(raw) {
                    if !v.is_empty() {
                        m.insert(h.clone(), Value::String(v));
                    }
                }
                let v = Value::Object(m);
                let mapped = match (run.format, la) {
                    (Format::Auto, true) | (Format::LogAnalytics, _) => {
                        formats::entra::from_log_analytics(v.as_object().expect("object"))
                    }
                    (Format::Auto, false) | (Format::NetworkCsv, _) => {
                        formats::network::from_csv_row(v.as_object().expect("object"))
                    }
                    (f, _) => Err(format!("CSV input is not supported for --format {f:?}")),
                };
                match mapped {
                    Ok(m) => run.place(m, &raw_line)?,
                    Err(reason) => run.reject(file, Pos::Line(line), &reason, &raw_line)?,
                }
            }
            Err(e) => {
                run.reject(file, Pos::Line(line), &format!("invalid CSV: {e}"), "")?;
                break;
            }
        }
    }
    Ok(())
}

fn csv_line(fields: &[String]) -> String {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    let _ = w.write_record(fields);
    String::from_utf8_lossy(&w.into_inner().unwrap_or_default()).trim_end().to_string()
}

struct CountingReader<R> {
    inner: R,
    n: u64,
    bar: indicatif::ProgressBar,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}
