//! Export formats: recognizing a record's format and table, and mapping it to a lake row.
//!
//! Diagnostic-settings records (storage account or Event Hub), Log Analytics / Sentinel exports,
//! Microsoft Graph responses and Elastic ECS documents describe the same Entra objects with the same
//! field names in different cases (camelCase, PascalCase, snake_case), so one mapper per table
//! serves them all (see `normalize::get`); each format only finds the properties object and the
//! envelope around it.

pub mod entra;
pub mod envelope;
pub mod json;
pub mod network;
pub mod resource;
pub mod typed;

use crate::lake::Table;
use serde_json::{Map, Value};

/// The formats `--format` can force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Detect per file and per record.
    Auto,
    /// Azure Monitor diagnostic settings (storage account JSON lines, Event Hub `{"records":[…]}`).
    Diagnostic,
    /// Log Analytics / Sentinel table exports (JSON array, JSON lines, CSV).
    LogAnalytics,
    /// Microsoft Graph API responses (`{"value":[…]}`).
    Graph,
    /// Office 365 Management Activity API records.
    O365,
    /// Elastic ECS documents or search hits.
    Ecs,
    /// Suricata EVE JSON alerts.
    Suricata,
    /// CSV of network alerts (a time and a source IP at least).
    NetworkCsv,
}

/// One mapped record.
#[derive(Debug)]
pub struct Mapped {
    pub table: Table,
    pub ts: i64,
    /// Identity of the record within its table (id, plus version for re-sent records); `None`
    /// means the whole raw text is the identity.
    pub dedup_id: Option<String>,
    /// Values in the table's column order (`ts`, `ingested_at`, `raw`, `_key` are filled later).
    pub row: Vec<Value>,
    /// `event.ingested` from ECS input, when present.
    pub ingested_at: Option<i64>,
}

/// Builds a row by column name.
pub struct RowB {
    pub table: Table,
    pub vals: Vec<Value>,
    cols: &'static [&'static str],
    /// Where the next name is looked for first: mappers set columns mostly in schema order, so a
    /// lookup is usually one comparison instead of a scan of the table's columns.
    next: usize,
}

impl RowB {
    pub fn new(table: Table) -> Self {
        let cols = table.columns();
        RowB { table, vals: vec![Value::Null; cols.len()], cols, next: 0 }
    }
    /// A builder over a row already made.
    pub fn of(table: Table, vals: Vec<Value>) -> Self {
        RowB { table, vals, cols: table.columns(), next: 0 }
    }
    fn index(&mut self, col: &str) -> usize {
        let i = match self.cols.get(self.next) {
            Some(c) if *c == col => self.next,
            _ => self.table.col(col).unwrap_or_else(|| panic!("no column {col} in {}", self.table.name())),
        };
        self.next = i + 1;
        i
    }
    pub fn set(&mut self, col: &str, v: Value) {
        let i = self.index(col);
        self.vals[i] = v;
    }
    pub fn get(&self, col: &str) -> &Value {
        &self.vals[self.table.col(col).expect("known column")]
    }
}

/// Why a record was set aside.
pub type Reject = String;

/// Classifies one JSON record and maps it. Envelopes (`records`, `value`, search hits) are expanded
/// by the caller before this is called.
pub fn map_record(v: &Value, forced: Format) -> Result<Mapped, Reject> {
    let Some(obj) = v.as_object() else {
        return Err(format!("not a JSON object (a {})", type_name(v)));
    };
    let kind = match forced {
        Format::Auto => detect(obj).ok_or_else(|| {
            "unrecognized record: none of the known export shapes (diagnostic settings, Log Analytics, Graph, O365, ECS, Suricata)".to_string()
        })?,
        f => f,
    };
    in_range(match kind {
        Format::Diagnostic => entra::from_diagnostic(obj),
        Format::LogAnalytics => entra::from_log_analytics(obj),
        Format::Graph => entra::from_graph(obj),
        Format::O365 => entra::from_o365(obj, &entra::Env::default()),
        Format::Ecs => entra::from_ecs(obj),
        Format::Suricata => network::from_suricata(obj),
        Format::NetworkCsv => network::from_csv_row(obj),
        Format::Auto => unreachable!("resolved above"),
    })
}

/// Rejects a record whose time is outside the range the lake accepts (`crate::time`), so every
/// stored row stays queryable.
fn in_range(m: Result<Mapped, Reject>) -> Result<Mapped, Reject> {
    let m = m?;
    if crate::time::in_range(m.ts) {
        Ok(m)
    } else {
        let shown = chrono::DateTime::from_timestamp_micros(m.ts)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| format!("{} µs since the epoch", m.ts));
        Err(format!("timestamp out of range: {shown} (wisp accepts 1900-01-01 to 2199-12-31)"))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Recognizes a record's export format from its keys.
pub fn detect(obj: &Map<String, Value>) -> Option<Format> {
    let has = |k: &str| obj.contains_key(k);
    if has("@timestamp") || has("ecs") || has("event.ingested") {
        return Some(Format::Ecs);
    }
    if has("event_type") && (has("src_ip") || has("alert")) {
        return Some(Format::Suricata);
    }
    if (has("TimeGenerated") || has("Type")) && !has("time") {
        return Some(Format::LogAnalytics);
    }
    if has("time") && has("category") && (has("properties") || has("operationName")) {
        return Some(Format::Diagnostic);
    }
    if has("CreationTime") && has("Operation") {
        return Some(Format::O365);
    }
    if has("@odata.type")
        || has("createdDateTime")
        || has("activityDateTime")
        || has("detectedDateTime")
        || has("riskEventType")
    {
        return Some(Format::Graph);
    }
    None
}

/// What a CSV file holds, from its header row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvKind {
    /// A Log Analytics / Sentinel table export (a `Type` or `TimeGenerated` column).
    LogAnalytics,
    /// Network alerts (a time and a source address at least).
    Network,
}

impl CsvKind {
    pub fn of_headers(headers: &[String]) -> CsvKind {
        if headers.iter().any(|h| h == "Type" || h == "TimeGenerated") {
            CsvKind::LogAnalytics
        } else {
            CsvKind::Network
        }
    }
}

/// Maps one CSV row (header → non-empty value) by what the file holds, unless `--format` forces it.
pub fn map_csv_row(row: &Map<String, Value>, kind: CsvKind, forced: Format) -> Result<Mapped, Reject> {
    in_range(match (forced, kind) {
        (Format::Auto, CsvKind::LogAnalytics) | (Format::LogAnalytics, _) => entra::from_log_analytics(row),
        (Format::Auto, CsvKind::Network) | (Format::NetworkCsv, _) => network::from_csv_row(row),
        (f, _) => Err(format!("CSV input is not supported for --format {f:?}")),
    })
}
