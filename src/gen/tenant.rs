//! The synthetic tenant: deterministic randomness and names, networks (one /16 per ASN, written
//! as an ASN range table), and the principals with their heavy-tailed weights and home addresses.

use super::Scale;
use std::io::Write;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// Randomness and names

#[derive(Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64, stream: u64) -> Self {
        Rng(splitmix(seed ^ splitmix(stream.wrapping_add(0x9e37))))
    }
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        splitmix(self.0)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub(super) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// `rate` rounded randomly so the expectation is exact.
    pub(super) fn count(&mut self, rate: f64) -> u64 {
        let base = rate.floor();
        base as u64 + u64::from(self.chance(rate - base))
    }
    pub(super) fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

pub(super) fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

pub(super) fn uid(seed: u64, kind: u64, i: u64) -> String {
    let mut s = String::with_capacity(36);
    push_uid(&mut s, seed, kind, i);
    s
}

/// [`uid`] appended to `buf` (the generator writes millions: no formatting machinery).
pub(super) fn push_uid(buf: &mut String, seed: u64, kind: u64, i: u64) {
    let a = splitmix(seed ^ splitmix(kind << 40 ^ i));
    let b = splitmix(a);
    // {:08x}-{:04x}-4{:03x}-{:04x}-{:012x}
    let mut out = [b'-'; 36];
    let mut hex = |at: usize, digits: usize, v: u64| {
        for k in 0..digits {
            out[at + k] = b"0123456789abcdef"[((v >> (4 * (digits - 1 - k))) & 0xf) as usize];
        }
    };
    hex(0, 8, a >> 32);
    hex(9, 4, (a >> 16) & 0xffff);
    hex(14, 4, 0x4000 | a & 0xfff);
    hex(19, 4, 0x8000 | (b >> 48) & 0x3fff);
    hex(24, 12, b & 0xffff_ffff_ffff);
    buf.push_str(std::str::from_utf8(&out).expect("ASCII"));
}

pub(super) const WORDS: [&str; 24] = [
    "payroll",
    "backup",
    "deploy",
    "sync",
    "etl",
    "reporting",
    "billing",
    "crm",
    "hr",
    "monitor",
    "scanner",
    "ingest",
    "archive",
    "export",
    "mailer",
    "ledger",
    "search",
    "identity",
    "gateway",
    "infra",
    "terraform",
    "github",
    "audit",
    "analytics",
];

pub const MS_TENANTS: [&str; 2] = ["f8cdef31-a31e-4b4a-93e4-5f571e91255a", "72f988bf-86f1-41af-91ab-2d7cd011db47"];
pub const TENANT: &str = "7c1f2b1e-0000-4000-8000-00000000c0de";

// ---------------------------------------------------------------------------------------------
// Networks: one /16 per ASN in public space, written as an ASN range table.

#[derive(Debug, Clone)]
pub(super) struct Net {
    pub(super) asn: i64,
    pub(super) org: String,
    pub(super) first: u8,
    pub(super) second: u8,
}

impl Net {
    pub(super) fn ip(&self, host: u64) -> String {
        format!("{}.{}.{}.{}", self.first, self.second, (host >> 8) % 256, host % 254 + 1)
    }
}

pub(super) fn networks(n: usize) -> Vec<Net> {
    let named: [(i64, &str); 12] = [
        (8075, "Microsoft Corporation"),
        (16509, "Amazon.com, Inc."),
        (14618, "Amazon.com, Inc."),
        (15169, "Google LLC"),
        (396982, "Google LLC"),
        (36459, "GitHub, Inc."),
        (14061, "DigitalOcean, LLC"),
        (24940, "Hetzner Online GmbH"),
        (16276, "OVH SAS"),
        (7922, "Comcast Cable Communications, LLC"),
        (3320, "Deutsche Telekom AG"),
        (8068, "MICROSOFT-CORP-MSN-AS-BLOCK"),
    ];
    (0..n)
        .map(|k| {
            let (asn, org) = if k < named.len() {
                (named[k].0, named[k].1.to_string())
            } else {
                (1_000_000 + k as i64, format!("Network {k} Ltd"))
            };
            Net { asn, org, first: 11 + (k / 256) as u8, second: (k % 256) as u8 }
        })
        .collect()
}

/// Attacker networks used only by injected scenarios.
pub(super) fn attacker_nets() -> Vec<Net> {
    vec![
        Net { asn: 65_001, org: "Bulletproof Hosting Ltd".into(), first: 45, second: 1 },
        Net { asn: 65_002, org: "Quiet Proxy Networks".into(), first: 45, second: 2 },
        Net { asn: 65_003, org: "Old Friends Transit".into(), first: 45, second: 3 },
        Net { asn: 65_004, org: "Residential Proxy Pool".into(), first: 45, second: 4 },
    ]
}

pub(super) fn write_asn_table(path: &Path, nets: &[Net]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "start_ip,end_ip,asn,organization")?;
    for n in nets.iter().chain(attacker_nets().iter()) {
        writeln!(f, "{0}.{1}.0.0,{0}.{1}.255.255,{2},\"{3}\"", n.first, n.second, n.asn, n.org)?;
    }
    f.flush()
}

// ---------------------------------------------------------------------------------------------
// Principals

#[derive(Debug, Clone)]
pub(super) struct Principal {
    pub(super) id: String,
    pub(super) app_id: String,
    pub(super) name: String,
    pub(super) owner: Option<&'static str>,
    pub(super) weight: f64,
    /// Home addresses (ip, net index).
    pub(super) homes: Vec<(String, usize)>,
}

pub(super) struct Tenant {
    pub(super) sps: Vec<Principal>,
    pub(super) mis: Vec<Principal>,
    pub(super) users: Vec<Principal>,
    pub(super) nets: Vec<Net>,
    pub(super) dormant: Principal,
}

/// Scenario principals (indexes into `sps`) kept out of background risk events, failures and audit.
pub(super) const RESERVED: std::ops::Range<usize> = 7..15;

pub(super) fn tenant(seed: u64, s: Scale) -> Tenant {
    let nets = networks(3000);
    let mut rng = Rng::new(seed, 1);
    let cloud = [1usize, 2, 3, 4, 5, 6, 7, 8];
    let mk = |rng: &mut Rng, kind: u64, i: usize, prefix: &str, n: usize| -> Principal {
        let rank = i as f64 + 1.0;
        let auto = i < n / 20 + 1;
        let home_count = if auto { 2 + rng.below(3) } else { 1 + rng.below(2) };
        let homes = (0..home_count)
            .map(|_| {
                let net = if auto || rng.chance(0.5) { *rng.pick(&cloud) } else { 12 + rng.below(2900) as usize };
                (nets[net].ip(rng.next()), net)
            })
            .collect();
        let w = WORDS[i % WORDS.len()];
        Principal {
            id: uid(seed, kind, i as u64),
            app_id: uid(seed, kind + 100, i as u64),
            name: format!("{prefix}{w}-{i}"),
            owner: None,
            weight: 1.0 / rank.powf(1.1),
            homes,
        }
    };
    let mut sps: Vec<Principal> = (0..s.sps).map(|i| mk(&mut rng, 1, i, "svc-", s.sps)).collect();
    // Microsoft first-party apps (about 8%), never the scenario principals.
    for (i, p) in sps.iter_mut().enumerate().skip(20) {
        if i % 12 == 0 {
            p.owner = Some(MS_TENANTS[i % 2]);
            p.name = format!("Microsoft {} Connector {i}", WORDS[i % WORDS.len()]);
            p.homes = vec![(nets[0].ip(i as u64), 0)];
        }
    }
    // Scenario principals get steady activity so they have history.
    for p in &mut sps[RESERVED] {
        p.weight = p.weight.max(0.02);
    }
    let mis = (0..s.mis).map(|i| mk(&mut rng, 2, i, "mi-", s.mis)).collect();
    let users = (0..s.users)
        .map(|i| {
            let mut p = mk(&mut rng, 3, i, "user", s.users);
            p.name = format!("user{i}@contoso.example");
            let net = 9 + rng.below(2) as usize;
            p.homes = vec![(nets[net].ip(rng.next()), net)];
            p
        })
        .collect();
    let dormant = Principal {
        id: uid(seed, 9, 0),
        app_id: uid(seed, 109, 0),
        name: "svc-dormant-legacy".into(),
        owner: None,
        weight: 0.0,
        homes: vec![],
    };
    Tenant { sps, mis, users, nets, dormant }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_is_the_formatted_one() {
        let mut rng = Rng::new(1, 2);
        for _ in 0..2000 {
            let (seed, kind, i) = (rng.next(), rng.below(100), rng.next());
            let a = splitmix(seed ^ splitmix(kind << 40 ^ i));
            let b = splitmix(a);
            let want = format!(
                "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xfff,
                0x8000 | (b >> 48) & 0x3fff,
                b & 0xffff_ffff_ffff
            );
            assert_eq!(uid(seed, kind, i), want);
        }
    }
}
