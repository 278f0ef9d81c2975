//! Writers for any stream of record batches: table, csv, json, jsonl, parquet.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use std::io::Write;

/// Output formats shared by every command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Table,
    Csv,
    Json,
    Jsonl,
    Parquet,
}

/// Writing output failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("formatting output: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("writing Parquet output: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("query failed: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("Parquet output needs -o FILE (it is binary)")]
    ParquetToTerminal,
}

/// Streams batches to `out` in the given format. Returns the number of rows.
pub async fn write_stream(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    out: Box<dyn Write + Send>,
    to_terminal: bool,
) -> Result<u64, OutputError> {
    let schema = stream.schema();
    let mut sink = Sink::new(format, schema, out, to_terminal)?;
    while let Some(batch) = stream.next().await {
        sink.write(&batch?)?;
    }
    sink.finish()
}

/// Plans, runs and writes a query as it streams; returns the rows written and what the query read,
/// with its planning time: from `started` (when the command began planning: SQL to plan) to here,
/// plus the physical planning. A query whose hash join runs out of the memory pool before its first
/// row runs again with joins that spill (`query::spilling_joins`).
pub async fn write_df(
    df: datafusion::dataframe::DataFrame,
    format: OutputFormat,
    out: Box<dyn Write + Send>,
    to_terminal: bool,
    started: std::time::Instant,
) -> Result<(u64, crate::query::ScanStats), OutputError> {
    let planned = started.elapsed();
    let (plan, planning, stream, first) = match start(df.clone()).await {
        Err(e) if crate::query::out_of_memory(&e) => start(crate::query::retry_with_spilling_joins(df)).await?,
        r => r?,
    };
    let schema = stream.schema();
    let mut sink = Sink::new(format, schema, out, to_terminal)?;
    if let Some(b) = first {
        sink.write(&b)?;
    }
    let mut stream = stream;
    while let Some(batch) = stream.next().await {
        sink.write(&batch?)?;
    }
    let n = sink.finish()?;
    let mut scan = crate::query::ScanStats::of(&plan);
    scan.planning_us = (planned + planning).as_micros() as u64;
    Ok((n, scan))
}

type Started = (
    std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    std::time::Duration,
    SendableRecordBatchStream,
    Option<RecordBatch>,
);

/// Plans and starts a query, up to its first batch (where a hash join's build side has run);
/// also returns how long the planning took.
async fn start(df: datafusion::dataframe::DataFrame) -> Result<Started, datafusion::error::DataFusionError> {
    let task = std::sync::Arc::new(df.task_ctx());
    let planning = std::time::Instant::now();
    let plan = crate::lake::listing::create_physical_plan(df).await?;
    let planning = planning.elapsed();
    let mut stream = datafusion::physical_plan::execute_stream(plan.clone(), task)?;
    let first = stream.next().await.transpose()?;
    Ok((plan, planning, stream, first))
}

/// The summary a query command prints on stderr once its rows are written: rows, what it read,
/// its time since `started` (planning included) and how much of it was planning.
pub fn summary(rows: u64, scan: &crate::query::ScanStats, started: std::time::Instant) -> String {
    format!(
        "{rows} row(s), {scan} in {:.3}s (planning {:.3}s)",
        started.elapsed().as_secs_f64(),
        scan.planning_us as f64 / 1e6
    )
}

/// Writes batches already in memory.
pub fn write_batches(
    batches: &[RecordBatch],
    schema: SchemaRef,
    format: OutputFormat,
    out: Box<dyn Write + Send>,
    to_terminal: bool,
) -> Result<u64, OutputError> {
    let mut sink = Sink::new(format, schema, out, to_terminal)?;
    for b in batches {
        sink.write(b)?;
    }
    sink.finish()
}

/// CSV has no lists or structs: such columns become JSON text in their cells (as other data tools
/// write them); NULL stays an empty cell.
fn nested_as_json(b: &RecordBatch) -> Result<RecordBatch, OutputError> {
    use arrow::datatypes::{DataType, Field, Schema};
    let nested = |t: &DataType| t.is_nested();
    if !b.schema().fields().iter().any(|f| nested(f.data_type())) {
        return Ok(b.clone());
    }
    let mut fields = Vec::new();
    let mut cols: Vec<arrow::array::ArrayRef> = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if !nested(f.data_type()) {
            fields.push(f.as_ref().clone());
            cols.push(c.clone());
            continue;
        }
        let one = RecordBatch::try_new(
            std::sync::Arc::new(Schema::new(vec![Field::new("v", f.data_type().clone(), true)])),
            vec![c.clone()],
        )?;
        let mut buf = Vec::new();
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        w.write(&one)?;
        w.finish()?;
        drop(w);
        let mut texts = Vec::with_capacity(b.num_rows());
        for line in buf.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            let mut row: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(line).map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))?;
            texts.push(match row.remove("v") {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(v.to_string()),
            });
        }
        fields.push(Field::new(f.name(), DataType::Utf8, true));
        cols.push(std::sync::Arc::new(arrow::array::StringArray::from(texts)));
    }
    Ok(RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), cols)?)
}

enum Sink {
    Table(Vec<RecordBatch>, Box<dyn Write + Send>),
    Csv(arrow::csv::Writer<Box<dyn Write + Send>>),
    Json(arrow::json::ArrayWriter<Box<dyn Write + Send>>),
    Jsonl(arrow::json::LineDelimitedWriter<Box<dyn Write + Send>>),
    Parquet(parquet::arrow::ArrowWriter<Box<dyn Write + Send>>),
}

struct Counting {
    sink: Sink,
    rows: u64,
}

impl Sink {
    #[allow(clippy::new_ret_no_self)]
    fn new(
        format: OutputFormat,
        schema: SchemaRef,
        out: Box<dyn Write + Send>,
        to_terminal: bool,
    ) -> Result<Counting, OutputError> {
        let sink = match format {
            OutputFormat::Table => Sink::Table(Vec::new(), out),
            OutputFormat::Csv => Sink::Csv(arrow::csv::WriterBuilder::new().with_header(true).build(out)),
            OutputFormat::Json => Sink::Json(arrow::json::WriterBuilder::new().with_explicit_nulls(true).build(out)),
            OutputFormat::Jsonl => Sink::Jsonl(arrow::json::WriterBuilder::new().with_explicit_nulls(true).build(out)),
            OutputFormat::Parquet => {
                if to_terminal {
                    return Err(OutputError::ParquetToTerminal);
                }
                Sink::Parquet(parquet::arrow::ArrowWriter::try_new(out, schema, None)?)
            }
        };
        Ok(Counting { sink, rows: 0 })
    }
}

impl Counting {
    fn write(&mut self, b: &RecordBatch) -> Result<(), OutputError> {
        self.rows += b.num_rows() as u64;
        match &mut self.sink {
            Sink::Table(v, _) => v.push(b.clone()),
            Sink::Csv(w) => w.write(&nested_as_json(b)?)?,
            Sink::Json(w) => w.write(b)?,
            Sink::Jsonl(w) => w.write(b)?,
            Sink::Parquet(w) => w.write(b)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<u64, OutputError> {
        match self.sink {
            Sink::Table(v, mut out) => {
                writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&v)?)?;
                out.flush()?;
            }
            Sink::Csv(w) => w.into_inner().flush()?,
            Sink::Json(mut w) => {
                w.finish()?;
                let mut out = w.into_inner();
                writeln!(out)?;
                out.flush()?;
            }
            Sink::Jsonl(mut w) => {
                w.finish()?;
                w.into_inner().flush()?;
            }
            Sink::Parquet(w) => {
                w.close()?;
            }
        }
        Ok(self.rows)
    }
}
