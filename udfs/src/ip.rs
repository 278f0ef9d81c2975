//! IP address parsing and normalization shared by every function.
//!
//! Every address is held as a `u128` in the IPv6 space, with IPv4 addresses mapped into
//! `::ffff:0:0/96`. A `::ffff:a.b.c.d` address and `a.b.c.d` are therefore the same number, and an
//! IPv4 CIDR or range covers exactly the mapped block: one comparison path for both families.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The `::ffff:0:0` prefix under which IPv4 addresses live in the `u128` space.
pub const V4_MAPPED: u128 = 0xffff_0000_0000;

/// IPv4 address as its mapped `u128`.
#[inline]
pub fn v4_to_u128(v4: Ipv4Addr) -> u128 {
    V4_MAPPED | u32::from(v4) as u128
}

/// True if the `u128` lies in the mapped IPv4 block.
#[inline]
pub fn is_v4(x: u128) -> bool {
    (x >> 32) == 0xffff
}

/// Turns a `u128` back into an address (IPv4 when mapped).
pub fn to_ipaddr(x: u128) -> IpAddr {
    if is_v4(x) {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(x))
    }
}

/// Parses an address as it appears in logs: plain IPv4/IPv6, `a.b.c.d:port`, `[v6]`, `[v6]:port`,
/// a `%zone` suffix, surrounding whitespace. Returns `None` for anything else (never panics).
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let s = if let Some(rest) = s.strip_prefix('[') {
        // [v6] or [v6]:port
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || (after.starts_with(':') && after[1..].bytes().all(|b| b.is_ascii_digit()))) {
            return None;
        }
        &rest[..end]
    } else {
        s
    };
    let s = match s.find('%') {
        Some(i) => &s[..i],
        None => s,
    };
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    if let Ok(v6) = s.parse::<Ipv6Addr>() {
        return Some(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        });
    }
    // a.b.c.d:port
    if let Some((host, port)) = s.rsplit_once(':') {
        if !host.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(v4) = host.parse::<Ipv4Addr>() {
                return Some(IpAddr::V4(v4));
            }
        }
    }
    None
}

/// Parses an address into the shared `u128` space.
#[inline]
pub fn parse_u128(s: &str) -> Option<u128> {
    // Fast path: a plain IPv4 literal is by far the most common input.
    let b = s.as_bytes();
    if !b.is_empty() && b.len() <= 15 && b[0].is_ascii_digit() {
        if let Some(v) = fast_v4(b) {
            return Some(V4_MAPPED | v as u128);
        }
    }
    parse_ip(s).map(ip_to_u128)
}

#[inline]
fn fast_v4(b: &[u8]) -> Option<u32> {
    let mut out: u32 = 0;
    let mut octet: u32 = 0;
    let mut digits = 0;
    let mut dots = 0;
    for &c in b {
        if c.is_ascii_digit() {
            if digits > 0 && octet == 0 {
                return None; // leading zero: let the strict parser decide
            }
            octet = octet * 10 + (c - b'0') as u32;
            digits += 1;
            if digits > 3 || octet > 255 {
                return None;
            }
        } else if c == b'.' {
            if digits == 0 || dots == 3 {
                return None;
            }
            out = (out << 8) | octet;
            octet = 0;
            digits = 0;
            dots += 1;
        } else {
            return None;
        }
    }
    if dots != 3 || digits == 0 {
        return None;
    }
    Some((out << 8) | octet)
}

/// Maps an address into the shared `u128` space.
#[inline]
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4_to_u128(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_to_u128(v4),
            None => u128::from(v6),
        },
    }
}

/// The normalized text form of an address: no port, no brackets, `::ffff:a.b.c.d` folded to
/// `a.b.c.d`, IPv6 in its canonical compressed form. `None` when unparsable or empty.
pub fn normalize(s: &str) -> Option<String> {
    normalize_cow(s).map(std::borrow::Cow::into_owned)
}

/// [`normalize`], borrowing `s` when it is already the normal form (a dotted quad without
/// leading zeros, as most addresses are).
pub fn normalize_cow(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if fast_v4(s.as_bytes()).is_some() {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    parse_ip(s).map(|ip| std::borrow::Cow::Owned(ip.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_forms() {
        assert_eq!(normalize("1.2.3.4").as_deref(), Some("1.2.3.4"));
        assert_eq!(normalize(" 1.2.3.4:443 ").as_deref(), Some("1.2.3.4"));
        assert_eq!(normalize("::ffff:10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(normalize("[2001:db8::1]:8080").as_deref(), Some("2001:db8::1"));
        assert_eq!(normalize("[2001:DB8::1]").as_deref(), Some("2001:db8::1"));
        assert_eq!(normalize("fe80::1%eth0").as_deref(), Some("fe80::1"));
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("::2a02:cf40:add:4002:91f2:a9b2:e09a:6fc6"), None);
        assert_eq!(normalize("999.1.1.1"), None);
        assert_eq!(normalize("1.2.3.4:x"), None);
        assert_eq!(normalize("not an ip"), None);
    }

    /// A dotted quad is kept as written exactly when it is the text its address prints as.
    #[test]
    fn normalize_of_a_dotted_quad_is_its_display() {
        let quads = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3.04",
            "1.2.3",
            "256.1.1.1",
            "1..2.3",
        ];
        for s in quads {
            assert_eq!(normalize(s), parse_ip(s).map(|ip| ip.to_string()), "{s}");
        }
        assert_eq!(normalize("1.2.3.04"), None);
    }

    #[test]
    fn fast_path_agrees_with_std() {
        for s in ["0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", "10.0.0.1"] {
            let std = s.parse::<Ipv4Addr>().ok().map(v4_to_u128);
            assert_eq!(parse_u128(s), std, "{s}");
        }
    }
}
