//! Envelopes around records: diagnostic settings' `records[]` (Event Hub), Graph's `value[]`,
//! Elastic search hits, pipeline test files, and plain top-level arrays.

use serde_json::Value;

/// Records inside an envelope: diagnostic `records[]`, Graph `value[]`, search `hits.hits[]._source`,
/// or a top-level array.
pub fn items(v: &Value) -> Option<Vec<Value>> {
    match v {
        Value::Array(a) => Some(a.clone()),
        Value::Object(o) => {
            if let Some(Value::Array(a)) = o.get("records") {
                return Some(a.clone());
            }
            // Elastic pipeline test files: {"expected": [ECS documents]}.
            if let (Some(Value::Array(a)), 1) = (o.get("expected"), o.len()) {
                return Some(a.clone());
            }
            if let Some(Value::Array(a)) = o.get("value") {
                if o.contains_key("@odata.context") || o.contains_key("@odata.nextLink") || o.len() <= 3 {
                    return Some(a.clone());
                }
            }
            if let Some(Value::Array(h)) = o.get("hits").and_then(|h| h.get("hits")) {
                return Some(h.iter().map(|x| x.get("_source").cloned().unwrap_or_else(|| x.clone())).collect());
            }
            if let Some(src) = o.get("_source") {
                if o.contains_key("_index") {
                    return Some(vec![src.clone()]);
                }
            }
            None
        }
        _ => None,
    }
}
