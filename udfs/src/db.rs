//! ASN and geo databases: MaxMind DB files (memory-mapped) and free IP-range tables (ip2asn,
//! DB-IP lite). Opened once at session start; a missing or corrupt file is an error then.

use crate::ip::{ip_to_u128, parse_ip};
use maxminddb::{geoip2, Mmap, Reader};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Opening a database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {path}: {source}; check the path given to --asn-db/--geo-db")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid MaxMind database: {msg}")]
    MaxMind { path: PathBuf, msg: String },
    #[error("{path}:{line}: {msg} (expected start_ip,end_ip,asn,organization)")]
    Table { path: PathBuf, line: usize, msg: String },
    #[error("{path} is a MaxMind {found} database, but a{want} database is needed here")]
    WrongKind { path: PathBuf, found: String, want: &'static str },
    #[error("{path} is neither a MaxMind database (no MaxMind metadata in it: empty, truncated or another kind of file?) nor a text start_ip,end_ip,asn,organization table; check the path given to --asn-db")]
    NotADatabase { path: PathBuf },
    #[error("{path} is not a MaxMind database (no MaxMind metadata in it: empty, truncated or another kind of file?); --geo-db needs a GeoLite2/GeoIP2 City or Country .mmdb")]
    NotAGeoDatabase { path: PathBuf },
    #[error("{path} holds no address ranges: every lookup would be NULL; give a database with data")]
    Empty { path: PathBuf },
}

/// One ASN lookup result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsnInfo {
    pub number: i64,
    pub organization: Option<Arc<str>>,
}

enum AsnSource {
    MaxMind(Reader<Mmap>),
    /// Sorted, non-overlapping `(lo, hi, info)` ranges.
    Table(Vec<(u128, u128, AsnInfo)>),
}

/// An ASN database, shared across threads.
pub struct AsnDb {
    source: AsnSource,
    path: PathBuf,
}

impl std::fmt::Debug for AsnDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AsnDb({})", self.path.display())
    }
}

/// Per-batch cache: many addresses share one database record.
pub type AsnCache = HashMap<usize, Option<AsnInfo>>;

fn is_mmdb(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let tail = len.min(128 * 1024);
    f.seek(SeekFrom::Start(len - tail))?;
    let mut buf = Vec::with_capacity(tail as usize);
    f.read_to_end(&mut buf)?;
    let marker = b"\xab\xcd\xefMaxMind.com";
    Ok(buf.windows(marker.len()).any(|w| w == marker))
}

fn open_mmdb(path: &Path) -> Result<Reader<Mmap>, DbError> {
    // SAFETY: the database file is opened read-only and is not modified while the session runs;
    // wisp never writes to it.
    let r = unsafe { Reader::open_mmap(path) }
        .map_err(|e| DbError::MaxMind { path: path.to_path_buf(), msg: e.to_string() })?;
    r.verify().map_err(|e| DbError::MaxMind { path: path.to_path_buf(), msg: e.to_string() })?;
    Ok(r)
}

impl AsnDb {
    /// Opens a MaxMind ASN database or an IP-range table (CSV or TSV).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DbError> {
        let path = path.as_ref();
        let io = |e| DbError::Io { path: path.to_path_buf(), source: e };
        if is_mmdb(path).map_err(io)? {
            let r = open_mmdb(path)?;
            let kind = r.metadata().database_type.clone();
            if kind.contains("City") || kind.contains("Country") {
                return Err(DbError::WrongKind { path: path.to_path_buf(), found: kind, want: "n ASN" });
            }
            return Ok(AsnDb { source: AsnSource::MaxMind(r), path: path.to_path_buf() });
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let is_mmdb_name = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("mmdb"));
        let text = match String::from_utf8(bytes) {
            Ok(t) if !is_mmdb_name => t,
            _ => return Err(DbError::NotADatabase { path: path.to_path_buf() }),
        };
        let rows = parse_table(path, &text)?;
        if rows.is_empty() {
            return Err(DbError::Empty { path: path.to_path_buf() });
        }
        Ok(AsnDb { source: AsnSource::Table(rows), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Build time of a MaxMind database (seconds since the epoch); `None` for a range table.
    pub fn build_epoch(&self) -> Option<u64> {
        match &self.source {
            AsnSource::MaxMind(r) => Some(r.metadata().build_epoch),
            AsnSource::Table(_) => None,
        }
    }

    /// A description of the database for the lake's `_meta`.
    pub fn describe(&self) -> String {
        match &self.source {
            AsnSource::MaxMind(r) => format!("MaxMind {}", r.metadata().database_type),
            AsnSource::Table(t) => format!("IP range table ({} ranges)", t.len()),
        }
    }

    /// Looks up an address, caching decoded records by their data offset.
    pub fn lookup(&self, ip: IpAddr, cache: &mut AsnCache) -> Option<AsnInfo> {
        match &self.source {
            AsnSource::MaxMind(r) => {
                let res = r.lookup(ip).ok()?;
                let off = res.offset()?;
                if let Some(hit) = cache.get(&off) {
                    return hit.clone();
                }
                let info = res.decode::<geoip2::Asn>().ok().flatten().and_then(|a| {
                    a.autonomous_system_number.map(|n| AsnInfo {
                        number: n as i64,
                        organization: a.autonomous_system_organization.map(Arc::from),
                    })
                });
                cache.insert(off, info.clone());
                info
            }
            AsnSource::Table(t) => {
                let x = ip_to_u128(ip);
                let i = t.partition_point(|(_, hi, _)| *hi < x);
                t.get(i).filter(|(lo, _, _)| *lo <= x).map(|(_, _, info)| info.clone())
            }
        }
    }
}

pub(crate) fn split_fields(line: &str) -> Vec<String> {
    if line.contains('\t') {
        return line.split('\t').map(|s| s.trim().to_string()).collect();
    }
    // CSV with optional double quotes.
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

fn parse_table(path: &Path, text: &str) -> Result<Vec<(u128, u128, AsnInfo)>, DbError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let f = split_fields(t);
        let bad = |msg: String| DbError::Table { path: path.to_path_buf(), line: lineno, msg };
        if f.len() < 3 {
            return Err(bad(format!("{} fields", f.len())));
        }
        let (Some(lo), Some(hi)) = (parse_ip(&f[0]), parse_ip(&f[1])) else {
            if rows.is_empty() && lineno == 1 {
                continue; // header row
            }
            return Err(bad(format!("bad address range '{}'-'{}'", f[0], f[1])));
        };
        let asn_text = f[2].trim_start_matches("AS").trim_start_matches("as");
        let number: i64 = asn_text.parse().map_err(|_| bad(format!("bad ASN '{}'", f[2])))?;
        if number == 0 {
            continue; // ip2asn's "Not routed"
        }
        // ip2asn has country_code before the description; DB-IP lite has the organization 4th.
        let org = if f.len() >= 5 { f[4].clone() } else { f.get(3).cloned().unwrap_or_default() };
        let organization = if org.is_empty() || org == "None" { None } else { Some(Arc::from(org.as_str())) };
        let (lo, hi) = (ip_to_u128(lo), ip_to_u128(hi));
        if lo > hi {
            return Err(bad("start is after end".into()));
        }
        rows.push((lo, hi, AsnInfo { number, organization }));
    }
    rows.sort_by_key(|r| r.0);
    for w in rows.windows(2) {
        if w[1].0 <= w[0].1 {
            return Err(DbError::Table { path: path.to_path_buf(), line: 0, msg: "overlapping ranges".to_string() });
        }
    }
    Ok(rows)
}

/// One geo lookup result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeoInfo {
    pub country_iso: Option<String>,
    pub country: Option<String>,
    pub city: Option<String>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
}

/// A MaxMind City (or Country) database.
pub struct GeoDb {
    reader: Reader<Mmap>,
    path: PathBuf,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GeoDb({})", self.path.display())
    }
}

/// Per-batch geo cache keyed by record offset.
pub type GeoCache = HashMap<usize, Option<GeoInfo>>;

impl GeoDb {
    pub fn open(path: impl AsRef<Path>) -> Result<Self, DbError> {
        let path = path.as_ref();
        if !is_mmdb(path).map_err(|e| DbError::Io { path: path.to_path_buf(), source: e })? {
            return Err(DbError::NotAGeoDatabase { path: path.to_path_buf() });
        }
        let reader = open_mmdb(path)?;
        let kind = reader.metadata().database_type.clone();
        if !(kind.contains("City") || kind.contains("Country")) {
            return Err(DbError::WrongKind { path: path.to_path_buf(), found: kind, want: " City or Country" });
        }
        Ok(GeoDb { reader, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    pub fn describe(&self) -> String {
        format!("MaxMind {}", self.reader.metadata().database_type)
    }

    pub fn lookup(&self, ip: IpAddr, cache: &mut GeoCache) -> Option<GeoInfo> {
        let res = self.reader.lookup(ip).ok()?;
        let off = res.offset()?;
        if let Some(hit) = cache.get(&off) {
            return hit.clone();
        }
        let info = res.decode::<geoip2::City>().ok().flatten().map(|c| GeoInfo {
            country_iso: c.country.iso_code.map(str::to_string),
            country: c.country.names.english.map(str::to_string),
            city: c.city.names.english.map(str::to_string),
            lat: c.location.latitude,
            lon: c.location.longitude,
        });
        cache.insert(off, info.clone());
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_table_ip2asn_and_dbip() {
        let dir = std::env::temp_dir().join(format!("wisp-asn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tsv = dir.join("ip2asn.tsv");
        std::fs::write(&tsv, "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n1.0.1.0\t1.0.3.255\t0\tNone\tNot routed\n")
            .unwrap();
        let db = AsnDb::open(&tsv).unwrap();
        let mut c = AsnCache::new();
        let hit = db.lookup("1.0.0.9".parse().unwrap(), &mut c).unwrap();
        assert_eq!((hit.number, hit.organization.as_deref()), (13335, Some("CLOUDFLARENET")));
        assert!(db.lookup("1.0.2.1".parse().unwrap(), &mut c).is_none());
        let csv = dir.join("dbip.csv");
        std::fs::write(&csv, "start_ip,end_ip,asn,organization\n2001:db8::,2001:db8::ffff,64500,\"Example, Inc.\"\n")
            .unwrap();
        let db = AsnDb::open(&csv).unwrap();
        let hit = db.lookup("2001:db8::10".parse().unwrap(), &mut c).unwrap();
        assert_eq!(hit.organization.as_deref(), Some("Example, Inc."));
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "1.0.0.0,1.0.0.255,13335,A\n1.0.0.0,zzz,1,B\n").unwrap();
        let e = AsnDb::open(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.csv:2"), "{e}");
        assert!(AsnDb::open(dir.join("missing.mmdb")).unwrap_err().to_string().contains("missing.mmdb"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
