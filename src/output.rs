//! Writers for any stream of record batches: table, csv, json, jsonl, parquet.

use crate::lake::listing::PlanPhases;
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
    let (plan, phases, rows) = match start(df.clone(), format).await {
        Err(e) if crate::query::out_of_memory(&e) => start(crate::query::retry_with_spilling_joins(df), format).await?,
        r => r?,
    };
    let schema = plan.schema();
    let n = match rows {
        Rows::Stream(mut stream, first) => {
            let mut sink = Sink::new(format, schema, out, to_terminal)?;
            if let Some(b) = first {
                sink.write(&b)?;
            }
            while let Some(batch) = stream.next().await {
                sink.write(&batch?)?;
            }
            let n = sink.finish()?;
            drop_aside(stream);
            n
        }
        Rows::Lines(mut lines, first, tasks) => {
            let mut out = out;
            let mut n = 0;
            let mut next = first;
            let mut header = format == OutputFormat::Csv;
            while let Some(part) = next {
                let (bytes, rows) = part?;
                if std::mem::take(&mut header) {
                    csv_header(&schema, &mut out)?;
                }
                out.write_all(&bytes)?;
                n += rows;
                next = lines.recv().await;
            }
            out.flush()?;
            drop_aside(tasks);
            n
        }
    };
    let mut scan = crate::query::ScanStats::of(&plan);
    scan.planning_us = planned.as_micros() as u64 + phases.total_us;
    scan.phases = PlanPhases { sql_us: planned.as_micros() as u64, ..phases };
    drop_aside(plan);
    Ok((n, scan))
}

/// Drops a finished query's plan or streams on a blocking thread: a plan of a few dozen nodes
/// with their metrics takes about half a millisecond to free, after the rows are written.
fn drop_aside<T: Send + 'static>(x: T) {
    drop(tokio::task::spawn_blocking(move || drop(x)));
}

/// A started query's rows: one stream formatted here, or — for JSON lines and CSV from a plan of
/// several partitions — each partition's batches formatted into lines by a task of its own on the
/// runtime's threads (a batch's lines depend on no other batch), the lines received here in the
/// order they are ready, as `execute_stream` would merge the partitions' batches.
enum Rows {
    Stream(SendableRecordBatchStream, Option<RecordBatch>),
    Lines(Lines, Option<Result<(Vec<u8>, u64), OutputError>>, tokio::task::JoinSet<()>),
}

type Lines = tokio::sync::mpsc::Receiver<Result<(Vec<u8>, u64), OutputError>>;

/// A started query: its plan, how long planning it took and where that time went, its rows.
type Started = (std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>, PlanPhases, Rows);

/// Plans and starts a query, up to its first batch (where a hash join's build side has run);
/// also returns how long the planning took.
async fn start(
    df: datafusion::dataframe::DataFrame,
    format: OutputFormat,
) -> Result<Started, datafusion::error::DataFusionError> {
    use datafusion::physical_plan::ExecutionPlanProperties;
    let task = std::sync::Arc::new(df.task_ctx());
    let (plan, phases) = crate::lake::listing::create_physical_plan_timed(df).await?;
    let partitions = plan.output_partitioning().partition_count();
    if !matches!(format, OutputFormat::Csv | OutputFormat::Jsonl) || partitions < 2 {
        let mut stream = datafusion::physical_plan::execute_stream(plan.clone(), task)?;
        let first = stream.next().await.transpose()?;
        return Ok((plan, phases, Rows::Stream(stream, first)));
    }
    let (tx, mut lines) = tokio::sync::mpsc::channel(partitions);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..partitions {
        let (plan, task, tx) = (plan.clone(), task.clone(), tx.clone());
        tasks.spawn(async move {
            let mut stream = match plan.execute(i, task) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            while let Some(b) = stream.next().await {
                let part = b.map_err(OutputError::from).and_then(|b| Ok((lines_of(format, &b)?, b.num_rows() as u64)));
                let failed = part.is_err();
                if tx.send(part).await.is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(tx);
    let first = match lines.recv().await {
        Some(Err(OutputError::Query(e))) => return Err(e),
        first => first,
    };
    Ok((plan, phases, Rows::Lines(lines, first, tasks)))
}

/// The CSV writer of every output (a header line before the first batch's rows when `header`).
fn csv_writer<W: Write>(out: W, header: bool) -> arrow::csv::Writer<W> {
    arrow::csv::WriterBuilder::new().with_header(header).build(out)
}

/// The JSON writer of every output, as lines or as one array (`F`): a null is written as
/// `null`, not left out.
fn json_writer<W: Write, F: arrow::json::writer::JsonFormat>(out: W) -> arrow::json::Writer<W, F> {
    arrow::json::WriterBuilder::new().with_explicit_nulls(true).build(out)
}

/// A batch as JSON lines or as CSV rows without a header, exactly as the one writer of
/// [`Sink`] writes them.
fn lines_of(format: OutputFormat, b: &RecordBatch) -> Result<Vec<u8>, OutputError> {
    let mut buf = Vec::new();
    if format == OutputFormat::Csv {
        let mut w = csv_writer(&mut buf, false);
        w.write(&nested_as_json(b)?)?;
        w.into_inner().flush()?;
    } else {
        let mut w = json_writer::<_, arrow::json::writer::LineDelimited>(&mut buf);
        w.write(b)?;
        w.finish()?;
    }
    Ok(buf)
}

/// The header line the CSV writer of [`Sink`] writes with its first batch.
fn csv_header(schema: &SchemaRef, out: &mut dyn Write) -> Result<(), OutputError> {
    let empty = nested_as_json(&RecordBatch::new_empty(schema.clone()))?;
    let mut w = csv_writer(out, true);
    w.write(&empty)?;
    w.into_inner().flush()?;
    Ok(())
}

/// The summary a query command prints on stderr once its rows are written: rows, what it read,
/// its time since `started` (planning included) and how much of it was planning.
pub fn summary(rows: u64, scan: &crate::query::ScanStats, started: std::time::Instant) -> String {
    format!(
        "{rows} row(s), {scan} in {:.4}s (planning {:.4}s)",
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
        let mut w = json_writer::<_, arrow::json::writer::LineDelimited>(&mut buf);
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
            OutputFormat::Csv => Sink::Csv(csv_writer(out, true)),
            OutputFormat::Json => Sink::Json(json_writer(out)),
            OutputFormat::Jsonl => Sink::Jsonl(json_writer(out)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, ListArray, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A table of `parts` partitions of three batches each: numbers, text with nulls and a list.
    fn session(parts: usize) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
            Field::new("l", DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))), true),
        ]));
        let batch = |p: usize, b: usize| {
            let base = (p * 3 + b) as i64 * 100;
            let ns: Vec<i64> = (base..base + 100).collect();
            let ss: Vec<Option<String>> = ns.iter().map(|n| (n % 7 != 0).then(|| format!("v\"{n},x"))).collect();
            let ls = ListArray::from_iter_primitive::<Int64Type, _, _>(
                ns.iter().map(|n| (n % 5 != 0).then(|| vec![Some(*n), None])),
            );
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(ns)), Arc::new(StringArray::from(ss)), Arc::new(ls)],
            )
            .unwrap()
        };
        let partitions = (0..parts).map(|p| (0..3).map(|b| batch(p, b)).collect()).collect();
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(parts));
        ctx.register_table("t", Arc::new(MemTable::try_new(schema.clone(), partitions).unwrap())).unwrap();
        ctx
    }

    async fn written(ctx: &SessionContext, sql: &str, format: OutputFormat) -> Result<(u64, String), OutputError> {
        let out = Shared::default();
        let df = ctx.sql(sql).await?;
        let (n, _) = write_df(df, format, Box::new(out.clone()), false, std::time::Instant::now()).await?;
        Ok((n, out.text()))
    }

    /// What the one writer of `Sink` writes for the query's rows.
    async fn expected(ctx: &SessionContext, sql: &str, format: OutputFormat) -> String {
        let df = ctx.sql(sql).await.unwrap();
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.unwrap();
        let out = Shared::default();
        write_batches(&batches, schema, format, Box::new(out.clone()), false).unwrap();
        out.text()
    }

    fn sorted_lines(s: &str) -> Vec<&str> {
        let mut v: Vec<&str> = s.lines().collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn lines_formatted_per_partition_are_the_one_writers_lines() {
        for parts in [1, 4] {
            let ctx = session(parts);
            for format in [OutputFormat::Jsonl, OutputFormat::Csv] {
                let sql = "SELECT n, s, l FROM t WHERE n % 3 <> 1";
                let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
                use datafusion::physical_plan::ExecutionPlanProperties;
                assert_eq!(plan.output_partitioning().partition_count(), parts, "the lines of each partition");
                let (n, got) = written(&ctx, sql, format).await.unwrap();
                let want = expected(&ctx, sql, format).await;
                assert_eq!(n, (parts * 300 - parts * 100) as u64, "{parts} {format:?}");
                assert_eq!(got.len(), want.len(), "{parts} {format:?}");
                if format == OutputFormat::Csv {
                    assert_eq!(got.lines().next(), Some("n,s,l"));
                    assert_eq!(got.matches("n,s,l").count(), 1, "one header");
                }
                assert_eq!(sorted_lines(&got), sorted_lines(&want), "{parts} {format:?}");
                // An ordered query keeps its order.
                let sql = "SELECT n, s FROM t ORDER BY n DESC";
                let (_, got) = written(&ctx, sql, format).await.unwrap();
                assert_eq!(got, expected(&ctx, sql, format).await, "{parts} {format:?} ordered");
            }
        }
    }

    #[tokio::test]
    async fn a_failing_partition_fails_the_output() {
        let ctx = session(4);
        for format in [OutputFormat::Jsonl, OutputFormat::Csv] {
            let e = written(&ctx, "SELECT CAST(concat('x', n) AS BIGINT) FROM t WHERE n > 1150", format).await;
            assert!(matches!(&e, Err(OutputError::Query(_))), "{:?}", e.map(|r| r.0));
        }
    }
}
