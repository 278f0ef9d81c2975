//! Alerts: the `alerts` table of the lake contract, deterministic ids, and turning a rule's output
//! batches into alerts. Typed columns (`ts`, `run_end_us`, the identity columns) are read straight
//! from Arrow; the whole row, as JSON, is the alert's `fields`.

use crate::rules::{Rule, RuleError, RunWindow};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// One alert, as the `alerts` table holds it (timestamps in microseconds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub alert_id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub severity: String,
    pub risk_score: i32,
    pub ts: i64,
    pub window_start: i64,
    pub window_end: i64,
    pub detected_at: i64,
    pub service_principal_id: Option<String>,
    pub service_principal_name: Option<String>,
    pub app_id: Option<String>,
    pub source_ip: Option<String>,
    pub source_asn: Option<i64>,
    pub fields: String,
    /// Values of the rule's `suppress_by` columns (not part of the alerts table).
    #[serde(skip)]
    pub suppress_key: Option<String>,
}

pub use crate::lake::schema::alerts_schema;

/// Alerts as a batch of the `alerts` schema.
pub fn to_batch(alerts: &[Alert]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut d =
        arrow::json::ReaderBuilder::new(alerts_schema()).with_batch_size(alerts.len().max(1)).build_decoder()?;
    d.serialize(alerts)?;
    Ok(d.flush()?.unwrap_or_else(|| RecordBatch::new_empty(alerts_schema())))
}

/// The deterministic id: the same finding always gets the same id.
pub fn alert_id(rule_id: &str, key: &[(&str, &Value)]) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    for (k, v) in key {
        h.update([0x1f]);
        h.update(k.as_bytes());
        h.update([0x1e]);
        h.update(v.to_string().as_bytes());
    }
    let d = h.finalize();
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The column the one-pass backtest adds: the end of the scheduled run that reports the row.
pub const RUN_END: &str = "run_end_us";

/// One output row of a rule: its JSON (without `run_end_us`) and its typed columns.
pub(crate) struct Row {
    pub json: Map<String, Value>,
    /// The rule's timestamp column, in microseconds (NULL → the window's start).
    pub ts: Option<i64>,
    /// `run_end_us`, for rows of a one-pass backtest.
    pub run_end: Option<i64>,
    pub service_principal_id: Option<String>,
    pub service_principal_name: Option<String>,
    pub app_id: Option<String>,
    pub source_ip: Option<String>,
    pub source_asn: Option<i64>,
    pub severity: Option<String>,
}

/// A rule's output batches as rows. Every row converts or the run fails with the reason: no row
/// is dropped silently.
pub(crate) fn rows_of(rule: &Rule, batches: &[RecordBatch]) -> Result<Vec<Row>, RuleError> {
    let bad = |msg: String| rule.invalid(msg);
    let mut out = Vec::new();
    for b in batches {
        if b.num_rows() == 0 {
            continue;
        }
        let json = json_rows(b).map_err(|e| bad(format!("converting output rows to JSON: {e}")))?;
        if json.len() != b.num_rows() {
            return Err(bad(format!("{} output rows gave {} JSON rows", b.num_rows(), json.len())));
        }
        let ts = ts_col(b, &rule.meta.timestamp_field).map_err(&bad)?;
        let run_end = int_col(b, RUN_END).map_err(&bad)?;
        let text = |name: &str| str_col(b, name);
        let (spid, spname, app, ip, sev) = (
            text("service_principal_id"),
            text("service_principal_name"),
            text("app_id"),
            text("source_ip"),
            text("severity"),
        );
        let asn = int_col(b, "source_asn").unwrap_or(None);
        for (i, mut j) in json.into_iter().enumerate() {
            j.remove(RUN_END);
            let get_s = |c: &Option<arrow::array::StringArray>| {
                c.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i).to_string())
            };
            let get_i = |c: &Option<arrow::array::Int64Array>| c.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i));
            out.push(Row {
                json: j,
                ts: ts.as_ref().and_then(|a| a.is_valid(i).then(|| a.value(i))),
                run_end: get_i(&run_end),
                service_principal_id: get_s(&spid),
                service_principal_name: get_s(&spname),
                app_id: get_s(&app),
                source_ip: get_s(&ip),
                source_asn: get_i(&asn),
                severity: get_s(&sev),
            });
        }
    }
    Ok(out)
}

fn json_rows(b: &RecordBatch) -> Result<Vec<Map<String, Value>>, String> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        w.write(b).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    buf.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_slice(l).map_err(|e| format!("row {i}: {e}")))
        .collect()
}

/// The timestamp column as microseconds (a timestamp of any unit or zone, a date, or text).
fn ts_col(b: &RecordBatch, name: &str) -> Result<Option<arrow::array::TimestampMicrosecondArray>, String> {
    let Some(c) = b.column_by_name(name) else {
        return Err(format!("the query must output the timestamp column '{name}'"));
    };
    let target = DataType::Timestamp(TimeUnit::Microsecond, None);
    // Strict: a value that does not convert is an error, not a NULL.
    let strict = arrow::compute::CastOptions { safe: false, ..Default::default() };
    let cast = match c.data_type() {
        DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::Null
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View => arrow::compute::cast_with_options(c, &target, &strict),
        other => return Err(format!("timestamp column '{name}' has type {other}, not a timestamp")),
    }
    .map_err(|e| format!("timestamp column '{name}': {e}"))?;
    Ok(Some(cast.as_primitive::<TimestampMicrosecondType>().clone()))
}

/// An integer column as Int64; absent → None; another type → an error for `run_end_us`, None else.
fn int_col(b: &RecordBatch, name: &str) -> Result<Option<arrow::array::Int64Array>, String> {
    let Some(c) = b.column_by_name(name) else { return Ok(None) };
    if !c.data_type().is_integer() {
        return Err(format!("column '{name}' has type {}, not an integer", c.data_type()));
    }
    let c = arrow::compute::cast(c, &DataType::Int64).map_err(|e| format!("column '{name}': {e}"))?;
    Ok(Some(c.as_primitive::<Int64Type>().clone()))
}

/// A text column as Utf8; absent or not text → None.
fn str_col(b: &RecordBatch, name: &str) -> Option<arrow::array::StringArray> {
    let c = b.column_by_name(name)?;
    match c.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            arrow::compute::cast(c, &DataType::Utf8).ok().map(|c| c.as_string::<i32>().clone())
        }
        _ => None,
    }
}

/// The alert of one row of a run over `w`.
pub(crate) fn make_alert(rule: &Rule, row: Row, w: &RunWindow, detected_at: chrono::DateTime<chrono::Utc>) -> Alert {
    let m = &rule.meta;
    let j = row.json;
    let key: Vec<(&str, &Value)> = m.alert_key.iter().map(|k| (k.as_str(), j.get(k).unwrap_or(&Value::Null))).collect();
    Alert {
        alert_id: alert_id(&m.id, &key),
        rule_id: m.id.clone(),
        rule_name: m.name.clone(),
        severity: row.severity.map(|s| s.to_ascii_lowercase()).unwrap_or_else(|| m.severity.clone()),
        risk_score: m.risk_score,
        ts: row.ts.unwrap_or(w.start.timestamp_micros()),
        window_start: w.start.timestamp_micros(),
        window_end: w.end.timestamp_micros(),
        detected_at: detected_at.timestamp_micros(),
        service_principal_id: row.service_principal_id,
        service_principal_name: row.service_principal_name,
        app_id: row.app_id,
        source_ip: row.source_ip,
        source_asn: row.source_asn,
        suppress_key: (!m.suppress_by.is_empty()).then(|| {
            m.suppress_by
                .iter()
                .map(|k| j.get(k).unwrap_or(&Value::Null).to_string())
                .collect::<Vec<_>>()
                .join("\u{1f}")
        }),
        fields: Value::Object(j).to_string(),
    }
}
