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

/// Alerts as a batch of the `alerts` schema, column by column.
pub fn to_batch(alerts: &[Alert]) -> Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
    let schema = alerts_schema();
    let text = |f: fn(&Alert) -> Option<&str>| Arc::new(alerts.iter().map(f).collect::<StringArray>()) as ArrayRef;
    let time = |i: usize, f: fn(&Alert) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(alerts.iter().map(f))
                .with_data_type(schema.field(i).data_type().clone()),
        )
    };
    let columns = vec![
        text(|a| Some(a.alert_id.as_str())),
        text(|a| Some(a.rule_id.as_str())),
        text(|a| Some(a.rule_name.as_str())),
        text(|a| Some(a.severity.as_str())),
        Arc::new(alerts.iter().map(|a| Some(a.risk_score)).collect::<Int32Array>()) as ArrayRef,
        time(5, |a| a.ts),
        time(6, |a| a.window_start),
        time(7, |a| a.window_end),
        time(8, |a| a.detected_at),
        text(|a| a.service_principal_id.as_deref()),
        text(|a| a.service_principal_name.as_deref()),
        text(|a| a.app_id.as_deref()),
        text(|a| a.source_ip.as_deref()),
        Arc::new(alerts.iter().map(|a| a.source_asn).collect::<Int64Array>()) as ArrayRef,
        text(|a| Some(a.fields.as_str())),
    ];
    RecordBatch::try_new(schema, columns)
}

/// The deterministic id: the same finding always gets the same id.
pub fn alert_id(rule_id: &str, key: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    for (k, v) in key {
        h.update([0x1f]);
        h.update(k.as_bytes());
        h.update([0x1e]);
        h.update(v.as_bytes());
    }
    let d = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for b in &d[..16] {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 15)] as char);
    }
    id
}

/// The column the one-pass backtest adds: the end of the scheduled run that reports the row.
pub const RUN_END: &str = "run_end_us";

/// One output row of a rule: its JSON (without `run_end_us`) and its typed columns.
pub(crate) struct Row {
    /// The row as a JSON object, keys in byte order: the alert's `fields`.
    pub fields: String,
    /// The compact JSON of the values of the rule's `alert_key` columns, then of its
    /// `suppress_by` columns, in their order (`null` for a column the row does not have).
    pub picked: Vec<String>,
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
    let mut out = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    let picks: Vec<&str> = rule.meta.alert_key.iter().chain(&rule.meta.suppress_by).map(String::as_str).collect();
    for b in batches {
        if b.num_rows() == 0 {
            continue;
        }
        let json = match sorted_rows(b, &picks) {
            Some(rows) => rows,
            None => value_rows(b, &picks),
        }
        .map_err(|e| bad(format!("converting output rows to JSON: {e}")))?;
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
        for (i, (fields, picked)) in json.into_iter().enumerate() {
            let get_s = |c: &Option<arrow::array::StringArray>| {
                c.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i).to_string())
            };
            let get_i = |c: &Option<arrow::array::Int64Array>| c.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i));
            out.push(Row {
                fields,
                picked,
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

/// A row's `fields` and picked values' texts.
type RowJson = (String, Vec<String>);

/// The rows as JSON through `serde_json::Value`: each row written by Arrow's JSON writer, read
/// back as an object (a repeated key keeps its last value; keys in byte order, nested ones too)
/// and written again without `run_end_us`. The definition of `fields` and of the picked values'
/// texts; [`sorted_rows`] is the same without the round trip where the column types allow.
fn value_rows(b: &RecordBatch, picks: &[&str]) -> Result<Vec<RowJson>, String> {
    let buf = arrow_json_lines(b)?;
    buf.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            let mut j: Map<String, Value> = serde_json::from_slice(l).map_err(|e| format!("row {i}: {e}"))?;
            j.remove(RUN_END);
            let picked = picks.iter().map(|k| json_text(j.get(*k).unwrap_or(&Value::Null))).collect();
            Ok((json_text(&Value::Object(j)), picked))
        })
        .collect()
}

/// [`value_rows`] without reading the rows back, for a batch whose columns have distinct plain
/// names and plain types (text, integers, booleans, dates, timestamps, lists of them): Arrow's
/// writer, given the columns in byte order of their names, writes exactly the object
/// `value_rows` writes again — strings escaped by the same serde escaper, integers as integers,
/// times as text, no objects whose keys would need sorting, no floats or decimals whose text a
/// round trip could change. `None` for any other batch. A picked value's text is the writer's
/// own (the row is scanned once, nothing copied).
fn sorted_rows(b: &RecordBatch, picks: &[&str]) -> Option<Result<Vec<RowJson>, String>> {
    let schema = b.schema();
    let mut names = std::collections::HashSet::new();
    for f in schema.fields() {
        let plain_name = !f.name().chars().any(|c| c == '"' || c == '\\' || c.is_control());
        if !plain_name || !names.insert(f.name().as_str()) || !plain_json(f.data_type()) {
            return None;
        }
    }
    let mut order: Vec<usize> = (0..schema.fields().len()).filter(|&i| schema.field(i).name() != RUN_END).collect();
    order.sort_by(|&x, &y| schema.field(x).name().as_bytes().cmp(schema.field(y).name().as_bytes()));
    Some(b.project(&order).map_err(|e| e.to_string()).and_then(|sorted| written_rows(&sorted, picks)))
}

/// The rows of a batch whose columns are in name order, as Arrow's writer writes them, with the
/// picked values' texts as written: each picked column written alone (`{"name":value}`, the
/// name plain), its value the line within that frame — the text the same writer gives the
/// column within the whole row, without reading every row's JSON back.
fn written_rows(sorted: &RecordBatch, picks: &[&str]) -> Result<Vec<RowJson>, String> {
    let text = String::from_utf8(arrow_json_lines(sorted)?).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.is_empty()).collect();
    let mut picked: Vec<Vec<String>> = vec![Vec::with_capacity(picks.len()); lines.len()];
    for k in picks {
        match sorted.schema().index_of(k) {
            Ok(c) => {
                let one = sorted.project(&[c]).map_err(|e| e.to_string())?;
                let values = String::from_utf8(arrow_json_lines(&one)?).map_err(|e| e.to_string())?;
                let prefix = format!("{{\"{k}\":");
                let mut n = 0;
                for (i, l) in values.split('\n').filter(|l| !l.is_empty()).enumerate() {
                    let v = l
                        .strip_prefix(prefix.as_str())
                        .and_then(|v| v.strip_suffix('}'))
                        .ok_or_else(|| format!("row {i}: column '{k}' written as {l}"))?;
                    picked
                        .get_mut(i)
                        .ok_or_else(|| format!("column '{k}' has more rows than the batch"))?
                        .push(v.to_string());
                    n += 1;
                }
                if n != lines.len() {
                    return Err(format!("column '{k}' gave {n} values for {} rows", lines.len()));
                }
            }
            Err(_) => picked.iter_mut().for_each(|p| p.push("null".to_string())),
        }
    }
    Ok(lines.into_iter().map(str::to_string).zip(picked).collect())
}

/// Types whose JSON, as Arrow's writer gives it, a serde round trip leaves unchanged.
fn plain_json(t: &DataType) -> bool {
    match t {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Date32
        | DataType::Timestamp(_, _) => true,
        DataType::List(f) | DataType::LargeList(f) => plain_json(f.data_type()),
        _ => false,
    }
}

/// A batch as JSON lines (nulls written), by Arrow's writer.
fn arrow_json_lines(b: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut w = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
    w.write(b).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(buf)
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
    let (keys, suppress) = row.picked.split_at(m.alert_key.len().min(row.picked.len()));
    let key: Vec<(&str, &str)> = m.alert_key.iter().map(String::as_str).zip(keys.iter().map(String::as_str)).collect();
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
        suppress_key: (!m.suppress_by.is_empty()).then(|| suppress.join("\u{1f}")),
        fields: row.fields,
    }
}

/// A value's compact JSON, as `Value::to_string` writes it, without going through `fmt` (which
/// took 1.7 µs an alert: a fifth of a 70,000-alert backtest's alert building).
fn json_text(v: &Value) -> String {
    serde_json::to_string(v).expect("a JSON value always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, BooleanArray, Date32Array, Int32Array, ListBuilder, StringBuilder, UInt64Array};
    use serde_json::json;
    use std::sync::Arc;

    /// Ids are stable across versions (the alert store and suppression key on them): SHA-256 of
    /// the rule id and each key's name and compact JSON value, its first 16 bytes in hex — the
    /// expected values computed apart (Python's hashlib over the same bytes).
    #[test]
    fn alert_ids_are_the_hash_of_the_rule_and_its_key_values() {
        assert_eq!(
            alert_id(
                "sp_unusual_source_asn",
                &[("service_principal_id", "\"id-sp-h\""), ("source_asn", "64508"), ("id", "\"h-edge\"")]
            ),
            "17730847916292ccc1a421dfc4771b4c"
        );
        let values = [json!("10.0.0.1"), json!(null), json!(["a", "b\"c"]), json!(1.5), json!(true), json!("ü\n")];
        let texts: Vec<String> = values.iter().map(json_text).collect();
        let names = ["ip", "n", "list", "x", "t", "é"];
        let key: Vec<(&str, &str)> = names.iter().copied().zip(texts.iter().map(String::as_str)).collect();
        assert_eq!(alert_id("r", &key), "3ea0bd27274c16033cdd11e5776a5c64");
    }

    /// The alerts' batch is the one Arrow's JSON decoder makes of the serialized alerts.
    #[test]
    fn alerts_batch_is_the_serialized_alerts() {
        let a = Alert {
            alert_id: "0123456789abcdef0123456789abcdef".into(),
            rule_id: "r".into(),
            rule_name: "Rule \"r\"".into(),
            severity: "high".into(),
            risk_score: 73,
            ts: 1_773_140_100_000_001,
            window_start: 1_773_140_000_000_000,
            window_end: 1_773_143_600_000_000,
            detected_at: 1_900_000_000_000_000,
            service_principal_id: Some("sp".into()),
            service_principal_name: None,
            app_id: Some("app".into()),
            source_ip: None,
            source_asn: Some(64508),
            fields: "{\"a\":1}".into(),
            suppress_key: Some("k".into()),
        };
        let b = Alert { source_asn: None, service_principal_id: None, severity: "low".into(), ..a.clone() };
        for alerts in [vec![], vec![a.clone()], vec![a, b]] {
            let mut d = arrow::json::ReaderBuilder::new(alerts_schema())
                .with_batch_size(alerts.len().max(1))
                .build_decoder()
                .unwrap();
            d.serialize(&alerts).unwrap();
            let want = d.flush().unwrap().unwrap_or_else(|| RecordBatch::new_empty(alerts_schema()));
            assert_eq!(to_batch(&alerts).unwrap(), want);
        }
    }

    /// A batch of every plain type, with nulls, escapes and non-ASCII text, names out of byte
    /// order and `run_end_us`: the rows written in sorted column order are the objects the serde
    /// round trip writes, picked values alike — and a float column takes the round trip.
    #[test]
    fn sorted_rows_are_the_round_trip_rows() {
        let mut list = ListBuilder::new(StringBuilder::new());
        list.values().append_value("a\"b");
        list.values().append_null();
        list.append(true);
        list.append(false);
        list.values().append_value("ü\u{1}\u{2028}");
        list.append(true);
        let ts = arrow::array::TimestampMicrosecondArray::from(vec![Some(1_773_140_100_000_001), None, Some(0)])
            .with_timezone("UTC");
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("zeta", Arc::new(arrow::array::StringArray::from(vec![Some("x\\y\n"), None, Some("é")]))),
            ("Alpha", Arc::new(Int32Array::from(vec![Some(-5), Some(0), None]))),
            ("_under", Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(7)]))),
            ("b", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]))),
            ("day", Arc::new(Date32Array::from(vec![Some(20_000), None, Some(-1)]))),
            ("ts", Arc::new(ts)),
            ("list", Arc::new(list.finish())),
            (RUN_END, Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3]))),
        ];
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        let picks = ["zeta", "missing", "_under", "list", "ts"];
        let fast = sorted_rows(&batch, &picks).expect("plain types take the direct path").unwrap();
        let slow = value_rows(&batch, &picks).unwrap();
        assert_eq!(fast, slow);
        assert!(fast[0].0.starts_with("{\"Alpha\":-5,\"_under\":18446744073709551615,\"b\":true,"), "{}", fast[0].0);
        assert!(!fast[0].0.contains(RUN_END));
        assert_eq!(fast[1].1[1], "null");

        let floats = RecordBatch::try_from_iter(vec![(
            "f",
            Arc::new(arrow::array::Float64Array::from(vec![0.1, 1e300])) as ArrayRef,
        )])
        .unwrap();
        assert!(sorted_rows(&floats, &["f"]).is_none());
        let dup = RecordBatch::try_new(
            Arc::new(arrow::datatypes::Schema::new(vec![
                arrow::datatypes::Field::new("a", DataType::Int32, true),
                arrow::datatypes::Field::new("a", DataType::Int32, true),
            ])),
            vec![Arc::new(Int32Array::from(vec![1])), Arc::new(Int32Array::from(vec![2]))],
        )
        .unwrap();
        assert!(sorted_rows(&dup, &["a"]).is_none());
        assert_eq!(value_rows(&dup, &["a"]).unwrap(), vec![("{\"a\":2}".to_string(), vec!["2".to_string()])]);
    }
}
