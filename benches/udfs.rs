//! Criterion benchmarks of the UDFs over a million-row column (mixed IPv4/IPv6, NULLs, junk),
//! next to a naive baseline that parses every CIDR per row.

use arrow::array::{ArrayRef, StringArray};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use std::sync::Arc;
use wisp_udfs::ranges::{parse_cidr, PRIVATE_RANGES};

const N: usize = 1_000_000;

fn column() -> ArrayRef {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let v: Vec<Option<String>> = (0..N)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
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

fn invoke(f: &ScalarUDF, args: Vec<ColumnarValue>) -> ColumnarValue {
    let arg_fields = args.iter().map(|a| Arc::new(Field::new("a", a.data_type(), true))).collect();
    f.invoke_with_args(ScalarFunctionArgs {
        args,
        arg_fields,
        number_rows: N,
        return_field: Arc::new(Field::new("r", DataType::Boolean, true)),
        config_options: Arc::new(ConfigOptions::default()),
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let col = column();
    let udfs = wisp_udfs::Udfs::default();
    let funcs = udfs.functions();
    let find = |n: &str| funcs.iter().find(|f| f.name() == n).unwrap().clone();
    let mut g = c.benchmark_group("udfs");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    let cidr = find("cidr_match");
    let cidr_args: Vec<ColumnarValue> = std::iter::once(ColumnarValue::Array(col.clone()))
        .chain(PRIVATE_RANGES.iter().map(|c| ColumnarValue::Scalar(ScalarValue::Utf8(Some(c.to_string())))))
        .collect();
    g.bench_function("cidr_match_26_private_ranges", |b| b.iter(|| invoke(&cidr, cidr_args.clone())));
    let private = find("is_private_ip");
    g.bench_function("is_private_ip", |b| b.iter(|| invoke(&private, vec![ColumnarValue::Array(col.clone())])));
    let strings = col.as_any().downcast_ref::<StringArray>().unwrap().clone();
    g.bench_function("naive_baseline_parse_cidrs_per_row", |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for v in strings.iter().flatten() {
                if let Some(x) = wisp_udfs::ip::parse_u128(v) {
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
