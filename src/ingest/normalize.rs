//! Interpretation done once, at ingest: times, IPs, numbers, booleans, and lenient access to JSON
//! records whose keys come in camelCase (Graph, diagnostic settings), PascalCase (Log Analytics) or
//! snake_case (Elastic ECS).

pub use crate::time::{day_of, parse_time};
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Compares a JSON key with a wanted name ignoring ASCII case and underscores, so `ipAddress`,
/// `IPAddress` and `ip_address` are one key.
fn key_eq(key: &str, want: &str) -> bool {
    let mut a = key.bytes().filter(|&c| c != b'_');
    let mut b = want.bytes().filter(|&c| c != b'_');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(&y) => {}
            _ => return false,
        }
    }
}

/// Finds the first of `names` in an object: exact key first, then case- and underscore-insensitive.
/// A name may be a dotted path (`status.errorCode`), each step found the same way; a dotted key
/// written flat (`"source.ip": …`, as some ECS exports do) is found too.
pub fn get<'a>(obj: impl Lookup<'a>, names: &[&str]) -> Option<&'a Value> {
    for name in names {
        if let Some(v) = obj.path(name) {
            if !v.is_null() {
                return Some(v);
            }
        }
    }
    None
}

/// What the lenient accessors read from: a JSON object, or one [`Indexed`] for many lookups.
pub trait Lookup<'a>: Copy {
    /// The value at a name or dotted path, found as [`get`] describes (Null included).
    fn path(self, name: &str) -> Option<&'a Value>;
}

impl<'a> Lookup<'a> for &'a Map<String, Value> {
    fn path(self, name: &str) -> Option<&'a Value> {
        get_path(self, name)
    }
}

impl<'a> Lookup<'a> for &Indexed<'a> {
    fn path(self, name: &str) -> Option<&'a Value> {
        if let Some(v) = self.one(name) {
            return Some(v);
        }
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            let split = name.len() - rest.len() + dot;
            let (head, tail) = (&name[..split], &name[split + 1..]);
            if let Some(Value::Object(inner)) = self.one(head) {
                if let Some(v) = get_path(inner, tail) {
                    return Some(v);
                }
            }
            rest = &rest[dot + 1..];
        }
        None
    }
}

/// An object indexed once for the many lookups of one mapper: the answers of the plain lookup
/// (the exact key, else the first key in the map's order equal ignoring case and underscores)
/// without a scan of the object for every missing name.
pub struct Indexed<'a> {
    /// (hash of the key lowercased without underscores, key, value), by hash; keys with one hash
    /// stay in the map's order.
    keys: Vec<(u64, &'a str, &'a Value)>,
}

/// FNV-1a of a key lowercased without its underscores: equal for keys `key_eq` calls equal.
pub(crate) fn folded_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for c in key.bytes().filter(|&c| c != b'_') {
        h ^= c.to_ascii_lowercase() as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl<'a> Indexed<'a> {
    pub fn new(obj: &'a Map<String, Value>) -> Self {
        let mut keys: Vec<_> = obj.iter().map(|(k, v)| (folded_hash(k), k.as_str(), v)).collect();
        keys.sort_by_key(|e| e.0); // stable: map order within a hash
        Indexed { keys }
    }

    fn one(&self, name: &str) -> Option<&'a Value> {
        let h = folded_hash(name);
        let start = self.keys.partition_point(|e| e.0 < h);
        let same = self.keys[start..].iter().take_while(|e| e.0 == h);
        same.clone().find(|e| e.1 == name).or_else(|| same.clone().find(|e| key_eq(e.1, name))).map(|e| e.2)
    }
}

fn get_one<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        // A key can only match when, without its underscores, it is as long as the name without
        // its own: a cheap test that skips most keys before comparing.
        let len = name.bytes().filter(|&c| c != b'_').count();
        obj.iter()
            .find(|(k, _)| (k.len() == len || (k.len() > len && k.contains('_'))) && key_eq(k, name))
            .map(|(_, v)| v)
    })
}

fn get_path<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = get_one(obj, path) {
        return Some(v);
    }
    let mut rest = path;
    while let Some(dot) = rest.find('.') {
        let split = path.len() - rest.len() + dot;
        let (head, tail) = (&path[..split], &path[split + 1..]);
        if let Some(Value::Object(inner)) = get_one(obj, head) {
            if let Some(v) = get_path(inner, tail) {
                return Some(v);
            }
        }
        rest = &rest[dot + 1..];
    }
    None
}

/// A string value: strings as they are (empty → None), numbers and booleans as text.
pub fn as_str(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

pub fn s<'a>(obj: impl Lookup<'a>, names: &[&str]) -> Value {
    as_str(get(obj, names)).map(Value::String).unwrap_or(Value::Null)
}

pub fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn i<'a>(obj: impl Lookup<'a>, names: &[&str]) -> Value {
    as_i64(get(obj, names)).map(Value::from).unwrap_or(Value::Null)
}

pub fn b<'a>(obj: impl Lookup<'a>, names: &[&str]) -> Value {
    match get(obj, names) {
        Some(Value::Bool(b)) => Value::Bool(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        _ => Value::Null,
    }
}

/// A timestamp value as microseconds, or Null.
pub fn t<'a>(obj: impl Lookup<'a>, names: &[&str]) -> Value {
    time_of(get(obj, names)).map(Value::from).unwrap_or(Value::Null)
}

pub fn time_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => parse_time(s),
        Value::Number(n) => n.as_i64().and_then(|n| parse_time(&n.to_string())),
        _ => None,
    }
}

/// A nested object or array that Log Analytics exports as a JSON string: parsed when needed.
pub fn nested<'a>(obj: impl Lookup<'a>, names: &[&str]) -> Option<Cow<'a, Value>> {
    match get(obj, names)? {
        Value::String(s) => {
            let t = s.trim();
            if t.starts_with('{') || t.starts_with('[') {
                serde_json::from_str(t).ok().map(Cow::Owned)
            } else {
                None
            }
        }
        v => Some(Cow::Borrowed(v)),
    }
}

/// An IP field normalized (see `wisp_udfs::ip::normalize`); an empty or unparsable one is Null.
pub fn ip(v: Option<&Value>) -> Option<String> {
    as_str(v).and_then(|s| wisp_udfs::ip::normalize(&s))
}

/// FNV-1a, 64-bit: a stable hash for de-duplication keys and alert ids.
pub fn fnv64(parts: &[&[u8]]) -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for &c in *p {
            h ^= c as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_keys() {
        let v: Value = serde_json::json!({"IPAddress": "1.2.3.4", "status": {"error_code": 7}, "source.ip": "5.6.7.8"});
        let o = v.as_object().unwrap();
        assert_eq!(as_str(get(o, &["ipAddress"])).as_deref(), Some("1.2.3.4"));
        assert_eq!(as_i64(get(o, &["status.errorCode"])), Some(7));
        assert_eq!(as_str(get(o, &["source.ip"])).as_deref(), Some("5.6.7.8"));
    }

    /// An indexed object answers every lookup as the plain one: exact keys before lenient ones,
    /// the first lenient key in the map's order, nulls, dotted paths and flat dotted keys.
    #[test]
    fn indexed_lookups_equal_plain_ones() {
        let objs = [
            serde_json::json!({"IPAddress": "1", "ip_address": "2", "ipAddress": null, "IpAddress": "3",
                "status": {"error_code": 7, "errorCode": 8}, "Status": {"errorCode": 9}, "source.ip": "5",
                "source": {"ip": "6"}, "a_b_c": 1, "ABC": 2, "": 3, "_": 4, "x": {"y": {"z": 5}}}),
            serde_json::json!({"id": "a", "ID": "b", "servicePrincipalId": "sp", "SERVICE_PRINCIPAL_ID": "sp2",
                "location": "{\"city\": \"c\"}", "createdDateTime": "2026-01-01T00:00:00Z"}),
            serde_json::json!({}),
        ];
        let names = [
            "ipAddress",
            "IPADDRESS",
            "ip_address",
            "i_p_address",
            "status.errorCode",
            "Status.ErrorCode",
            "status.error_code",
            "source.ip",
            "source",
            "abc",
            "a_b_c",
            "ABC",
            "",
            "_",
            "__",
            "x.y.z",
            "x.y",
            "X.Y.Z",
            "id",
            "Id",
            "servicePrincipalId",
            "service_principal_id",
            "location",
            "missing",
            "missing.path",
            "createdDateTime",
            "x..y",
            ".",
        ];
        for v in &objs {
            let o = v.as_object().unwrap();
            let ix = Indexed::new(o);
            for n in names {
                assert_eq!(get(&ix, &[n]), get(o, &[n]), "{n} in {v}");
                assert_eq!((&ix).path(n), o.path(n), "{n} in {v}");
            }
            assert_eq!(get(&ix, &["nothing", "ipAddress", "id"]), get(o, &["nothing", "ipAddress", "id"]));
        }
    }
}
