//! Compaction: a day of a table rewritten into few `ts`-sorted files with small row groups.
//!
//! A lake fed every few minutes, or an ingest of a large export that flushes its buffers many
//! times, leaves a day with many files whose `ts` ranges overlap: an hourly run then opens every
//! file of the day and decodes most of its rows, because no file or row group can be skipped by
//! its statistics. Compaction merges a day's files (each already sorted by `ts`) in one
//! sort-preserving pass into files of 128 Ki-row row groups, so an hour of a day is one or two row
//! groups. A table with a [`Cluster`] gets a file per part of it (sign-ins: per category, failures
//! apart), each sorted by `ts`.
//!
//! Atomicity (local lakes): the new files are written complete into a staging folder beside the
//! day (`<table>/_compact-<day>-<id>/`, which no reader lists: it is not a `day=` partition), then
//! the two folders are exchanged in one `renameat2(RENAME_EXCHANGE)`: a listing sees the old files
//! or the new ones, never both, never neither. The old files are then removed. A crash leaves at
//! most the staging folder, which the next writer removes ([`super::lock::repair`]). The caller
//! holds the lake's write lock.
//!
//! What the scheduler needs to see late data through a compaction: every compacted file carries
//! its sources — each ingest run whose rows it holds and that run's `ts` range — as the Parquet
//! key-value `wisp.sources` ([`sources`]).

use super::{Lake, LakeError, Table, ALL_TABLES};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{col, SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use object_store::ObjectStoreExt;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::file::metadata::{KeyValue, ParquetMetaData};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Rows per row group of a compacted file: about an hour of a large tenant's sign-ins.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per compacted file.
pub const FILE_ROWS: usize = 8 * 1024 * 1024;
/// The Parquet key-value that lists a compacted file's sources.
pub const SOURCES_KEY: &str = "wisp.sources";

/// One ingest run's rows in a compacted file: the run id and its `ts` range (µs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub run: String,
    pub lo: i64,
    pub hi: i64,
}

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Only these tables (all when empty).
    pub tables: Vec<Table>,
    /// Only days in this range, inclusive (`YYYY-MM-DD`).
    pub days: Option<(String, String)>,
    /// Compact a day when it has at least this many files, one of them not compacted yet.
    pub min_files: usize,
    /// Rewrite days that are compacted already too.
    pub force: bool,
    /// Memory pool of the merge (it spills beyond it).
    pub memory_limit: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions { tables: Vec::new(), days: None, min_files: 2, force: false, memory_limit: 1024 << 20 }
    }
}

/// What compacting one day did.
#[derive(Debug, Clone, Serialize)]
pub struct DayCompaction {
    pub table: &'static str,
    pub day: String,
    pub files_before: usize,
    pub files_after: usize,
    pub rows: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub seconds: f64,
}

/// A data file of an ingest run: `<table>/day=…/<run id>-<seq>.parquet` → the run id.
pub fn ingest_run(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?.strip_suffix(".parquet")?;
    let (run, seq) = name.rsplit_once('-')?;
    (!seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit())).then_some(run)
}

/// A compacted file: `<table>/day=…/<id>-c<seq>.parquet`.
pub fn is_compacted(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .and_then(|n| n.strip_suffix(".parquet"))
        .and_then(|n| n.rsplit_once("-c"))
        .is_some_and(|(_, seq)| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

fn read_err(path: &StorePath, msg: impl std::fmt::Display) -> LakeError {
    LakeError::Read { path: path.to_string(), msg: msg.to_string() }
}

/// A Parquet file's footer, read with two ranged GETs.
pub async fn footer(lake: &Lake, path: &StorePath) -> Result<ParquetMetaData, LakeError> {
    use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
    let size = lake.store.head(path).await.map_err(|e| read_err(path, e))?.size;
    if size < 8 {
        return Err(read_err(path, "not a Parquet file (too short)"));
    }
    let tail = lake.store.get_range(path, size - 8..size).await.map_err(|e| read_err(path, e))?;
    let tail: [u8; 8] = tail.as_ref().try_into().map_err(|_| read_err(path, "short read of the footer"))?;
    let len = FooterTail::try_new(&tail).map_err(|e| read_err(path, e))?.metadata_length() as u64;
    if len + 8 > size {
        return Err(read_err(path, "corrupt footer length"));
    }
    let meta = lake.store.get_range(path, size - 8 - len..size - 8).await.map_err(|e| read_err(path, e))?;
    ParquetMetaDataReader::decode_metadata(&meta).map_err(|e| read_err(path, format!("reading the footer: {e}")))
}

/// The `ts` range of a file from its row-group statistics: `None` when it has no rows,
/// `(i64::MIN, i64::MAX)` when a row group has no statistics (it may hold any time).
pub fn ts_range(md: &ParquetMetaData) -> Option<(i64, i64)> {
    use parquet::file::statistics::Statistics;
    let schema = md.file_metadata().schema_descr();
    let Some(ts) = (0..schema.num_columns()).find(|&i| schema.column(i).name() == "ts") else {
        return Some((i64::MIN, i64::MAX));
    };
    let mut range: Option<(i64, i64)> = None;
    for rg in md.row_groups() {
        if rg.num_rows() == 0 {
            continue;
        }
        match rg.column(ts).statistics() {
            Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                (Some(&lo), Some(&hi)) => range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi)))),
                _ => return Some((i64::MIN, i64::MAX)),
            },
            _ => return Some((i64::MIN, i64::MAX)),
        }
    }
    range
}

/// The ingest runs whose rows a data file holds, with their `ts` ranges: a compacted file's
/// `wisp.sources`, or an ingest file's own run and range. Other files (written by hand, by
/// another tool) count as one source named after the file.
pub fn sources(path: &str, md: &ParquetMetaData) -> Result<Vec<Source>, LakeError> {
    if is_compacted(path) {
        let kv = md.file_metadata().key_value_metadata().into_iter().flatten().find(|kv| kv.key == SOURCES_KEY);
        let Some(v) = kv.and_then(|kv| kv.value.as_deref()) else {
            return Err(LakeError::Read { path: path.into(), msg: format!("compacted file without {SOURCES_KEY}") });
        };
        return serde_json::from_str(v)
            .map_err(|e| LakeError::Read { path: path.into(), msg: format!("{SOURCES_KEY}: {e}") });
    }
    let run = ingest_run(path).unwrap_or(path).to_string();
    Ok(ts_range(md).map(|(lo, hi)| Source { run, lo, hi }).into_iter().collect())
}

/// How a compacted day of a table is split into files, so that a rule reading one part skips the
/// others' files by their statistics: sign-ins by category (service principal rules never read the
/// users' sign-ins, usually the bulk of the table) and, within a category, failures (`error_code`
/// other than 0) apart from the rest — about 1% of a tenant's sign-ins, which the failure rules read
/// alone and the success rules never read. Every file is still sorted by `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    /// A string column: one file per value.
    pub column: &'static str,
    /// An integer column: its non-zero values (failures) apart from zero and null.
    pub failures: Option<&'static str>,
}

/// The table's [`Cluster`], if its days are split.
pub fn cluster(table: Table) -> Option<Cluster> {
    match table {
        Table::Signins => Some(Cluster { column: "category", failures: Some("error_code") }),
        _ => None,
    }
}

/// A file's part of a split day: the cluster column's value and whether it holds failures.
type ClusterKey = (Option<String>, bool);

/// A batch split by the table's cluster (in first-seen order), or whole.
fn split_by(
    batch: &arrow::array::RecordBatch,
    table: Table,
) -> Result<Vec<(ClusterKey, arrow::array::RecordBatch)>, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray, UInt32Array};
    use arrow::datatypes::Int64Type;
    let Some(c) = cluster(table) else { return Ok(vec![((None, false), batch.clone())]) };
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| {
            arrow::error::ArrowError::SchemaError(format!("{}: no column {name} to split files by", table.name()))
        })
    };
    let values = column(c.column)?.as_string::<i32>();
    let failures = c.failures.map(column).transpose()?.map(|a| a.as_primitive::<Int64Type>());
    type Part<'a> = (Option<&'a str>, bool);
    let mut groups: Vec<(Part, Vec<u32>)> = Vec::new();
    for i in 0..batch.num_rows() {
        let failed = failures.is_some_and(|f| f.is_valid(i) && f.value(i) != 0);
        let k = ((!values.is_null(i)).then(|| values.value(i)), failed);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, idx)) => idx.push(i as u32),
            None => groups.push((k, vec![i as u32])),
        }
    }
    let owned = |(v, f): Part| (v.map(str::to_string), f);
    if groups.len() == 1 {
        return Ok(vec![(owned(groups[0].0), batch.clone())]);
    }
    groups
        .into_iter()
        .map(|(k, idx)| arrow::compute::take_record_batch(batch, &UInt32Array::from(idx)).map(|b| (owned(k), b)))
        .collect()
}

/// Exchanges two folders atomically (Linux `renameat2(RENAME_EXCHANGE)`); elsewhere, two renames.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
        let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
        // SAFETY: two valid NUL-terminated paths; the call reads them and changes nothing else.
        let rc =
            unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
    }
    // No exchange on this system or file system: a short moment where the day is empty.
    let name = a.file_name().and_then(|n| n.to_str()).unwrap_or("day");
    let tmp = a.with_file_name(format!("_exchange-{name}"));
    std::fs::rename(a, &tmp)?;
    std::fs::rename(b, a)?;
    std::fs::rename(&tmp, b)
}

fn props(sources: &[Source]) -> parquet::file::properties::WriterProperties {
    super::writer::props_builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            SOURCES_KEY.to_string(),
            serde_json::to_string(sources).expect("sources serialize"),
        )]))
        .build()
}

/// Staging folders of compactions that did not finish (`<table>/_compact-*`), removed by the
/// next writer.
pub fn remove_staging_folders(lake: &Lake) -> usize {
    let Some(root) = &lake.local_root else { return 0 };
    let mut n = 0;
    for t in ALL_TABLES {
        for e in std::fs::read_dir(root.join(t.name())).into_iter().flatten().flatten() {
            if e.file_name().to_str().is_some_and(|s| s.starts_with("_compact-"))
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                n += 1;
            }
        }
    }
    n
}

/// Compacts the days of the lake that `opts` selects. The caller holds the lake's write lock.
pub async fn compact(lake: &Lake, opts: &CompactOptions) -> Result<Vec<DayCompaction>, LakeError> {
    let Some(root) = lake.local_root.clone() else {
        return Err(LakeError::LocalOnly {
            what: "compaction",
            url: lake.url.clone(),
            instead: "its day files stay as ingest wrote them (queries are unaffected, only slower)",
        });
    };
    let tables: Vec<Table> = if opts.tables.is_empty() { ALL_TABLES.to_vec() } else { opts.tables.clone() };
    let mut out = Vec::new();
    for t in tables {
        let mut days: Vec<String> = std::fs::read_dir(root.join(t.name()))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("day=")).map(str::to_string))
            .filter(|d| {
                opts.days.as_ref().is_none_or(|(lo, hi)| d.as_str() >= lo.as_str() && d.as_str() <= hi.as_str())
            })
            .collect();
        days.sort();
        for day in days {
            if let Some(c) = compact_day(lake, &root, t, &day, opts).await? {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Compacts one day of one table when it has at least `opts.min_files` files and one of them is
/// not compacted yet (or `opts.force`).
pub async fn compact_day(
    lake: &Lake,
    root: &Path,
    table: Table,
    day: &str,
    opts: &CompactOptions,
) -> Result<Option<DayCompaction>, LakeError> {
    let started = std::time::Instant::now();
    let prefix = super::Lake::day_prefix(table, day);
    let mut files = Vec::new();
    let mut listing = lake.store.list(Some(&prefix));
    while let Some(m) = listing.next().await {
        let m = m.map_err(|e| LakeError::Store { url: prefix.to_string(), source: e })?;
        if m.location.as_ref().ends_with(".parquet") {
            files.push(m);
        }
    }
    let fresh = files.iter().filter(|f| !is_compacted(f.location.as_ref())).count();
    if files.len() < opts.min_files.max(1) || (fresh == 0 && !opts.force) {
        return Ok(None);
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    // The sources and row count of the day, from the footers.
    let mut by_run: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut rows_before = 0u64;
    for f in &files {
        let md = footer(lake, &f.location).await?;
        rows_before += md.file_metadata().num_rows().max(0) as u64;
        for s in sources(f.location.as_ref(), &md)? {
            let e = by_run.entry(s.run).or_insert((s.lo, s.hi));
            *e = (e.0.min(s.lo), e.1.max(s.hi));
        }
    }
    let sources: Vec<Source> = by_run.into_iter().map(|(run, (lo, hi))| Source { run, lo, hi }).collect();

    // One partition per file (each sorted by `ts`): the sort is a merge, streaming.
    let werr = |e: datafusion::error::DataFusionError| LakeError::Write { table: table.name(), msg: e.to_string() };
    let mut cfg = SessionConfig::new().with_target_partitions(files.len().min(512)).with_batch_size(2048);
    cfg.options_mut().optimizer.repartition_file_scans = false;
    let rt =
        RuntimeEnvBuilder::new().with_memory_pool(crate::memory::pool(opts.memory_limit)).build_arc().map_err(werr)?;
    let ctx = SessionContext::new_with_config_rt(cfg, rt);
    let url = ListingTableUrl::parse(format!("{}{}/day={}/", lake.url, table.name(), day)).map_err(werr)?;
    let listing = ListingOptions::new(Arc::new(crate::session::parquet_format()))
        .with_file_extension(".parquet")
        .with_file_sort_order(vec![vec![col("ts").sort(true, false)]]);
    let config = ListingTableConfig::new(url).with_listing_options(listing).with_schema(table.schema());
    let provider = ListingTable::try_new(config).map_err(werr)?;
    let df = ctx.read_table(Arc::new(provider)).map_err(werr)?.sort(vec![col("ts").sort(true, false)]).map_err(werr)?;
    let mut stream = df.execute_stream().await.map_err(werr)?;

    let id = format!("{}-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"), std::process::id());
    let staging_name = format!("_compact-{day}-{id}");
    let staging = StorePath::from(format!("{}/{staging_name}", table.name()));
    let perr = |e: parquet::errors::ParquetError| LakeError::Write { table: table.name(), msg: e.to_string() };
    let props = props(&sources);
    // One output file (per FILE_ROWS) per part of the table's cluster, each in ts order.
    let (mut seq, mut rows_after) = (0usize, 0u64);
    let mut writers: BTreeMap<ClusterKey, (AsyncArrowWriter<BufWriter>, usize)> = BTreeMap::new();
    let mut written = Vec::new();
    let result: Result<(), LakeError> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(werr)?;
            rows_after += batch.num_rows() as u64;
            for (key, part) in split_by(&batch, table).map_err(|e| LakeError::Write { table: table.name(), msg: e.to_string() })? {
                if !writers.contains_key(&key) {
                    seq += 1;
                    let path = staging.clone().join(format!("{id}-c{seq:05}.parquet").as_str());
                    written.push(path.clone());
                    let w = BufWriter::new(lake.store.clone(), path);
                    let w = AsyncArrowWriter::try_new(w, table.schema(), Some(props.clone())).map_err(perr)?;
                    writers.insert(key.clone(), (w, 0));
                }
                let (w, n) = writers.get_mut(&key).expect("opened above");
                w.write(&part).await.map_err(perr)?;
                *n += part.num_rows();
                if *n >= FILE_ROWS {
                    let (w, _) = writers.remove(&key).expect("open");
                    w.close().await.map_err(perr)?;
                }
            }
        }
        for (_, (w, _)) in std::mem::take(&mut writers) {
            w.close().await.map_err(perr)?;
        }
        if rows_after != rows_before {
            return Err(LakeError::Write {
                table: table.name(),
                msg: format!("compacting day {day}: read {rows_before} rows from the footers but merged {rows_after}; nothing was replaced"),
            });
        }
        Ok(())
    }
    .await;
    let staging_dir = root.join(table.name()).join(&staging_name);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging_dir);
        return Err(e);
    }
    let mut bytes_after = 0;
    for p in &written {
        bytes_after += lake.store.head(p).await.map_err(|e| read_err(p, e))?.size;
    }
    let day_dir = root.join(table.name()).join(format!("day={day}"));
    exchange(&day_dir, &staging_dir).map_err(|e| LakeError::Create { path: day_dir.clone(), source: e })?;
    // The staging folder now holds the old files.
    let _ = std::fs::remove_dir_all(&staging_dir);
    Ok(Some(DayCompaction {
        table: table.name(),
        day: day.to_string(),
        files_before: files.len(),
        files_after: written.len(),
        rows: rows_after,
        bytes_before: files.iter().map(|f| f.size).sum(),
        bytes_after,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            ingest_run("signins/day=2026-11-18/20261129T221412.561Z-99-00012.parquet"),
            Some("20261129T221412.561Z-99")
        );
        assert!(!is_compacted("signins/day=2026-11-18/20261129T221412.561Z-99-00012.parquet"));
        assert!(is_compacted("signins/day=2026-11-18/20261130T030000.000001Z-7-c00001.parquet"));
        assert_eq!(ingest_run("signins/day=2026-11-18/20261130T030000.000001Z-7-c00001.parquet"), None);
        assert!(!is_compacted("signins/day=2026-11-18/notes-c.parquet"));
    }
}
