//! Time, shared by ingest, rules, the detection engine and the CLI: parsing the timestamps exports
//! and users write, durations (`65m`, `1h`, `30d`), the `day` partition of a timestamp, UTC
//! scalars for SQL parameters, and the range of times the lake accepts.
//!
//! Everything is microseconds since the Unix epoch, UTC, as the lake's `ts` columns are.

use chrono::{DateTime, NaiveDate, Utc};

/// A time, in UTC.
pub type UtcTime = DateTime<Utc>;

/// Time or duration input that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("bad time '{0}': use RFC 3339 in UTC, e.g. 2026-11-20T12:00:00Z")]
    Time(String),
    #[error("time '{0}' is outside the range wisp accepts ({MIN_LABEL} to {MAX_LABEL})")]
    OutOfRange(String),
    #[error("bad duration '{0}': use a whole number and a unit, e.g. 65m, 1h, 10d, 30d (s, m, h, d, w)")]
    Duration(String),
    #[error("duration '{0}' reaches outside the range wisp accepts ({MIN_LABEL} to {MAX_LABEL})")]
    DurationTooLong(String),
}

/// The earliest event time the lake accepts (inclusive): 1900-01-01T00:00:00Z.
pub const MIN_TS_US: i64 = -2_208_988_800_000_000;
/// The latest event time the lake accepts (exclusive): 2200-01-01T00:00:00Z. Timestamps stay
/// well inside the nanosecond range (1677–2262) that some query operators convert to, with room
/// for a 30-day window on either side.
pub const MAX_TS_US: i64 = 7_258_118_400_000_000;
const MIN_LABEL: &str = "1900-01-01";
const MAX_LABEL: &str = "2199-12-31";

/// True when a timestamp is in the accepted range.
pub fn in_range(us: i64) -> bool {
    (MIN_TS_US..MAX_TS_US).contains(&us)
}

/// A microsecond timestamp as a UTC time, if it is in the accepted range.
pub fn from_micros(us: i64) -> Result<UtcTime, TimeError> {
    if !in_range(us) {
        return Err(TimeError::OutOfRange(format!("{us} µs since the epoch")));
    }
    DateTime::from_timestamp_micros(us).ok_or_else(|| TimeError::OutOfRange(format!("{us} µs since the epoch")))
}

/// Parses a time given by a user (a flag, a ground-truth file): any form [`parse_time`] reads, in
/// the accepted range.
pub fn parse_utc(s: &str) -> Result<UtcTime, TimeError> {
    let us = parse_time(s).ok_or_else(|| TimeError::Time(s.to_string()))?;
    from_micros(us).map_err(|_| TimeError::OutOfRange(s.to_string()))
}

/// Parses a duration like `30s`, `65m`, `1h`, `10d`, `2w`.
pub fn parse_duration(s: &str) -> Result<chrono::Duration, TimeError> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num.parse().map_err(|_| TimeError::Duration(s.into()))?;
    let d = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        "w" => chrono::Duration::try_weeks(n),
        _ => return Err(TimeError::Duration(s.into())),
    };
    d.ok_or_else(|| TimeError::DurationTooLong(s.into()))
}

/// `end - d`, or an error when that leaves the accepted range (`--last 99999999d`).
pub fn before(end: UtcTime, d: chrono::Duration, what: &str) -> Result<UtcTime, TimeError> {
    end.checked_sub_signed(d)
        .filter(|t| in_range(t.timestamp_micros()))
        .ok_or_else(|| TimeError::DurationTooLong(what.to_string()))
}

/// A duration in microseconds (saturating: durations are checked when parsed).
pub fn micros(d: chrono::Duration) -> i64 {
    d.num_microseconds().unwrap_or(i64::MAX)
}

/// A UTC timestamp as a SQL parameter (microseconds), as the lake's `ts` columns are typed.
pub fn utc_ts(t: UtcTime) -> datafusion::common::ScalarValue {
    datafusion::common::ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
}

/// RFC 3339 with seconds and `Z`, as wisp prints times.
pub fn rfc3339(t: UtcTime) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Parses the timestamps Microsoft and Elastic write, to microseconds since the epoch (UTC):
/// ISO 8601 with or without zone and with 0–9 fractional digits (`2022-02-08T06:22:28.3518405Z`,
/// `…+00:00`, `2020-02-10T15:13:13`, `2022-09-09T9:59:27.958Z`), a space instead of `T`, the
/// US locale (`8/22/2022 6:07:16 PM`, `8/2/2021, 1:29:25.983 PM`), and epoch seconds, milliseconds
/// or microseconds. Trailing junk after a complete time (a stray `)`) is ignored.
pub fn parse_time(s: &str) -> Option<i64> {
    parse_iso_z(s.as_bytes()).or_else(|| parse_time_any(s))
}

/// The form nearly every exported record has, `YYYY-MM-DDTHH:MM:SS[.f…]Z`, read at fixed
/// places without building a date: the time [`parse_time_any`] gives for it, or None for any
/// other text (which that parser then reads) or an impossible date or time.
fn parse_iso_z(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[b.len() - 1] != b'Z'
    {
        return None;
    }
    let two = |i: usize| {
        let (x, y) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
        (x < 10 && y < 10).then_some(i64::from(x) * 10 + i64::from(y))
    };
    let (y, mo, d) = (two(0)? * 100 + two(2)?, two(5)?, two(8)?);
    let (h, mi, sec) = (two(11)?, two(14)?, two(17)?);
    let mut micros = 0;
    let rest = &b[19..b.len() - 1];
    if let Some(frac) = rest.strip_prefix(b".") {
        if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let f = frac.iter().take(6).fold(0i64, |f, &c| f * 10 + i64::from(c - b'0'));
        micros = f * 10i64.pow(6 - frac.len().min(6) as u32);
    } else if !rest.is_empty() {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[mo as usize - 1] || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + sec) * 1_000_000 + micros)
}

/// [`parse_time`] for every form it reads.
fn parse_time_any(s: &str) -> Option<i64> {
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
        let half = |m: &str| t.as_bytes()[p.i..].get(..2).is_some_and(|r| r.eq_ignore_ascii_case(m.as_bytes()));
        let (am, pm) = (half("AM"), half("PM"));
        if am || pm {
            if !(1..=12).contains(&h) {
                return None;
            }
            if pm && h != 12 {
                h += 12;
            } else if am && h == 12 {
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

    /// The fixed-place reader of `…T…Z` gives what the general parser gives, for every day of
    /// leap and common years and centuries, times at the edges, 0–9 fractional digits, and
    /// impossible dates and times (which it leaves to the general parser).
    #[test]
    fn iso_z_fast_path_agrees_with_the_general_parser() {
        let mut n = 0;
        for y in [1, 400, 1899, 1900, 1969, 1970, 2000, 2023, 2024, 2026, 2100, 2400, 9999] {
            for mo in 0..=13 {
                for d in 0..=32 {
                    for t in
                        ["00:00:00", "23:59:59.9", "12:34:60.1234567", "24:00:00", "07:60:01.", "01:02:03.123456789"]
                    {
                        let s = format!("{y:04}-{mo:02}-{d:02}T{t}Z");
                        let fast = parse_iso_z(s.as_bytes());
                        assert!(
                            fast.is_none() || fast == parse_time_any(&s),
                            "{s}: {fast:?} vs {:?}",
                            parse_time_any(&s)
                        );
                        assert_eq!(parse_time(&s), parse_time_any(&s), "{s}");
                        n += usize::from(fast.is_some());
                    }
                }
            }
        }
        assert!(n > 10_000, "the fast path read {n}");
        for s in [
            "2026-11-19T07:03:23Z ",
            " 2026-11-19T07:03:23Z",
            "2026-11-19T07:03:23,5Z",
            "2026-11-19 07:03:23Z",
            "2026-11-19T07:03:23.5z",
            "2026-11-19T07:03:23.x5Z",
            "+026-11-19T07:03:23Z",
        ] {
            assert_eq!(parse_iso_z(s.as_bytes()), None, "{s}");
        }
        assert_eq!(iso("2026-11-19T07:03:23.2089040Z"), "2026-11-19T07:03:23.208904Z");
        assert_eq!(iso("8/22/2022 6:07:16 pm"), "2022-08-22T18:07:16.000000Z");
    }

    #[test]
    fn accepted_range() {
        assert!(parse_utc("1899-12-31T23:59:59Z").is_err());
        assert!(parse_utc("1900-01-01T00:00:00Z").is_ok());
        assert!(parse_utc("2199-12-31T23:59:59Z").is_ok());
        assert!(matches!(parse_utc("9999-12-31T23:59:59Z"), Err(TimeError::OutOfRange(_))));
        assert!(matches!(parse_utc("0000-01-01T00:00:00Z"), Err(TimeError::OutOfRange(_))));
        assert_eq!(day_of(MIN_TS_US), "1900-01-01");
        assert_eq!(day_of(MAX_TS_US), "2200-01-01");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("65m").unwrap(), chrono::Duration::minutes(65));
        assert_eq!(parse_duration("2w").unwrap(), chrono::Duration::days(14));
        assert!(matches!(parse_duration("10x"), Err(TimeError::Duration(_))));
        assert!(matches!(parse_duration("d"), Err(TimeError::Duration(_))));
        assert!(matches!(parse_duration("999999999999999d"), Err(TimeError::DurationTooLong(_))));
        let now = parse_utc("2026-11-20T00:00:00Z").unwrap();
        assert!(matches!(
            before(now, parse_duration("99999999d").unwrap(), "99999999d"),
            Err(TimeError::DurationTooLong(_))
        ));
        assert_eq!(rfc3339(before(now, chrono::Duration::days(1), "1d").unwrap()), "2026-11-19T00:00:00Z");
    }
}
