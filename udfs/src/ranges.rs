//! IP ranges (CIDR, `a-b`, single address) and a compiled, merged interval set.

use crate::ip::{ip_to_u128, parse_ip, V4_MAPPED};
use std::net::IpAddr;

/// An inclusive interval in the shared `u128` address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Range {
    pub lo: u128,
    pub hi: u128,
}

impl Range {
    #[inline]
    pub fn contains(&self, x: u128) -> bool {
        self.lo <= x && x <= self.hi
    }
}

/// Why a CIDR, range or address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IP range '{text}': {why} (expected a CIDR like 10.0.0.0/8, a range like 10.0.0.1-10.0.0.9, or a single address)")]
pub struct RangeError {
    pub text: String,
    pub why: &'static str,
}

fn err(text: &str, why: &'static str) -> RangeError {
    RangeError { text: text.to_string(), why }
}

/// Parses `a.b.c.d/n` or `v6/n` (host bits are masked, as Elasticsearch does).
pub fn parse_cidr(text: &str) -> Result<Range, RangeError> {
    let t = text.trim();
    let (addr, len) = t.split_once('/').ok_or_else(|| err(text, "missing '/prefix'"))?;
    let ip: IpAddr = addr.trim().parse().map_err(|_| err(text, "bad address"))?;
    let len: u32 = len.trim().parse().map_err(|_| err(text, "bad prefix length"))?;
    match ip {
        IpAddr::V4(v4) => {
            if len > 32 {
                return Err(err(text, "IPv4 prefix longer than 32"));
            }
            let host_bits = 32 - len;
            let mask: u32 = if host_bits == 32 { 0 } else { u32::MAX << host_bits };
            let net = u32::from(v4) & mask;
            let lo = V4_MAPPED | net as u128;
            let hi = V4_MAPPED | (net | !mask) as u128;
            Ok(Range { lo, hi })
        }
        IpAddr::V6(v6) => {
            if len > 128 {
                return Err(err(text, "IPv6 prefix longer than 128"));
            }
            let host_bits = 128 - len;
            let mask: u128 = if host_bits == 128 { 0 } else { u128::MAX << host_bits };
            let net = u128::from(v6) & mask;
            Ok(Range { lo: net, hi: net | !mask })
        }
    }
}

/// Parses a CIDR, an inclusive `a-b` range, or a single address.
pub fn parse_range(text: &str) -> Result<Range, RangeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(err(text, "empty"));
    }
    if t.contains('/') {
        return parse_cidr(t);
    }
    if let Some((a, b)) = t.split_once('-') {
        let a = parse_ip(a).ok_or_else(|| err(text, "bad start address"))?;
        let b = parse_ip(b).ok_or_else(|| err(text, "bad end address"))?;
        if a.is_ipv4() != b.is_ipv4() {
            return Err(err(text, "start and end are of different families"));
        }
        let (lo, hi) = (ip_to_u128(a), ip_to_u128(b));
        if lo > hi {
            return Err(err(text, "start is after end"));
        }
        return Ok(Range { lo, hi });
    }
    let ip = parse_ip(t).ok_or_else(|| err(text, "bad address"))?;
    let x = ip_to_u128(ip);
    Ok(Range { lo: x, hi: x })
}

/// A sorted set of disjoint, non-adjacent intervals: membership is one binary search. IPv4
/// intervals are also kept as `u32` pairs (8 bytes each instead of 32), so a large watchlist's
/// search stays in cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RangeSet {
    ranges: Vec<Range>,
    v4: Vec<(u32, u32)>,
}

impl RangeSet {
    pub fn new(mut ranges: Vec<Range>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<Range> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.lo <= last.hi.saturating_add(1) => {
                    if r.hi > last.hi {
                        last.hi = r.hi;
                    }
                }
                _ => merged.push(r),
            }
        }
        let lo4 = crate::ip::V4_MAPPED;
        let hi4 = crate::ip::V4_MAPPED | u32::MAX as u128;
        let v4 = merged
            .iter()
            .filter(|r| r.hi >= lo4 && r.lo <= hi4)
            .map(|r| (r.lo.max(lo4) as u32, r.hi.min(hi4) as u32))
            .collect();
        RangeSet { ranges: merged, v4 }
    }

    /// Parses each entry with [`parse_range`]; the first bad one is the error.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, RangeError> {
        let v = entries.into_iter().map(parse_range).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(v))
    }

    #[inline]
    pub fn contains(&self, x: u128) -> bool {
        if crate::ip::is_v4(x) {
            let x = x as u32;
            let i = self.v4.partition_point(|r| r.1 < x);
            return i < self.v4.len() && self.v4[i].0 <= x;
        }
        let i = self.ranges.partition_point(|r| r.hi < x);
        i < self.ranges.len() && self.ranges[i].lo <= x
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }
}

/// The 26 ranges of Elastic's rule "M365 or Entra ID Identity Sign-in from a Suspicious Source",
/// in the rule's order.
pub const PRIVATE_RANGES: [&str; 26] = [
    "10.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.0.0/29",
    "192.0.0.8/32",
    "192.0.0.9/32",
    "192.0.0.10/32",
    "192.0.0.170/32",
    "192.0.0.171/32",
    "192.0.2.0/24",
    "192.31.196.0/24",
    "192.52.193.0/24",
    "192.168.0.0/16",
    "192.88.99.0/24",
    "224.0.0.0/4",
    "100.64.0.0/10",
    "192.175.48.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
    "::1/128",
    "fe80::/10",
    "ff00::/8",
];

/// The compiled set of [`PRIVATE_RANGES`].
pub fn private_ranges() -> &'static RangeSet {
    static SET: std::sync::OnceLock<RangeSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| RangeSet::parse(PRIVATE_RANGES).expect("built-in ranges parse"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::parse_u128;

    #[test]
    fn cidr_edges() {
        let r = parse_cidr("10.0.0.0/8").unwrap();
        assert!(r.contains(parse_u128("10.0.0.0").unwrap()));
        assert!(r.contains(parse_u128("10.255.255.255").unwrap()));
        assert!(!r.contains(parse_u128("11.0.0.0").unwrap()));
        assert!(r.contains(parse_u128("::ffff:10.1.1.1").unwrap()));
        let all = parse_cidr("0.0.0.0/0").unwrap();
        assert!(all.contains(parse_u128("255.255.255.255").unwrap()));
        assert!(!all.contains(parse_u128("2001:db8::1").unwrap()));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0/8").is_err());
    }

    #[test]
    fn set_merges_and_searches() {
        let s = RangeSet::parse(["10.0.0.0/24", "10.0.1.0/24", "10.0.0.5", "192.168.1.1-192.168.1.9", "::1"]).unwrap();
        assert_eq!(s.len(), 3);
        for (ip, want) in [
            ("10.0.1.255", true),
            ("10.0.2.0", false),
            ("192.168.1.1", true),
            ("192.168.1.9", true),
            ("192.168.1.10", false),
            ("::1", true),
            ("::2", false),
        ] {
            assert_eq!(s.contains(parse_u128(ip).unwrap()), want, "{ip}");
        }
        assert!(parse_range("10.0.0.9-10.0.0.1").is_err());
        assert!(parse_range("10.0.0.1-::1").is_err());
    }
}

#[cfg(test)]
mod property {
    //! `cidr_match`'s core (parse_cidr + RangeSet) against a straightforward reference: compare the
    //! top `prefix` bits of the address and the network, on random addresses and prefixes.
    use super::*;
    use crate::ip::parse_u128;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use crate::testdb::XorShift as Rng;

    fn reference_v4(ip: u32, net: u32, prefix: u32) -> bool {
        prefix == 0 || (ip >> (32 - prefix)) == (net >> (32 - prefix))
    }

    fn reference_v6(ip: u128, net: u128, prefix: u32) -> bool {
        prefix == 0 || (ip >> (128 - prefix)) == (net >> (128 - prefix))
    }

    #[test]
    fn agrees_with_reference_on_random_inputs() {
        let mut rng = Rng(0x2545F4914F6CDD1D);
        for _ in 0..20_000 {
            let (a, b) = (rng.next() as u32, rng.next() as u32);
            // Often share a prefix so both outcomes are exercised.
            let share = (rng.next() % 33) as u32;
            let b = if share == 0 { b } else { (a & (u32::MAX << (32 - share))) | (b & !(u32::MAX << (32 - share))) };
            let prefix = (rng.next() % 33) as u32;
            let cidr = format!("{}/{}", Ipv4Addr::from(b), prefix);
            let set = RangeSet::new(vec![parse_cidr(&cidr).unwrap()]);
            let ip = Ipv4Addr::from(a).to_string();
            assert_eq!(set.contains(parse_u128(&ip).unwrap()), reference_v4(a, b, prefix), "{ip} in {cidr}");
            let mapped = format!("::ffff:{ip}");
            assert_eq!(set.contains(parse_u128(&mapped).unwrap()), reference_v4(a, b, prefix), "{mapped} in {cidr}");
        }
        for _ in 0..20_000 {
            let a = ((rng.next() as u128) << 64) | rng.next() as u128;
            let b = ((rng.next() as u128) << 64) | rng.next() as u128;
            let share = (rng.next() % 129) as u32;
            let b =
                if share == 0 { b } else { (a & (u128::MAX << (128 - share))) | (b & !(u128::MAX << (128 - share))) };
            let prefix = (rng.next() % 129) as u32;
            let cidr = format!("{}/{}", Ipv6Addr::from(b), prefix);
            let set = RangeSet::new(vec![parse_cidr(&cidr).unwrap()]);
            let ip6 = Ipv6Addr::from(a);
            if ip6.to_ipv4_mapped().is_some() {
                continue;
            }
            let ip = ip6.to_string();
            assert_eq!(set.contains(parse_u128(&ip).unwrap()), reference_v6(a, b, prefix), "{ip} in {cidr}");
        }
    }
}
