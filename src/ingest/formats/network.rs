//! Network security alerts: Suricata EVE JSON and CSV exports.

use super::{Mapped, Reject, RowB};
use crate::ingest::normalize::{as_str, get, i, ip, s, time_of};
use crate::lake::Table;
use serde_json::{Map, Value};

/// Suricata EVE JSON: only `event_type: "alert"` records are alerts.
pub fn from_suricata(o: &Map<String, Value>) -> Result<Mapped, Reject> {
    let et = as_str(get(o, &["event_type"])).unwrap_or_default();
    if et != "alert" {
        return Err(format!("not an alert: Suricata event_type '{et}'"));
    }
    let mut r = RowB::new(Table::NetworkAlerts);
    let src = ip(get(o, &["src_ip"])).ok_or("Suricata alert without a valid src_ip")?;
    r.set("source_ip", Value::String(src));
    r.set("destination_ip", ip(get(o, &["dest_ip"])).map(Value::String).unwrap_or(Value::Null));
    r.set("source_port", i(o, &["src_port"]));
    r.set("destination_port", i(o, &["dest_port"]));
    r.set("rule_id", s(o, &["alert.signature_id"]));
    r.set("rule_name", s(o, &["alert.signature"]));
    r.set("severity", s(o, &["alert.severity"]));
    r.set("category", s(o, &["alert.category"]));
    r.set("provider", Value::String("suricata".into()));
    let ts = time_of(get(o, &["timestamp"])).ok_or("missing or unparsable timestamp (timestamp)")?;
    let id = as_str(get(o, &["flow_id"]))
        .map(|f| format!("{f}-{}-{ts}", as_str(get(o, &["alert.signature_id"])).unwrap_or_default()));
    r.set("id", id.clone().map(Value::String).unwrap_or(Value::Null));
    Ok(Mapped { table: Table::NetworkAlerts, ts, dedup_id: id, row: r.vals, ingested_at: None })
}

/// A CSV row of a network alert export, as header → value.
pub fn from_csv_row(o: &Map<String, Value>) -> Result<Mapped, Reject> {
    let mut r = RowB::new(Table::NetworkAlerts);
    let raw_src = get(o, &["source_ip", "src_ip", "SourceIP", "source.ip", "srcaddr", "src"]);
    if raw_src.is_none() {
        return Err("network alert CSV row without a source IP column (source_ip, src_ip, SourceIP)".into());
    }
    let src = ip(raw_src).ok_or_else(|| format!("bad source IP '{}'", as_str(raw_src).unwrap_or_default()))?;
    r.set("source_ip", Value::String(src));
    r.set(
        "destination_ip",
        ip(get(o, &["destination_ip", "dest_ip", "DestinationIP", "dst"])).map(Value::String).unwrap_or(Value::Null),
    );
    r.set("source_port", i(o, &["source_port", "src_port"]));
    r.set("destination_port", i(o, &["destination_port", "dest_port", "dst_port"]));
    r.set("rule_id", s(o, &["rule_id", "signature_id", "RuleId"]));
    r.set("rule_name", s(o, &["rule_name", "signature", "AlertName", "name"]));
    r.set("severity", s(o, &["severity"]));
    r.set("category", s(o, &["category"]));
    r.set("provider", s(o, &["provider", "product", "vendor"]));
    let id = as_str(get(o, &["id", "alert_id", "SystemAlertId"]));
    r.set("id", id.clone().map(Value::String).unwrap_or(Value::Null));
    let ts = time_of(get(o, &["timestamp", "time", "@timestamp", "TimeGenerated", "event_time", "date"]))
        .ok_or("missing or unparsable timestamp (timestamp / time / TimeGenerated)")?;
    Ok(Mapped { table: Table::NetworkAlerts, ts, dedup_id: id, row: r.vals, ingested_at: None })
}
