//! Where the versions of each risk detection are: an index of the days each `id` of
//! `sp_risk_events` has rows in, so a rule that ranks every version of the detections in its window opens
//! only the days holding one, not the whole lake's.
//!
//! A detection is re-sent as its state changes, and each version lands in the day of its own
//! `ts` (`detectedDateTime`, else the record's time), so the versions of one detection can sit in
//! any days. Risk stacking takes the latest version of each detection with a version in its
//! window; without this index that join opens every day file of the table (30 of them for a
//! month, where a window's detections are nearly always in one).
//!
//! The index is written by the refresh that follows compaction (`rollups::refresh`, after every
//! ingest that wrote and every `wisp compact`): the distinct pairs of every day before today
//! (UTC; today's files change with every ingest), sorted, at
//! `_rollups/sp_risk_event_days/upto=<today>/src=<fingerprint>/<fingerprint>.parquet`. The
//! fingerprint hashes the exact files (path, size, modification time) of every day before `upto`.
//! The index keeps `key_hash(id)` (a stable 64-bit hash, `wisp_udfs::hash`), not the id: eight
//! bytes a pair instead of 36 (a month of medium's detections, 50 K pairs, was 1 MB read whole for
//! a window's few ids), and a lookup by hash finds every day of the id and at most a few more.
//! A session registers the view `sp_risk_event_days` (`h`, `day`): the stored pairs of the newest
//! version whose fingerprint the current files still give, and the table's own rows of the days
//! from `upto` on; with no such version (never written, or a day before `upto` gained, lost or
//! changed a file since), the table's rows of every day. A day's pair is listed once per version
//! in the raw part: readers take `DISTINCT` where it matters. The view never misses a day that
//! holds a version; a superset (a day emptied since) only opens a file more.

use crate::lake::{Lake, LakeError, Table};
use crate::rollups::{cast_to, hex12, store_err, DayFiles, RollupWrite, FOLDER};
use crate::session::SessionError;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The view's name, and the index's folder under `_rollups`.
pub const NAME: &str = "sp_risk_event_days";

/// The table indexed.
const TABLE: Table = Table::SpRiskEvents;

/// One stored version of the index.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    /// The first day it does not cover.
    upto: String,
    fingerprint: String,
    path: StorePath,
    modified: chrono::DateTime<chrono::Utc>,
}

/// The fingerprint of the days before `upto`: their data files (path, size, modification time).
fn fingerprint(files: &BTreeMap<String, Vec<String>>, upto: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("wisp version days 2 key_hash\n{}\n", TABLE.name()));
    for (day, list) in files.iter().take_while(|(day, _)| day.as_str() < upto) {
        h.update(format!("{day}\n{}\n", list.join("\n")));
    }
    hex12(h)
}

/// The stored versions, oldest `upto` first.
async fn stored(lake: &Lake) -> Result<Vec<Stored>, LakeError> {
    let mut out = Vec::new();
    let prefix = StorePath::from(format!("{FOLDER}/{NAME}"));
    let mut list = lake.store.list(Some(&prefix));
    while let Some(m) = list.next().await {
        let m = m.map_err(|e| store_err(&format!("{}{prefix}/", lake.url), e))?;
        let path = m.location.as_ref();
        let mut parts = path.rsplit('/');
        let (Some(name), Some(src), Some(upto)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Some(src), Some(upto)) = (src.strip_prefix("src="), upto.strip_prefix("upto=")) else { continue };
        if name == format!("{src}.parquet") && chrono::NaiveDate::parse_from_str(upto, "%Y-%m-%d").is_ok() {
            out.push(Stored {
                upto: upto.to_string(),
                fingerprint: src.to_string(),
                path: m.location.clone(),
                modified: m.last_modified,
            });
        }
    }
    out.sort_by(|a, b| (&a.upto, &a.fingerprint).cmp(&(&b.upto, &b.fingerprint)));
    Ok(out)
}

/// The newest stored version the current files still fingerprint as stored.
fn current<'a>(stored: &'a [Stored], files: &BTreeMap<String, Vec<String>>) -> Option<&'a Stored> {
    stored.iter().rev().find(|s| fingerprint(files, &s.upto) == s.fingerprint)
}

/// Writes the index of the days before today when the stored one is not of exactly those files,
/// then removes the other versions once the current one is older than `keep_replaced` (a session
/// that checked one before it was replaced still finds it). Returns what it wrote.
pub async fn refresh(
    lake: &Lake,
    memory_limit: usize,
    keep_replaced: std::time::Duration,
) -> Result<Option<RollupWrite>, SessionError> {
    let upto = chrono::Utc::now().date_naive().format("%Y-%m-%d").to_string();
    let files = DayFiles::list(lake, &[TABLE]).await?.0.remove(&TABLE).unwrap_or_default();
    let fp = fingerprint(&files, &upto);
    let before = stored(lake).await?;
    let mut written = None;
    let (keep, kept_since) = match before.iter().find(|s| s.upto == upto && s.fingerprint == fp) {
        Some(s) => (s.path.clone(), s.modified),
        None => {
            let path = StorePath::from(format!("{FOLDER}/{NAME}/upto={upto}/src={fp}/{fp}.parquet"));
            let started = std::time::Instant::now();
            let rows = write(lake, memory_limit, &upto, path.clone()).await?;
            written = Some(RollupWrite {
                rollup: NAME,
                day: upto.clone(),
                week: false,
                events: rows,
                rows,
                seconds: started.elapsed().as_secs_f64(),
            });
            (path, chrono::Utc::now())
        }
    };
    if (chrono::Utc::now() - kept_since).to_std().unwrap_or_default() >= keep_replaced {
        for s in before.iter().filter(|s| s.path != keep) {
            lake.store.delete(&s.path).await.map_err(|e| store_err(&format!("{}{}", lake.url, s.path), e))?;
            if let Some(root) = &lake.local_root {
                // A local store leaves the emptied folders behind.
                let file = root.join(s.path.as_ref());
                for dir in file.ancestors().skip(1).take(2) {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
    }
    Ok(written)
}

/// The stored file's columns.
fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![Field::new("h", DataType::Int64, false), Field::new("day", DataType::Utf8, false)]))
}

/// Writes the distinct (`key_hash(id)`, `day`) pairs of the days before `upto` to `path`, sorted,
/// complete before it is visible; returns the pairs written.
async fn write(lake: &Lake, memory_limit: usize, upto: &str, path: StorePath) -> Result<u64, SessionError> {
    use parquet::arrow::async_writer::AsyncArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let opts = crate::session::SessionOptions { memory_limit, ..Default::default() }.for_sql([TABLE.name()]);
    let ctx = crate::session::open(lake, &opts).await?;
    let sql = format!(
        "SELECT DISTINCT key_hash(id) AS h, day FROM {} WHERE id IS NOT NULL AND day < '{upto}' ORDER BY h, day",
        TABLE.name()
    );
    let mut stream = ctx.sql(&sql).await?.execute_stream().await?;
    // Sorted hashes, delta-encoded.
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")))
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_column_dictionary_enabled("h".into(), false)
        .set_column_encoding("h".into(), parquet::basic::Encoding::DELTA_BINARY_PACKED)
        .build();
    let werr = |e: parquet::errors::ParquetError| LakeError::Write { table: "_rollups", msg: format!("{NAME}: {e}") };
    let w = object_store::buffered::BufWriter::new(lake.store.clone(), path);
    let schema = schema();
    let mut w = AsyncArrowWriter::try_new(w, schema.clone(), Some(props)).map_err(werr)?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let columns = cast_to(&batch?, &schema)
            .map_err(|e| LakeError::Write { table: "_rollups", msg: format!("{NAME}: {e}") })?;
        rows += columns.num_rows() as u64;
        w.write(&columns).await.map_err(werr)?;
    }
    w.close().await.map_err(werr)?;
    Ok(rows)
}

/// Registers the view `sp_risk_event_days` (after the tables): the current index and the table's
/// rows of the days it does not cover, or the table's rows of every day. Returns the `upto` of
/// the index it reads, if any.
pub async fn register(ctx: &SessionContext, lake: &Lake) -> Result<Option<String>, SessionError> {
    let table = TABLE.name();
    let versions = stored(lake).await?;
    let index = if versions.is_empty() {
        None
    } else {
        let files = DayFiles::list(lake, &[TABLE]).await?.0.remove(&TABLE).unwrap_or_default();
        current(&versions, &files).cloned()
    };
    let sql = match &index {
        Some(s) => {
            let stored = format!("__{NAME}_index");
            let url = ListingTableUrl::parse(format!("{}{}", lake.url, s.path))?;
            let options =
                ListingOptions::new(Arc::new(crate::session::parquet_format())).with_file_extension(".parquet");
            let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(schema());
            let _ = ctx.deregister_table(stored.as_str())?;
            ctx.register_table(stored.as_str(), Arc::new(ListingTable::try_new(config)?))?;
            format!(
                "SELECT h, day FROM {stored} UNION ALL SELECT key_hash(id) AS h, day FROM {table} WHERE day >= '{}'",
                s.upto
            )
        }
        None => format!("SELECT key_hash(id) AS h, day FROM {table}"),
    };
    let _ = ctx.deregister_table(NAME)?;
    ctx.sql(&format!("CREATE VIEW {NAME} AS {sql}")).await?;
    Ok(index.map(|s| s.upto))
}

#[cfg(test)]
mod tests {
    use super::{current, fingerprint, Stored};
    use std::collections::BTreeMap;

    #[test]
    fn an_index_is_current_while_the_days_before_its_end_keep_their_files() {
        let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
        files.insert("2026-11-18".into(), vec!["a\t10\t1".into()]);
        files.insert("2026-11-19".into(), vec!["b\t10\t1".into()]);
        let version = |upto: &str, files: &BTreeMap<String, Vec<String>>| Stored {
            upto: upto.into(),
            fingerprint: fingerprint(files, upto),
            path: format!("_rollups/x/upto={upto}/x.parquet").as_str().into(),
            modified: chrono::Utc::now(),
        };
        let old = version("2026-11-19", &files);
        let new = version("2026-11-20", &files);
        let both = [old.clone(), new.clone()];
        assert_eq!(current(&both, &files), Some(&new));
        // A file for a day from `upto` on changes only the versions that cover it.
        files.insert("2026-11-20".into(), vec!["c\t10\t1".into()]);
        assert_eq!(current(&both, &files), Some(&new));
        // A late file for 2026-11-19: only the version ending before it is still exact.
        files.get_mut("2026-11-19").unwrap().push("d\t5\t2".into());
        assert_eq!(current(&both, &files), Some(&old));
        // A file rewritten in place (size or time) and a day emptied: no version is.
        files.get_mut("2026-11-18").unwrap()[0] = "a\t11\t1".into();
        assert_eq!(current(&both, &files), None);
        files.remove("2026-11-18");
        assert_eq!(current(&both, &files), None);
    }
}
