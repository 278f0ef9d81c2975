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

/// Plans, runs and writes a query as it streams; returns the rows written and what the query read.
pub async fn write_df(
    df: datafusion::dataframe::DataFrame,
    format: OutputFormat,
    out: Box<dyn Write + Send>,
    to_terminal: bool,
) -> Result<(u64, crate::query::ScanStats), OutputError> {
    let task = std::sync::Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let n =
        write_stream(datafusion::physical_plan::execute_stream(plan.clone(), task)?, format, out, to_terminal).await?;
    Ok((n, crate::query::ScanStats::of(&plan)))
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
            Sink::Csv(w) => w.write(b)?,
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
