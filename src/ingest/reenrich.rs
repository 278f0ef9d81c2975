//! Re-enrichment on purpose (`wisp ingest --reenrich`): the rows already in the lake get their ASN
//! and geo columns again from the databases given now (say, after an ingest without `--asn-db`, or
//! with an outdated one). Each Parquet file with a row that changes is rewritten under its own
//! name by an atomic replace: the same rows, keys, order, row groups and footer metadata (a
//! compacted file keeps its sources), so nothing is duplicated and a reader sees the old file or
//! the new one; files with nothing to change are left alone. The scheduler re-runs the windows of
//! rewritten files (it notices their modification time). As at ingest, a database hit replaces the ASN columns, a miss keeps what the row has,
//! and country and city are filled only where the log had none.

use super::enrich::Enricher;
use super::IngestError;
use crate::lake::{Lake, LakeError, Table, ALL_TABLES};
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use std::sync::Arc;

/// What a re-enrichment changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reenriched {
    /// Files rewritten (those with a row that changed).
    pub files: u64,
    pub rows: u64,
    /// Rows whose ASN or geo columns changed.
    pub rows_changed: u64,
}

impl std::fmt::Display for Reenriched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "re-enriched {} rows ({} changed), {} files rewritten", self.rows, self.rows_changed, self.files)
    }
}

/// Re-enriches every table with an address and ASN or geo columns. Call holding the write lock.
pub(super) async fn reenrich(lake: &Lake, enricher: &mut Enricher) -> Result<Reenriched, IngestError> {
    let mut out = Reenriched::default();
    for table in ALL_TABLES {
        let ip = table.col("source_ip").or_else(|| table.col("caller_ip"));
        let has = |c: &str| table.col(c).is_some();
        if ip.is_none() || !(has("source_asn") || has("country")) {
            continue;
        }
        let prefix = object_store::path::Path::from(table.name());
        let mut files = Vec::new();
        let mut list = lake.store.list(Some(&prefix));
        while let Some(m) = list.next().await {
            let m = m.map_err(|e| LakeError::Read { path: prefix.to_string(), msg: e.to_string() })?;
            if m.location.as_ref().ends_with(".parquet") {
                files.push(m.location);
            }
        }
        files.sort();
        for path in files {
            let rerr = |msg: String| LakeError::Read { path: path.to_string(), msg };
            let bytes = lake
                .store
                .get(&path)
                .await
                .map_err(|e| rerr(e.to_string()))?
                .bytes()
                .await
                .map_err(|e| rerr(e.to_string()))?;
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| rerr(e.to_string()))?;
            // The file keeps what its writer put in the footer (a compacted file's sources, the
            // sort order) and its row-group size.
            let md = builder.metadata().clone();
            let kv = md.file_metadata().key_value_metadata().cloned();
            let group_rows = md.row_groups().iter().map(|g| g.num_rows() as usize).max().unwrap_or(1 << 20);
            let reader = builder.with_batch_size(64 * 1024).build().map_err(|e| rerr(e.to_string()))?;
            let props = crate::lake::writer::props_builder()
                .set_max_row_group_row_count(Some(group_rows.max(1)))
                .set_key_value_metadata(kv)
                .build();
            let werr = |e: parquet::errors::ParquetError| LakeError::Write { table: table.name(), msg: e.to_string() };
            let mut encoded = Vec::new();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(&mut encoded, table.schema(), Some(props)).map_err(werr)?;
            let mut changed = 0;
            for b in reader {
                let b = b.map_err(|e| rerr(e.to_string()))?;
                let (b, c) = enrich_batch(table, &b, enricher).map_err(|e| rerr(e.to_string()))?;
                out.rows += b.num_rows() as u64;
                changed += c;
                w.write(&b).map_err(werr)?;
            }
            w.close().map_err(werr)?;
            out.rows_changed += changed;
            // A file with nothing changed stays as it is: no rewrite, nothing for the scheduler
            // to re-run.
            if changed == 0 {
                continue;
            }
            // Replaced under its own name, atomically; its new modification time is what tells
            // `wisp run` to re-run the windows it covers.
            lake.store
                .put(&path, PutPayload::from(encoded))
                .await
                .map_err(|e| LakeError::Store { url: path.to_string(), source: e })?;
            out.files += 1;
        }
    }
    Ok(out)
}

/// The batch with its ASN and geo columns recomputed; and how many rows changed.
fn enrich_batch(
    table: Table,
    b: &RecordBatch,
    enricher: &mut Enricher,
) -> Result<(RecordBatch, u64), arrow::error::ArrowError> {
    let ip_i = table.col("source_ip").or_else(|| table.col("caller_ip")).expect("checked by the caller");
    let ips = arrow::compute::cast(b.column(ip_i), &arrow::datatypes::DataType::Utf8)?;
    let ips = ips.as_string::<i32>();
    let text = |name: &str| -> Option<(usize, Vec<Option<String>>)> {
        let i = table.col(name)?;
        let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).ok()?;
        let c = c.as_string::<i32>();
        Some((i, (0..c.len()).map(|r| c.is_valid(r).then(|| c.value(r).to_string())).collect()))
    };
    let mut asn = table.col("source_asn").map(|i| {
        let c = b.column(i).as_primitive::<Int64Type>();
        (i, (0..c.len()).map(|r| c.is_valid(r).then(|| c.value(r))).collect::<Vec<_>>())
    });
    let mut org = text("source_as_org");
    let mut country = text("country");
    let mut city = text("city");
    let mut changed = 0u64;
    for r in 0..b.num_rows() {
        if !ips.is_valid(r) {
            continue;
        }
        let Some(addr) = wisp_udfs::ip::parse_ip(ips.value(r)) else { continue };
        let mut row_changed = false;
        if let (Some((_, a)), Some((_, o))) = (asn.as_mut(), org.as_mut()) {
            if let Some(hit) = enricher.lookup_asn(addr) {
                let new_org = hit.organization.map(|s| s.to_string());
                row_changed |= a[r] != Some(hit.number) || o[r] != new_org;
                a[r] = Some(hit.number);
                o[r] = new_org;
            }
        }
        if let (Some((_, c)), Some((_, t))) = (country.as_mut(), city.as_mut()) {
            if c[r].is_none() {
                if let Some(g) = enricher.lookup_geo(addr) {
                    row_changed |= g.country_iso.is_some();
                    c[r] = g.country_iso;
                    if t[r].is_none() {
                        t[r] = g.city;
                    }
                }
            }
        }
        changed += row_changed as u64;
    }
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    if let Some((i, v)) = asn {
        cols[i] = Arc::new(Int64Array::from(v));
    }
    for (i, v) in [org, country, city].into_iter().flatten() {
        cols[i] = Arc::new(StringArray::from(v));
    }
    Ok((RecordBatch::try_new(b.schema(), cols)?, changed))
}
