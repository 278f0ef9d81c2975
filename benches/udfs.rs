//! Criterion benchmarks of every UDF over a million-row column (mixed IPv4/IPv6, some NULLs and
//! junk), next to a naive baseline that parses every CIDR per row. Throughput is rows per second
//! (criterion's "elem/s"); the benchmark runs on one thread, so that is per core.

use arrow::array::{ArrayRef, StringArray};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::arrow::datatypes::Field;
use datafusion::common::ScalarValue;
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use std::sync::Arc;
use wisp_udfs::ranges::{parse_cidr, PRIVATE_RANGES};

const N: usize = 1_000_000;

use wisp_udfs::testdb::XorShift as Rng;

fn column() -> ArrayRef {
    let mut r = Rng(0x9e3779b97f4a7c15);
    let v: Vec<Option<String>> = (0..N)
        .map(|i| {
            let x = r.next();
            match i % 20 {
                0 => None,
                1 => Some("not-an-ip".to_string()),
                2 | 3 => Some(format!("2001:db8:{:x}::{:x}", (x >> 16) as u16, x as u16)),
                _ => Some(format!("{}.{}.{}.{}", (x >> 24) as u8, (x >> 16) as u8, (x >> 8) as u8, x as u8)),
            }
        })
        .collect();
    Arc::new(StringArray::from(v))
}

fn s(v: &str) -> ColumnarValue {
    ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.to_string())))
}

fn invoke(f: &ScalarUDF, args: Vec<ColumnarValue>) -> ColumnarValue {
    let arg_fields = args.iter().map(|a| Arc::new(Field::new("a", a.data_type(), true))).collect();
    let ret = f.return_type(&args.iter().map(|a| a.data_type()).collect::<Vec<_>>()).unwrap();
    f.invoke_with_args(ScalarFunctionArgs {
        args,
        arg_fields,
        number_rows: N,
        return_field: Arc::new(Field::new("r", ret, true)),
        config_options: Arc::new(ConfigOptions::default()),
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let col = column();
    let dir = std::env::temp_dir().join(format!("wisp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A 10,000-entry watchlist of CIDRs, ranges and single addresses.
    let mut r = Rng(42);
    let mut wl = String::from("IPOrRange\n");
    for i in 0..10_000 {
        let x = r.next();
        let (a, b, cc) = ((x >> 24) as u8, (x >> 16) as u8, (x >> 8) as u8);
        match i % 3 {
            0 => wl.push_str(&format!("{a}.{b}.{cc}.0/24\n")),
            1 => wl.push_str(&format!("{a}.{b}.{cc}.1-{a}.{b}.{cc}.99\n")),
            _ => wl.push_str(&format!("{a}.{b}.{cc}.{}\n", x as u8)),
        }
    }
    std::fs::write(dir.join("wl.csv"), wl).unwrap();
    // An ASN database of 4,096 networks (a /20 each across the IPv4 space) and a City database.
    use wisp_udfs::testdb::{asn, build, city};
    let nets: Vec<_> = (0..4096u32)
        .map(|i| (std::net::Ipv4Addr::from(i << 20), 12u8, asn(64_000 + i, Some(&format!("Org {i}")))))
        .collect();
    std::fs::write(dir.join("asn.mmdb"), build("GeoLite2-ASN", 1, &nets)).unwrap();
    let cities: Vec<_> = (0..256u32)
        .map(|i| {
            (std::net::Ipv4Addr::from(i << 24), 8u8, city("GB", "United Kingdom", &format!("City {i}"), 51.5, -0.1))
        })
        .collect();
    std::fs::write(dir.join("city.mmdb"), build("GeoLite2-City", 1, &cities)).unwrap();
    let udfs = wisp_udfs::Udfs::load(&wisp_udfs::UdfConfig {
        asn_db: Some(dir.join("asn.mmdb")),
        geo_db: Some(dir.join("city.mmdb")),
        watchlists: vec![("Big".into(), dir.join("wl.csv"))],
    })
    .unwrap();
    let funcs = udfs.functions();
    let find = |n: &str| funcs.iter().find(|f| f.name() == n).unwrap().clone();
    let ip = || ColumnarValue::Array(col.clone());
    let mut g = c.benchmark_group("udfs_1M_rows");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    let cidr_args: Vec<ColumnarValue> = std::iter::once(ip()).chain(PRIVATE_RANGES.iter().map(|c| s(c))).collect();
    let f = find("cidr_match");
    g.bench_function("cidr_match_26_private_ranges", |b| b.iter(|| invoke(&f, cidr_args.clone())));
    g.bench_function("cidr_match_1_cidr", |b| b.iter(|| invoke(&f, vec![ip(), s("10.0.0.0/8")])));
    let f = find("is_private_ip");
    g.bench_function("is_private_ip", |b| b.iter(|| invoke(&f, vec![ip()])));
    let f = find("ip_in_range");
    g.bench_function("ip_in_range", |b| b.iter(|| invoke(&f, vec![ip(), s("10.0.0.1-10.255.0.9")])));
    let f = find("ip_in_any_range");
    g.bench_function("ip_in_any_range_3", |b| {
        b.iter(|| invoke(&f, vec![ip(), s("10.0.0.0/8"), s("172.16.0.1-172.16.9.9"), s("2001:db8::/32")]))
    });
    let f = find("ip_compare");
    g.bench_function("ip_compare", |b| b.iter(|| invoke(&f, vec![ip(), s("128.0.0.0")])));
    let f = find("to_ip");
    g.bench_function("to_ip", |b| b.iter(|| invoke(&f, vec![ip()])));
    let f = find("in_watchlist");
    g.bench_function("in_watchlist_10000_entries", |b| b.iter(|| invoke(&f, vec![ip(), s("Big")])));
    let f = find("asn_number");
    g.bench_function("asn_number_cached", |b| b.iter(|| invoke(&f, vec![ip()])));
    let f = find("asn");
    g.bench_function("asn_struct_cached", |b| b.iter(|| invoke(&f, vec![ip()])));
    let f = find("asn_org");
    g.bench_function("asn_org_cached", |b| b.iter(|| invoke(&f, vec![ip()])));
    let f = find("geo");
    g.bench_function("geo_cached", |b| b.iter(|| invoke(&f, vec![ip()])));
    let strings = col.as_any().downcast_ref::<StringArray>().unwrap().clone();
    g.bench_function("naive_baseline_parse_26_cidrs_per_row", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for v in strings.iter().flatten() {
                if let Ok(x) = v.parse::<std::net::IpAddr>() {
                    let x = wisp_udfs::ip::ip_to_u128(x);
                    if PRIVATE_RANGES.iter().any(|c| parse_cidr(c).unwrap().contains(x)) {
                        hits += 1;
                    }
                }
            }
            hits
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
