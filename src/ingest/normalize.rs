//! Interpretation done once, at ingest: times, IPs, numbers, booleans, and lenient access to JSON
//! records whose keys come in camelCase (Graph, diagnostic settings), PascalCase (Log Analytics) or
//! snake_case (Elastic ECS).

use chrono::NaiveDate;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Parses the timestamps Microsoft and Elastic write, to microseconds since the epoch (UTC):
/// ISO 8601 with or without zone and with 0–9 fractional digits (`2022-02-08T06:22:28.3518405Z`,
/// `…+00:00`, `2020-02-10T15:13:13`, `2022-09-09T9:59:27.958Z`), a space instead of `T`, the
/// US locale (`8/22/2022 6:07:16 PM`, `8/2/2021, 1:29:25.983 PM`), and epoch seconds, milliseconds
/// or microseconds. Trailing junk after a complete time (a stray `)`) is ignored.
pub fn parse_time(s: &str) -> Option<i64> {
    let t = s.trim().trim_end_matches(|c: char| !(c.is_ascii_alphanumeric()));
    if t.is_empty() {
        return None;
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = t.parse().ok()?;
        return match t.len() {
            9..=10 => Some(n * 1_000_000),
            12..=13 => Some(n * 1_000),
            15..=16 => Some(n),
            _ => None,
        };
    }
    let b = t.as_bytes();
    let mut p = Parser { b, i: 0 };
    let (y, mo, d);
    if t.contains('/') && !t.contains('-') {
        mo = p.num(1, 2)?;
        p.lit(b'/')?;
        d = p.num(1, 2)?;
        p.lit(b'/')?;
        y = p.num(4, 4)?;
        p.opt(b',');
    } else {
        y = p.num(4, 4)?;
        p.lit(b'-')?;
        mo = p.num(1, 2)?;
        p.lit(b'-')?;
        d = p.num(1, 2)?;
    }
    let date = NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32)?;
    let (mut h, mut mi, mut sec, mut micros) = (0i64, 0i64, 0i64, 0i64);
    let mut offset_min = 0i64;
    if p.i < b.len() {
        if !(p.opt(b'T') || p.opt(b' ')) {
            return None;
        }
        while p.opt(b' ') {}
        h = p.num(1, 2)?;
        p.lit(b':')?;
        mi = p.num(1, 2)?;
        if p.opt(b':') {
            sec = p.num(1, 2)?;
            if p.opt(b'.') || p.opt(b',') {
                let start = p.i;
                let mut frac = 0i64;
                while p.i < b.len() && b[p.i].is_ascii_digit() {
                    if p.i - start < 6 {
                        frac = frac * 10 + (b[p.i] - b'0') as i64;
                    }
                    p.i += 1;
                }
                let digits = (p.i - start).min(6);
                if p.i == start {
                    return None;
                }
                micros = frac * 10i64.pow(6 - digits as u32);
            }
        }
        while p.opt(b' ') {}
        let rest = &t[p.i..];
        let upper = rest.to_ascii_uppercase();
        if upper.starts_with("AM") || upper.starts_with("PM") {
            if !(1..=12).contains(&h) {
                return None;
            }
            if upper.starts_with("PM") && h != 12 {
                h += 12;
            } else if upper.starts_with("AM") && h == 12 {
                h = 0;
            }
            p.i += 2;
        } else if p.opt(b'Z') || p.opt(b'z') {
        } else if p.i < b.len() && (b[p.i] == b'+' || b[p.i] == b'-') {
            let sign = if b[p.i] == b'-' { -1 } else { 1 };
            p.i += 1;
            let oh = p.num(2, 2)?;
            p.opt(b':');
            let om = p.num(2, 2).unwrap_or(0);
            offset_min = sign * (oh * 60 + om);
        }
        if p.i != b.len() {
            let rest = t[p.i..].trim();
            if !(rest.is_empty() || rest == "UTC" || rest == "GMT") {
                return None;
            }
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = date.signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days();
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1_000_000 + micros)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn num(&mut self, min: usize, max: usize) -> Option<i64> {
        let start = self.i;
        let mut n = 0i64;
        while self.i < self.b.len() && self.i - start < max && self.b[self.i].is_ascii_digit() {
            n = n * 10 + (self.b[self.i] - b'0') as i64;
            self.i += 1;
        }
        (self.i - start >= min).then_some(n)
    }
    fn lit(&mut self, c: u8) -> Option<()> {
        self.opt(c).then_some(())
    }
    fn opt(&mut self, c: u8) -> bool {
        if self.i < self.b.len() && self.b[self.i] == c {
            self.i += 1;
            true
        } else {
            false
        }
    }
}

/// `YYYY-MM-DD` of a microsecond timestamp.
pub fn day_of(ts_us: i64) -> String {
    let days = ts_us.div_euclid(86_400_000_000);
    let date = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Duration::days(days);
    date.format("%Y-%m-%d").to_string()
}

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
pub fn get<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    for name in names {
        if let Some(v) = get_path(obj, name) {
            if !v.is_null() {
                return Some(v);
            }
        }
    }
    None
}

fn get_one<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| key_eq(k, name)).map(|(_, v)| v))
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

pub fn s(obj: &Map<String, Value>, names: &[&str]) -> Value {
    as_str(get(obj, names)).map(Value::String).unwrap_or(Value::Null)
}

pub fn as_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn i(obj: &Map<String, Value>, names: &[&str]) -> Value {
    as_i64(get(obj, names)).map(Value::from).unwrap_or(Value::Null)
}

pub fn b(obj: &Map<String, Value>, names: &[&str]) -> Value {
    match get(obj, names) {
        Some(Value::Bool(b)) => Value::Bool(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        _ => Value::Null,
    }
}

/// A timestamp value as microseconds, or Null.
pub fn t(obj: &Map<String, Value>, names: &[&str]) -> Value {
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
pub fn nested<'a>(obj: &'a Map<String, Value>, names: &[&str]) -> Option<Cow<'a, Value>> {
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

    fn iso(s: &str) -> String {
        let us = parse_time(s).unwrap_or_else(|| panic!("{s}"));
        chrono::DateTime::from_timestamp_micros(us).unwrap().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    #[test]
    fn times() {
        assert_eq!(iso("2022-02-08T06:22:28.3518405Z"), "2022-02-08T06:22:28.351840Z");
        assert_eq!(iso("2022-02-08T06:22:28.3518405+00:00"), "2022-02-08T06:22:28.351840Z");
        assert_eq!(iso("2022-02-08T08:22:28+02:00"), "2022-02-08T06:22:28.000000Z");
        assert_eq!(iso("2020-02-10T15:13:13"), "2020-02-10T15:13:13.000000Z");
        assert_eq!(iso("2022-09-09T9:59:27.958Z"), "2022-09-09T09:59:27.958000Z");
        assert_eq!(iso("2021-10-26T16:28:17.8202975Z)"), "2021-10-26T16:28:17.820297Z");
        assert_eq!(iso("8/22/2022 6:07:16 PM"), "2022-08-22T18:07:16.000000Z");
        assert_eq!(iso("8/2/2021, 12:29:25.983 AM"), "2021-08-02T00:29:25.983000Z");
        assert_eq!(iso("2022-01-24 05:10:08.681"), "2022-01-24T05:10:08.681000Z");
        assert_eq!(iso("1644301348351"), "2022-02-08T06:22:28.351000Z");
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2022-13-01T00:00:00Z"), None);
        assert_eq!(parse_time("13/1/2022 1:00:00 PM"), None);
        assert_eq!(day_of(parse_time("2022-02-08T23:59:59.999Z").unwrap()), "2022-02-08");
        assert_eq!(day_of(-1), "1969-12-31");
    }

    #[test]
    fn lenient_keys() {
        let v: Value = serde_json::json!({"IPAddress": "1.2.3.4", "status": {"error_code": 7}, "source.ip": "5.6.7.8"});
        let o = v.as_object().unwrap();
        assert_eq!(as_str(get(o, &["ipAddress"])).as_deref(), Some("1.2.3.4"));
        assert_eq!(as_i64(get(o, &["status.errorCode"])), Some(7));
        assert_eq!(as_str(get(o, &["source.ip"])).as_deref(), Some("5.6.7.8"));
    }
}
