//! Buffers rows per (table, day), de-duplicates them by key, and writes sorted, zstd Parquet files
//! that appear under their final name only when complete (object_store `put`: temp file + rename
//! on a local lake, a single-shot upload on a remote one).

use super::rows::rows_to_batch;
use super::{Lake, LakeError, Table};
use arrow::array::{AsArray, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};
#[allow(deprecated)]
use parquet::arrow::async_reader::ParquetObjectReader;
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder, WriterVersion};
use parquet::schema::types::ColumnPath;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::runtime::Handle;

/// Flush a (table, day) buffer when it holds this many rows.
const FLUSH_ROWS: usize = 250_000;
/// Flush the biggest buffer when all buffers together hold this many bytes of input.
const BUFFER_BUDGET: usize = 96 << 20;
/// Keep at most this many (table, day) buffers and key sets open; the least recently used is
/// flushed and forgotten (its keys are re-read from the lake if it is touched again).
const MAX_OPEN: usize = 48;

/// Rows waiting to be written for one (table, day): recent rows as JSON values, older ones
/// already converted to compact Arrow batches (about a third of the memory).
struct DayBuf {
    rows: Vec<Vec<Value>>,
    rows_bytes: usize,
    batches: Vec<RecordBatch>,
    batches_bytes: usize,
    n: usize,
    keys: HashSet<i64, KeyHasher>,
    last_use: u64,
}

impl DayBuf {
    fn bytes(&self) -> usize {
        self.rows_bytes + self.batches_bytes
    }

    /// Converts the rows pushed one by one into a batch after the others. Returns the bytes
    /// they were counted for and the batch's.
    fn seal_rows(&mut self, table: Table) -> Result<(usize, usize), LakeError> {
        if self.rows.is_empty() {
            return Ok((0, 0));
        }
        let batch = rows_to_batch(table, &std::mem::take(&mut self.rows))?;
        let size = batch.get_array_memory_size();
        let freed = std::mem::take(&mut self.rows_bytes);
        self.batches_bytes += size;
        self.batches.push(batch);
        Ok((freed, size))
    }
}

/// Keys are already hashes: a multiply spreads them well enough for the hash set.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher;

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = KeyHash;
    fn build_hasher(&self) -> KeyHash {
        KeyHash(0)
    }
}

pub struct KeyHash(u64);

impl std::hash::Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x517cc1b727220a95);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64).wrapping_mul(0x9e3779b97f4a7c15);
    }
}

/// Convert buffered JSON rows to Arrow every this many rows.
const CONVERT_ROWS: usize = 8192;

/// Counts of what the writer did.
#[derive(Debug, Default, Clone)]
pub struct WriteStats {
    pub files: Vec<String>,
    pub rows_written: BTreeMap<&'static str, u64>,
}

pub struct LakeWriter {
    handle: Handle,
    run_id: String,
    seq: u64,
    clock: u64,
    buffers: HashMap<(Table, String), DayBuf>,
    buffered: usize,
    /// The threads that sort, encode and store flushed buffers (None once they have stopped).
    encoder: Option<Encoder>,
    /// (table, day)s flushed since the encoder was last waited for.
    unsettled: HashSet<(Table, String)>,
    lake: Lake,
}

/// What an encoder thread is asked: sort these batches by `ts`, encode them as one Parquet file
/// and store it at `path`.
struct Job {
    table: Table,
    path: StorePath,
    batches: Vec<RecordBatch>,
}

/// Files asked of the encoder threads and not yet stored (or failed), and whether one failed.
#[derive(Default)]
struct Pending {
    count: std::sync::Mutex<(usize, bool)>,
    settled: std::sync::Condvar,
}

/// Encoding and storing run on their own threads (one file each at a time) while the ingest goes
/// on; at most one flushed buffer waits for a free thread.
struct Encoder {
    jobs: std::sync::mpsc::SyncSender<Job>,
    threads: Vec<std::thread::JoinHandle<Result<WriteStats, LakeError>>>,
    pending: std::sync::Arc<Pending>,
}

impl Encoder {
    fn start(lake: Lake, handle: Handle, threads: usize) -> Encoder {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Job>(1);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let pending = std::sync::Arc::new(Pending::default());
        let threads = (0..threads.max(1))
            .map(|k| {
                let (lake, handle, rx, pending) = (lake.clone(), handle.clone(), rx.clone(), pending.clone());
                std::thread::Builder::new()
                    .name(format!("wisp-encode-{k}"))
                    .spawn(move || {
                        let mut stats = WriteStats::default();
                        loop {
                            // The lock is held only while waiting for the next job.
                            let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                            let Ok(Job { table, path, batches }) = job else { return Ok(stats) };
                            let written = write_file(&lake, &handle, table, &path, batches);
                            {
                                let mut c = pending.count.lock().unwrap_or_else(|p| p.into_inner());
                                c.0 -= 1;
                                c.1 |= written.is_err();
                                pending.settled.notify_all();
                            }
                            *stats.rows_written.entry(table.name()).or_default() += written?;
                            stats.files.push(path.to_string());
                        }
                    })
                    .expect("an encoder thread starts")
            })
            .collect();
        Encoder { jobs, threads, pending }
    }

    /// Waits for the threads: their counts together, or the first error that stopped one.
    fn join(self) -> Result<WriteStats, LakeError> {
        drop(self.jobs);
        let mut all = WriteStats::default();
        let mut first_err = None;
        for t in self.threads {
            match t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                Ok(stats) => {
                    all.files.extend(stats.files);
                    for (t, n) in stats.rows_written {
                        *all.rows_written.entry(t).or_default() += n;
                    }
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(all),
        }
    }
}

/// Rows handed to the Parquet writer at a time: slices this small are built in memory the
/// allocator reuses, where one sorted copy of a whole file (hundreds of MB) would be fresh pages
/// the kernel zeroes on every flush.
const ENCODE_SLICE: usize = 8192;

/// Sorts `batches` by `ts` (the table's first column; rows with one time keep their input order),
/// encodes them as one Parquet file and stores it (whole or not at all). Returns the rows written.
fn write_file(
    lake: &Lake,
    handle: &Handle,
    table: Table,
    path: &StorePath,
    batches: Vec<RecordBatch>,
) -> Result<u64, LakeError> {
    let werr = |e: arrow::error::ArrowError| LakeError::Write { table: table.name(), msg: e.to_string() };
    let perr = |e: parquet::errors::ParquetError| LakeError::Write { table: table.name(), msg: e.to_string() };
    // Every row's (time, batch, row): sorted, the order of the file, without copying the rows.
    let mut order: Vec<(i64, u32, u32)> = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for (b, batch) in batches.iter().enumerate() {
        let ts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        order.extend(ts.values().iter().enumerate().map(|(r, &t)| (t, b as u32, r as u32)));
    }
    order.sort_unstable();
    let batches = raw_as_views(table, batches).map_err(werr)?;
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    // Compressed, the rows take about a fifth of their memory: one allocation, not a doubling series.
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::get_array_memory_size).sum::<usize>() / 4);
    let mut w = ArrowWriter::try_new(&mut out, table.schema(), Some(ingest_props(order.len()))).map_err(perr)?;
    let mut idx = Vec::with_capacity(ENCODE_SLICE);
    for slice in order.chunks(ENCODE_SLICE) {
        idx.clear();
        idx.extend(slice.iter().map(|&(_, b, r)| (b as usize, r as usize)));
        w.write(&interleave_record_batch(&refs, &idx).map_err(werr)?).map_err(perr)?;
    }
    w.close().map_err(perr)?;
    drop(refs);
    drop(batches);
    let n = order.len() as u64;
    // A local lake's file past the page cache (`direct`), unless its file system refuses that.
    if let Some(root) = lake.local_root.as_ref() {
        let dest = root.join(path.as_ref());
        match super::direct::put(&dest, &out) {
            Ok(true) => return Ok(n),
            Ok(false) => {}
            Err(e) => return Err(LakeError::Write { table: table.name(), msg: format!("{}: {e}", dest.display()) }),
        }
    }
    let store = lake.store.clone();
    let p = path.clone();
    handle
        .block_on(async move { store.put(&p, PutPayload::from(out)).await })
        .map_err(|e| LakeError::Store { url: path.to_string(), source: e })?;
    Ok(n)
}

/// The batches with their `raw` column (the original records: most of a file's bytes) as views
/// into the same text, no byte copied: the gather into time order then moves a 16-byte view per
/// row, not the record, and the Parquet writer reads each record where it was first built (it
/// writes a view column to the `Utf8` column the file declares, the same bytes). Batches whose
/// `raw` already is views (an ingest chunk's, `compact_rows_to_batch_in`) are kept; when any
/// batch is of neither shape, all are kept as they are.
fn raw_as_views(table: Table, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, StringViewArray};
    use arrow::datatypes::DataType;
    let Some(i) = table.col("raw") else { return Ok(batches) };
    let schema = table.schema();
    if *schema.field(i).data_type() != DataType::Utf8 {
        return Ok(batches);
    }
    let views = super::rows::views_schema(&schema, |c| c == i);
    if batches.iter().any(|b| b.schema() != schema && b.schema() != views) {
        return Ok(batches);
    }
    batches
        .into_iter()
        .map(|b| {
            if b.schema() == views {
                return Ok(b);
            }
            let mut cols = b.columns().to_vec();
            cols[i] = std::sync::Arc::new(StringViewArray::from(cols[i].as_string::<i32>())) as ArrayRef;
            RecordBatch::try_new(views.clone(), cols)
        })
        .collect()
}

impl Drop for LakeWriter {
    /// A writer dropped without `finish` (an ingest that failed) still stores what it flushed.
    fn drop(&mut self) {
        if let Some(e) = self.encoder.take() {
            let _ = e.join();
        }
    }
}

/// Columns whose values are (nearly) all different, in every table that has them: event times and
/// keys (below), record and request ids and the raw record ([`UNIQUE_TEXT`]). A dictionary of them
/// only costs: every value hashed into it and each file's first megabyte of them written twice
/// (dictionary and indices).
const UNIQUE_NUMBERS: [&str; 2] = ["ts", "_key"];

/// The text columns of unique values (see [`UNIQUE_NUMBERS`]).
const UNIQUE_TEXT: [&str; 7] =
    ["id", "raw", "correlation_id", "operation_id", "request_id", "unique_token_id", "sign_in_activity_id"];

/// The `id` bloom filters' false-positive rate (the parquet crate folds each filter down to the
/// smallest that keeps it). A lookup of many ids at once tests each against every row group: at the
/// crate's default 5%, the 63 events of a risk-stacking hour passed 14 of 30 daily risk-event files'
/// filters while none held them; at 0.1% about two pass. About 2 bytes per value, where 5% takes 1.
pub(crate) const ID_BLOOM_FPP: f64 = 0.001;

/// Rows per data page at most (the parquet crate's default is 20,000). Files are sorted by `ts`,
/// so a time window's bounds select pages through the page index: with 4,096-row pages a one-hour
/// window of a day's 20,000 resource-log rows decodes one page of five, not the whole column
/// chunk (the Key Vault rule's window scan 7.9 -> 3.3 ms of processing), and a compacted row
/// group of 131,072 rows has 32 pages. A medium lake is 5% larger (2,605 -> 2,738 MB), an
/// ingested day 1.3%, its ingest as fast (BENCHMARKS.md, issue 16).
pub(crate) const PAGE_ROWS: usize = 4096;

/// Rows per row group at most.
const ROW_GROUP_ROWS: usize = 1_000_000;

/// The lake's Parquet settings: zstd, page statistics, sorted by `ts` (the first column), a bloom
/// filter on `id`, no dictionary for the columns of unique values, no statistics for `raw` (the
/// original records, which no query bounds: their minimum and maximum cost a comparison of every
/// record's text, whose shared `{"time":"…` prefix makes each a long one).
pub(crate) fn props_builder() -> WriterPropertiesBuilder {
    let b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid zstd level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("raw"), EnabledStatistics::None)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_sorting_columns(Some(vec![SortingColumn { column_idx: 0, descending: false, nulls_first: false }]))
        .set_column_bloom_filter_enabled(ColumnPath::from("id"), true)
        .set_column_bloom_filter_fpp(ColumnPath::from("id"), ID_BLOOM_FPP);
    UNIQUE_NUMBERS
        .iter()
        .chain(&UNIQUE_TEXT)
        .fold(b, |b, c| b.set_column_dictionary_enabled(ColumnPath::from(*c), false))
}

/// Files written by an ingest, of `rows` rows: zstd level 1, about twice as fast to encode as
/// level 3 for a few percent more bytes (`wisp compact` rewrites a day's files at level 3). The
/// executable compresses level 1 with a smaller match table and a longer search step than zstd's
/// own (`zstd_contexts` in `src/main.rs`: 4-5% less CPU for the medium day, 1.2% more bytes).
fn ingest_props(rows: usize) -> WriterProperties {
    let b = props_builder()
        // The `id` filter sized for the file's rows, not the crate's default of a whole row
        // group's (a million): each insert then lands in a filter that fits the cache, and the
        // crate has little to fold down when the file closes.
        .set_column_bloom_filter_max_ndv(ColumnPath::from("id"), rows.clamp(1, ROW_GROUP_ROWS) as u64)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid zstd level")))
        // Data pages v2: the parquet crate compresses a v2 page's values straight from the
        // encoder's buffer; a v1 page's are first copied after its levels, then compressed into a
        // buffer sized to the page and grown (copied) to zstd's bound. The values' encodings stay
        // v1's (PLAIN behind the dictionaries: v2's default would be the delta encodings) but for
        // the text columns of unique values, below.
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_encoding(Encoding::PLAIN);
    // Their values (the `raw` records most of all) lengths apart from the bytes: the crate's
    // PLAIN encoder hands its buffer to each page and starts the next page's from empty, growing
    // it by doubling (every record copied again about once, 3.7% of an ingest's instructions);
    // DELTA_LENGTH_BYTE_ARRAY's buffer is cleared and reused, the page copied once. The pages
    // compress a little smaller too (the bytes without lengths between them), and read as any
    // Parquet reader reads them (DuckDB's included).
    UNIQUE_TEXT
        .iter()
        .fold(b, |b, c| b.set_column_encoding(ColumnPath::from(*c), Encoding::DELTA_LENGTH_BYTE_ARRAY))
        .build()
}

impl LakeWriter {
    /// A writer for one ingest run, with `encoders` threads encoding files; must be used from a
    /// blocking context inside a Tokio runtime.
    pub fn new(lake: Lake, run_id: String, handle: Handle, encoders: usize) -> Self {
        LakeWriter {
            encoder: Some(Encoder::start(lake.clone(), handle.clone(), encoders)),
            lake,
            handle,
            run_id,
            seq: 0,
            clock: 0,
            buffers: HashMap::new(),
            buffered: 0,
            unsettled: HashSet::new(),
        }
    }

    /// Opens the buffer of a (table, day) when new (its keys read from the lake); returns its id.
    fn open(&mut self, table: Table, day: &str) -> Result<(Table, String), LakeError> {
        self.clock += 1;
        let id = (table, day.to_string());
        if !self.buffers.contains_key(&id) {
            if self.buffers.len() >= MAX_OPEN {
                self.evict_lru()?;
            }
            // Files of this (table, day) still being written hold keys too.
            if self.unsettled.contains(&id) {
                self.barrier()?;
                self.unsettled.clear();
            }
            let keys = self.load_keys(table, day)?;
            self.buffers.insert(
                id.clone(),
                DayBuf {
                    rows: Vec::new(),
                    rows_bytes: 0,
                    batches: Vec::new(),
                    batches_bytes: 0,
                    n: 0,
                    keys,
                    last_use: 0,
                },
            );
        }
        self.buffers.get_mut(&id).expect("inserted above").last_use = self.clock;
        Ok(id)
    }

    /// Adds a row unless its key is already in the lake or in this run. Returns false for a duplicate.
    pub fn push(
        &mut self,
        table: Table,
        day: &str,
        key: i64,
        row: Vec<Value>,
        bytes: usize,
    ) -> Result<bool, LakeError> {
        let id = self.open(table, day)?;
        let buf = self.buffers.get_mut(&id).expect("open");
        if !buf.keys.insert(key) {
            return Ok(false);
        }
        buf.rows.push(row);
        buf.n += 1;
        // A JSON row costs about three times its input size.
        let cost = bytes * 3;
        buf.rows_bytes += cost;
        self.buffered += cost;
        if buf.rows.len() >= CONVERT_ROWS {
            let (freed, size) = buf.seal_rows(table)?;
            self.buffered = self.buffered - freed + size;
        }
        self.after_push(id)?;
        Ok(true)
    }

    /// Adds the rows of a batch (of this table's schema; `keys[i]` is row i's key) whose keys are
    /// new, in order. Returns how many were added; the rest were duplicates.
    pub fn push_batch(&mut self, table: Table, day: &str, keys: &[i64], batch: RecordBatch) -> Result<u64, LakeError> {
        let werr = |e: arrow::error::ArrowError| LakeError::Write { table: table.name(), msg: e.to_string() };
        let id = self.open(table, day)?;
        let buf = self.buffers.get_mut(&id).expect("open");
        let fresh: Vec<bool> = keys.iter().map(|&k| buf.keys.insert(k)).collect();
        let added = fresh.iter().filter(|&&f| f).count();
        let batch = if added == keys.len() {
            batch
        } else {
            arrow::compute::filter_record_batch(&batch, &arrow::array::BooleanArray::from(fresh)).map_err(werr)?
        };
        if added > 0 {
            // Rows pushed one by one before this batch stay before it.
            let (freed, size) = buf.seal_rows(table)?;
            self.buffered = self.buffered - freed + size;
            let size = batch.get_array_memory_size();
            buf.batches_bytes += size;
            buf.n += added;
            buf.batches.push(batch);
            self.buffered += size;
            self.after_push(id)?;
        }
        Ok(added as u64)
    }

    /// Flushes a full buffer, and the biggest ones while over the memory budget.
    fn after_push(&mut self, id: (Table, String)) -> Result<(), LakeError> {
        if self.buffers.get(&id).is_some_and(|b| b.n >= FLUSH_ROWS) {
            self.flush_one(&id)?;
        }
        while self.buffered > BUFFER_BUDGET {
            let biggest = self.buffers.iter().max_by_key(|(_, b)| b.bytes()).map(|(k, _)| k.clone());
            match biggest {
                Some(k) => self.flush_one(&k)?,
                None => break,
            }
        }
        Ok(())
    }

    fn evict_lru(&mut self) -> Result<(), LakeError> {
        if let Some(k) = self.buffers.iter().min_by_key(|(_, b)| b.last_use).map(|(k, _)| k.clone()) {
            self.flush_one(&k)?;
            self.buffers.remove(&k);
        }
        Ok(())
    }

    /// Reads the `_key` column of the files already in a (table, day) folder.
    #[allow(deprecated)]
    fn load_keys(&self, table: Table, day: &str) -> Result<HashSet<i64, KeyHasher>, LakeError> {
        let store = self.lake.store.clone();
        let prefix = Lake::day_prefix(table, day);
        self.handle.block_on(async move {
            let mut keys = HashSet::with_hasher(KeyHasher);
            let mut listing = store.list(Some(&prefix));
            let mut files = Vec::new();
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| LakeError::Read { path: prefix.to_string(), msg: e.to_string() })?;
                if meta.location.as_ref().ends_with(".parquet") {
                    files.push(meta);
                }
            }
            for meta in files {
                let path = meta.location.to_string();
                let rerr =
                    |e: parquet::errors::ParquetError| LakeError::Read { path: path.clone(), msg: e.to_string() };
                let reader = ParquetObjectReader::new(store.clone(), meta.location.clone()).with_file_size(meta.size);
                let builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(rerr)?;
                let Some(idx) = builder.schema().index_of("_key").ok() else {
                    continue;
                };
                let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
                let mut stream = builder.with_projection(mask).build().map_err(rerr)?;
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(rerr)?;
                    let col = batch.column(0).as_primitive::<Int64Type>();
                    keys.extend(col.values().iter().copied());
                }
            }
            Ok(keys)
        })
    }

    fn flush_one(&mut self, id: &(Table, String)) -> Result<(), LakeError> {
        let Some(buf) = self.buffers.get_mut(id) else {
            return Ok(());
        };
        if buf.n == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut buf.rows);
        let mut batches = std::mem::take(&mut buf.batches);
        self.buffered -= buf.bytes();
        buf.rows_bytes = 0;
        buf.batches_bytes = 0;
        buf.n = 0;
        let (table, day) = id;
        if !rows.is_empty() {
            batches.push(rows_to_batch(*table, &rows)?);
        }
        drop(rows);
        self.seq += 1;
        let path = StorePath::from(format!("{}/day={}/{}-{:05}.parquet", table.name(), day, self.run_id, self.seq));
        self.unsettled.insert(id.clone());
        self.send(Job { table: *table, path, batches })
    }

    /// Hands a job to the encoder threads; when they have stopped, their error.
    fn send(&mut self, job: Job) -> Result<(), LakeError> {
        let enc = self.encoder.as_ref().ok_or_else(|| LakeError::Write {
            table: "(any)",
            msg: "the Parquet encoder stopped after an earlier error".into(),
        })?;
        enc.pending.count.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
        if enc.jobs.send(job).is_ok() {
            return Ok(());
        }
        self.stopped()
    }

    /// The encoder threads' error, once one has failed (they are waited for).
    fn stopped(&mut self) -> Result<(), LakeError> {
        let enc = self.encoder.take().expect("running");
        enc.join()?;
        Err(LakeError::Write { table: "(any)", msg: "the Parquet encoder stopped".into() })
    }

    /// Waits until every file flushed so far is stored.
    fn barrier(&mut self) -> Result<(), LakeError> {
        let Some(enc) = self.encoder.as_ref() else {
            return Err(LakeError::Write { table: "(any)", msg: "the Parquet encoder stopped".into() });
        };
        let failed = {
            let mut c = enc.pending.count.lock().unwrap_or_else(|p| p.into_inner());
            while c.0 > 0 && !c.1 {
                c = enc.pending.settled.wait(c).unwrap_or_else(|p| p.into_inner());
            }
            c.1
        };
        if failed {
            return self.stopped();
        }
        Ok(())
    }

    /// Writes every buffer out.
    pub fn finish(mut self) -> Result<WriteStats, LakeError> {
        let mut ids: Vec<_> = self.buffers.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.flush_one(&id)?;
        }
        match self.encoder.take() {
            Some(e) => e.join(),
            None => Err(LakeError::Write { table: "(any)", msg: "the Parquet encoder stopped".into() }),
        }
    }
}

/// Writes rejected records as JSON lines under `_rejected/`, in parts.
pub struct RejectWriter {
    lake: Lake,
    handle: Handle,
    run_id: String,
    day: String,
    seq: u64,
    buf: Vec<u8>,
    pub files: Vec<String>,
}

impl RejectWriter {
    pub fn new(lake: Lake, run_id: String, day: String, handle: Handle) -> Self {
        RejectWriter { lake, handle, run_id, day, seq: 0, buf: Vec::new(), files: Vec::new() }
    }

    pub fn push(&mut self, rec: &Value) -> Result<(), LakeError> {
        serde_json::to_writer(&mut self.buf, rec).expect("serializing a Value cannot fail");
        self.buf.push(b'\n');
        if self.buf.len() > 16 << 20 {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), LakeError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.seq += 1;
        let path = StorePath::from(format!("_rejected/day={}/{}-{:05}.jsonl", self.day, self.run_id, self.seq));
        let bytes = std::mem::take(&mut self.buf);
        let store = self.lake.store.clone();
        let p = path.clone();
        self.handle
            .block_on(async move { store.put(&p, PutPayload::from(bytes)).await })
            .map_err(|e| LakeError::Store { url: path.to_string(), source: e })?;
        self.files.push(path.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray};
    use parquet::file::properties::ReaderProperties;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
    use std::sync::Arc;

    /// How many of `absent` ids pass the `id` bloom filter of a file of `n` ids written with `props`.
    fn false_positives(props: WriterProperties, n: usize, absent: usize) -> usize {
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("present-{i:08}"))));
        let batch = RecordBatch::try_from_iter([("id", ids)]).unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let opts = ReadOptionsBuilder::new()
            .with_reader_properties(ReaderProperties::builder().set_read_bloom_filter(true).build())
            .build();
        let r = SerializedFileReader::new_with_options(bytes::Bytes::from(buf), opts).unwrap();
        let rg = r.get_row_group(0).unwrap();
        let bloom = rg.get_column_bloom_filter(0).expect("the id column has a bloom filter");
        assert!((0..n).all(|i| bloom.check(format!("present-{i:08}").as_str())), "no false negative");
        (0..absent).filter(|i| bloom.check(format!("absent-{i:08}").as_str())).count()
    }

    /// Rows a query of one hour of a day's file decodes (`ScanStats::rows`: the rows its scan
    /// returned and those its filter dropped after decoding), the file written with `props`: 20,000
    /// rows sorted by `ts`, evenly over the day, as wisp's sessions read it.
    async fn rows_decoded_for_an_hour(props: WriterProperties) -> (u64, i64) {
        use arrow::array::TimestampMicrosecondArray;
        let day = 1_795_046_400_000_000i64; // 2026-11-19T00:00:00Z
        let n = 20_000i64;
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n).map(|i| day + i * 86_400_000_000 / n))
                .with_timezone("UTC"),
        );
        let op: ArrayRef = Arc::new(StringArray::from_iter_values((0..n).map(|i| format!("op{}", i % 7))));
        let batch = RecordBatch::try_from_iter([("ts", ts), ("operation_name", op)]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let mut w =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), Some(props))
                .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let ctx = datafusion::prelude::SessionContext::new_with_config(crate::session::session_config(2));
        ctx.register_parquet("t", path.to_str().unwrap(), Default::default()).await.unwrap();
        let df = ctx
            .sql(
                "SELECT count(*) AS n FROM t WHERE ts > TIMESTAMP '2026-11-19T15:00:00Z' \
                 AND ts <= TIMESTAMP '2026-11-19T16:00:00Z' AND operation_name <> 'op3'",
            )
            .await
            .unwrap();
        let (batches, stats) = crate::query::collect_with_stats(df).await.unwrap();
        let count = batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0);
        (stats.rows, count)
    }

    /// The lake's files have pages of at most `PAGE_ROWS` rows: a one-hour window of a day's
    /// file sorted by time decodes the pages its bounds select through the page index, not the
    /// whole column chunk as with the crate's default pages of 20,000 rows.
    #[tokio::test]
    async fn an_hour_of_a_day_decodes_a_page_or_two() {
        // The hour holds 833 rows; 714 of them are not 'op3'.
        for props in [props_builder().build(), ingest_props(20_000)] {
            let (rows, count) = rows_decoded_for_an_hour(props).await;
            assert_eq!(count, 714);
            assert!(rows <= 2 * PAGE_ROWS as u64, "{rows} rows decoded for an hour");
        }
        let (rows, count) = rows_decoded_for_an_hour(
            WriterProperties::builder().set_statistics_enabled(EnabledStatistics::Page).build(),
        )
        .await;
        assert_eq!((rows, count), (20_000, 714), "the crate's default pages: the whole chunk");
    }

    /// A lookup of many ids at once (a risk-stacking hour's events, about 60) tests each against
    /// every row group: the lake's and an ingest's files keep `id` false positives near 0.1%, where
    /// the crate's default 5% let most files of a day's size through.
    #[test]
    fn id_bloom_filters_pass_few_absent_ids() {
        for props in [props_builder().build(), ingest_props(3_300)] {
            let fp = false_positives(props, 3_300, 20_000);
            assert!(fp <= 60, "{fp} of 20,000 absent ids passed (0.3% allowed)");
        }
        let default =
            false_positives(WriterProperties::builder().set_bloom_filter_enabled(true).build(), 3_300, 20_000);
        assert!(default > 200, "the crate's default passes more ({default}): the test can tell them apart");
    }
}
