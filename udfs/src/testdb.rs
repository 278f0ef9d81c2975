//! A tiny MaxMind DB writer (IPv4 databases, 24-bit records), so tests can build their own ASN and
//! City databases and the suite runs where MaxMind's test files are absent. Follows the MaxMind
//! DB format 2.0: a binary search tree, a 16-byte separator, the data section, and the metadata
//! after `\xAB\xCD\xEFMaxMind.com`.

use std::net::Ipv4Addr;

/// A xorshift64 generator: reproducible random data for tests and benchmarks (not for secrets).
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A value in the data section.
#[derive(Debug, Clone, PartialEq)]
pub enum MmdbValue {
    Str(String),
    U32(u32),
    U16(u16),
    U64(u64),
    F64(f64),
    Map(Vec<(String, MmdbValue)>),
    Array(Vec<MmdbValue>),
}

fn control(out: &mut Vec<u8>, ty: u8, size: usize) {
    let (ctl_size, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else {
        let s = size - 285;
        (30, vec![(s >> 8) as u8, s as u8])
    };
    if ty <= 7 {
        out.push((ty << 5) | ctl_size);
    } else {
        out.push(ctl_size);
        out.push(ty - 7);
    }
    out.extend(extra);
}

fn uint(out: &mut Vec<u8>, ty: u8, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    control(out, ty, 8 - skip);
    out.extend(&bytes[skip..]);
}

impl MmdbValue {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            MmdbValue::Str(s) => {
                control(out, 2, s.len());
                out.extend(s.as_bytes());
            }
            MmdbValue::F64(f) => {
                control(out, 3, 8);
                out.extend(f.to_be_bytes());
            }
            MmdbValue::U16(v) => uint(out, 5, *v as u64),
            MmdbValue::U32(v) => uint(out, 6, *v as u64),
            MmdbValue::U64(v) => uint(out, 9, *v),
            MmdbValue::Map(kv) => {
                control(out, 7, kv.len());
                for (k, v) in kv {
                    MmdbValue::Str(k.clone()).encode(out);
                    v.encode(out);
                }
            }
            MmdbValue::Array(items) => {
                control(out, 11, items.len());
                for v in items {
                    v.encode(out);
                }
            }
        }
    }
}

/// Shorthand for a map value.
pub fn map(kv: &[(&str, MmdbValue)]) -> MmdbValue {
    MmdbValue::Map(kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

#[derive(Clone, Copy)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

/// Builds an IPv4 MaxMind DB from `(network, prefix length, record)` entries.
pub fn build(database_type: &str, build_epoch: u64, networks: &[(Ipv4Addr, u8, MmdbValue)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty, Child::Empty]];
    for (net, len, value) in networks {
        let offset = data.len();
        value.encode(&mut data);
        let bits = u32::from(*net);
        let mut node = 0usize;
        for i in 0..*len {
            let bit = ((bits >> (31 - i)) & 1) as usize;
            if i + 1 == *len {
                nodes[node][bit] = Child::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Child::Node(n) => n,
                    _ => {
                        nodes.push([Child::Empty, Child::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Child::Node(n);
                        n
                    }
                };
            }
        }
    }
    let node_count = nodes.len();
    let record = |c: Child| -> u32 {
        match c {
            Child::Empty => node_count as u32,
            Child::Node(n) => n as u32,
            Child::Data(off) => (node_count + 16 + off) as u32,
        }
    };
    let mut out = Vec::new();
    for n in &nodes {
        for c in n {
            let v = record(*c);
            out.extend(&v.to_be_bytes()[1..]);
        }
    }
    out.extend([0u8; 16]);
    out.extend(&data);
    out.extend(b"\xAB\xCD\xEFMaxMind.com");
    map(&[
        ("binary_format_major_version", MmdbValue::U16(2)),
        ("binary_format_minor_version", MmdbValue::U16(0)),
        ("build_epoch", MmdbValue::U64(build_epoch)),
        ("database_type", MmdbValue::Str(database_type.into())),
        ("description", map(&[("en", MmdbValue::Str("wisp test database".into()))])),
        ("ip_version", MmdbValue::U16(4)),
        ("languages", MmdbValue::Array(vec![MmdbValue::Str("en".into())])),
        ("node_count", MmdbValue::U32(node_count as u32)),
        ("record_size", MmdbValue::U16(24)),
    ])
    .encode(&mut out);
    out
}

/// An ASN record.
pub fn asn(number: u32, org: Option<&str>) -> MmdbValue {
    let mut kv = vec![("autonomous_system_number", MmdbValue::U32(number))];
    if let Some(o) = org {
        kv.push(("autonomous_system_organization", MmdbValue::Str(o.into())));
    }
    map(&kv)
}

/// A City record.
pub fn city(iso: &str, country: &str, city: &str, lat: f64, lon: f64) -> MmdbValue {
    map(&[
        ("city", map(&[("names", map(&[("en", MmdbValue::Str(city.into()))]))])),
        (
            "country",
            map(&[("iso_code", MmdbValue::Str(iso.into())), ("names", map(&[("en", MmdbValue::Str(country.into()))]))]),
        ),
        ("location", map(&[("latitude", MmdbValue::F64(lat)), ("longitude", MmdbValue::F64(lon))])),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{AsnCache, AsnDb, GeoCache, GeoDb};

    #[test]
    fn written_databases_read_back_through_maxminddb() {
        let dir = std::env::temp_dir().join(format!("wisp-mmdb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let asn_path = dir.join("asn.mmdb");
        std::fs::write(
            &asn_path,
            build(
                "GeoLite2-ASN",
                1_700_000_000,
                &[
                    ("1.128.0.0".parse().unwrap(), 11, asn(1221, Some("Telstra Pty Ltd"))),
                    ("65.115.241.0".parse().unwrap(), 24, asn(209, None)),
                ],
            ),
        )
        .unwrap();
        let db = AsnDb::open(&asn_path).unwrap();
        assert_eq!(db.build_epoch(), Some(1_700_000_000));
        let mut c = AsnCache::new();
        let hit = db.lookup("1.128.3.4".parse().unwrap(), &mut c).unwrap();
        assert_eq!((hit.number, hit.organization.as_deref()), (1221, Some("Telstra Pty Ltd")));
        let hit = db.lookup("1.159.255.255".parse().unwrap(), &mut c).unwrap();
        assert_eq!(hit.number, 1221);
        assert!(db.lookup("1.160.0.0".parse().unwrap(), &mut c).is_none());
        assert_eq!(db.lookup("65.115.241.7".parse().unwrap(), &mut c).unwrap().organization, None);
        assert!(db.lookup("2001:db8::1".parse().unwrap(), &mut c).is_none());
        let city_path = dir.join("city.mmdb");
        std::fs::write(
            &city_path,
            build(
                "GeoLite2-City",
                1,
                &[("81.2.69.0".parse().unwrap(), 24, city("GB", "United Kingdom", "London", 51.5, -0.09))],
            ),
        )
        .unwrap();
        let g = GeoDb::open(&city_path).unwrap();
        let hit = g.lookup("81.2.69.142".parse().unwrap(), &mut GeoCache::new()).unwrap();
        assert_eq!(
            (hit.country_iso.as_deref(), hit.city.as_deref(), hit.lat),
            (Some("GB"), Some("London"), Some(51.5))
        );
        // An ASN database is refused as a City database and the other way round.
        assert!(GeoDb::open(&asn_path).is_err());
        assert!(AsnDb::open(&city_path).is_err());
        // A corrupt file is a clear error at open.
        let bad = dir.join("bad.mmdb");
        let mut bytes = std::fs::read(&asn_path).unwrap();
        bytes.truncate(bytes.len() / 2);
        bytes.extend(b"\xAB\xCD\xEFMaxMind.com");
        std::fs::write(&bad, bytes).unwrap();
        assert!(AsnDb::open(&bad).unwrap_err().to_string().contains("bad.mmdb"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
