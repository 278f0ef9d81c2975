//! Lake scans decode strings as views, and queries still see `Utf8`.
//!
//! Decoding a dictionary-encoded Parquet string column into `Utf8` copies every value's bytes out
//! of the dictionary, and a filter applied in the scan then copies the survivors again. Decoded as
//! `Utf8View` a value is a 16-byte view into the dictionary page: no copy, and the filter moves
//! views. On 4 days of sign-ins filtered down to a few hundred principals (the credential rule's
//! look-back), the copies and the page faults behind them were a third of the query.
//!
//! The columns the tables declare (`lake::schema`) stay `Utf8`: only the reader sees views. The
//! reader takes its column types from the file's embedded Arrow schema, so
//! [`rewrite`] (run last, in the session's `lake::LakeScans` rule) gives each lake Parquet scan a reader
//! factory whose files announce their top-level `Utf8` columns as `Utf8View`. DataFusion then
//! adapts the scan's expressions to the file as for any type difference: a comparison with a
//! constant is made on the views (the constant cast once), and the projection casts the rows that
//! survive the filter back to `Utf8`, so every operator above the scan sees the declared types.
//! (Views all the way up were faster still, but operators then hold views into whole pages, and
//! DataFusion counts each page once per batch that points into it: aggregations and sorts over
//! 30 days ran out of the memory pool.)
//!
//! A filter pushed into the scan (the query's own, and a join's, filled in after that
//! adaptation) would cast every view of the scanned column back to `Utf8` to test it:
//! `lake::view_filters` compares the views with the filter's constants instead.
//!
//! The files and their schema do not change; other readers (DuckDB, pyarrow) see the same
//! strings. A Ballista cluster plans its scans without this rule and reads `Utf8` as before.

use super::view_filters::ViewFilterAdapterFactory;
use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::Result;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileScanConfig, ParquetFileReaderFactory, ParquetSource};
use datafusion::physical_expr_adapter::PhysicalExprAdapterFactory;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::FutureExt;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{encode_arrow_schema, parquet_to_arrow_schema, ARROW_SCHEMA_META_KEY};
use parquet::file::metadata::{FileMetaData, KeyValue, ParquetMetaData, ParquetMetaDataBuilder};
use std::ops::Range;
use std::sync::Arc;

/// The scan's source reading through the views' reader factory, and the expression adapter that
/// adapts its predicates (`view_filters`, around the scan's own); None when the source has no
/// reader factory to wrap.
pub(crate) fn rewrite(
    config: &FileScanConfig,
    parquet: &ParquetSource,
) -> Option<(ParquetSource, Arc<dyn PhysicalExprAdapterFactory>)> {
    let inner = parquet.parquet_file_reader_factory()?.clone();
    let parquet = parquet.clone().with_parquet_file_reader_factory(Arc::new(ViewReaderFactory { inner }));
    Some((parquet, Arc::new(ViewFilterAdapterFactory::new(config.expr_adapter_factory.clone()))))
}

/// Wraps the scan's reader factory: the same reads, the metadata's Arrow schema with views.
#[derive(Debug)]
struct ViewReaderFactory {
    inner: Arc<dyn ParquetFileReaderFactory>,
}

impl ParquetFileReaderFactory for ViewReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        Ok(Box::new(ViewReader {
            inner: self.inner.create_reader(partition_index, file, metadata_size_hint, metrics)?,
        }))
    }
}

struct ViewReader {
    inner: Box<dyn AsyncFileReader + Send>,
}

impl AsyncFileReader for ViewReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move { with_views(self.inner.get_metadata(options).await?) }.boxed()
    }
}

/// The metadata with an embedded Arrow schema whose top-level `Utf8` columns are `Utf8View`
/// (the same metadata when it has none).
fn with_views(md: Arc<ParquetMetaData>) -> parquet::errors::Result<Arc<ParquetMetaData>> {
    let file = md.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())?;
    if !schema.fields().iter().any(|f| *f.data_type() == DataType::Utf8) {
        return Ok(md);
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    let views = Schema::new_with_metadata(fields, schema.metadata().clone());
    let mut kv: Vec<KeyValue> =
        file.key_value_metadata().into_iter().flatten().filter(|kv| kv.key != ARROW_SCHEMA_META_KEY).cloned().collect();
    kv.push(KeyValue::new(ARROW_SCHEMA_META_KEY.to_string(), encode_arrow_schema(&views)));
    let file = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(str::to_string),
        Some(kv),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let md = ParquetMetaDataBuilder::new(file)
        .set_row_groups(md.row_groups().to_vec())
        .set_column_index(md.column_index().cloned())
        .set_offset_index(md.offset_index().cloned())
        .build();
    Ok(Arc::new(md))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
    use parquet::arrow::arrow_writer::ArrowWriterOptions;
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::ParquetMetaDataReader;

    /// A Parquet file with a string, a number and a list of strings; with or without the
    /// embedded Arrow schema.
    fn file(embed_arrow_schema: bool) -> Bytes {
        let mut list = ListBuilder::new(StringBuilder::new());
        list.values().append_value("x");
        list.append(true);
        list.append(false);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("sp-1"), None])),
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(list.finish()),
        ];
        let batch = RecordBatch::try_from_iter(["name", "n", "tags"].into_iter().zip(columns)).unwrap();
        let mut out = Vec::new();
        let options = ArrowWriterOptions::new().with_skip_arrow_metadata(!embed_arrow_schema);
        let mut w = ArrowWriter::try_new_with_options(&mut out, batch.schema(), options).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        Bytes::from(out)
    }

    #[test]
    fn top_level_strings_become_views_and_read_the_same_values() {
        for embedded in [true, false] {
            let bytes = file(embedded);
            let md = Arc::new(ParquetMetaDataReader::new().parse_and_finish(&bytes).unwrap());
            let views = with_views(md.clone()).unwrap();
            let options = ArrowReaderOptions::new();
            let schema = ArrowReaderMetadata::try_new(views.clone(), options.clone()).unwrap().schema().clone();
            assert_eq!(schema.field(0).data_type(), &DataType::Utf8View, "embedded schema: {embedded}");
            assert_eq!(schema.field(1).data_type(), &DataType::Int64);
            // Nested strings stay as they were: only top-level columns change.
            let DataType::List(item) = schema.field(2).data_type() else { panic!("{schema:?}") };
            assert_eq!(item.data_type(), &DataType::Utf8);
            // The row groups and the column statistics are the file's.
            assert_eq!(views.row_groups(), md.row_groups());
            let meta = ArrowReaderMetadata::try_new(views, options).unwrap();
            let batch =
                ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, meta).build().unwrap().next().unwrap();
            let names = batch.unwrap();
            let names = names.column(0).as_any().downcast_ref::<datafusion::arrow::array::StringViewArray>().unwrap();
            assert_eq!((names.value(0), names.is_null(1)), ("sp-1", true));
        }
    }

    #[test]
    fn a_file_without_strings_keeps_its_metadata() {
        let mut out = Vec::new();
        let batch = RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let md = Arc::new(ParquetMetaDataReader::new().parse_and_finish(&Bytes::from(out)).unwrap());
        assert!(Arc::ptr_eq(&with_views(md.clone()).unwrap(), &md));
    }
}
