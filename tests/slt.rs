//! sqllogictest files for every UDF (tests/slt/*.slt), run on a plain DataFusion session with the
//! UDFs registered: once against MaxMind DB files this test writes itself (so the suite runs where
//! ../shared is absent), and once more against MaxMind's own test databases in ../shared/fixtures.

mod common;
use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};
use std::path::PathBuf;

struct Db {
    ctx: SessionContext,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbError(String);

#[async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let df = wisp::query::read_only_sql(&self.ctx, sql).await.map_err(|e| DbError(e.to_string()))?;
        let batches: Vec<RecordBatch> = df.collect().await.map_err(|e| DbError(e.to_string()))?;
        let ncols = batches.first().map(|b| b.num_columns()).unwrap_or(0);
        let opts = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for b in &batches {
            let fmts: Vec<ArrayFormatter> =
                b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap()).collect();
            for r in 0..b.num_rows() {
                rows.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
            }
        }
        Ok(DBOutput::Rows { types: vec![DefaultColumnType::Any; ncols], rows })
    }

    async fn shutdown(&mut self) {}
}

/// A session whose ASN and City databases are MaxMind's test files (`maxmind = true`) or
/// databases this test writes itself with the same networks.
fn session(dir: &std::path::Path, maxmind: bool) -> SessionContext {
    let fx = common::repo().join("../shared/fixtures/mmdb");
    let allow = dir.join("allow.csv");
    std::fs::write(
        &allow,
        "SearchKey,IPOrRange\n1,10.0.0.0/8\n2,192.168.1.1-192.168.1.20\n3,2001:db8::/32\n4,198.51.100.7\n",
    )
    .unwrap();
    let (asn_db, geo_db) = if maxmind {
        (fx.join("GeoLite2-ASN-Test.mmdb"), fx.join("GeoLite2-City-Test.mmdb"))
    } else {
        use wisp_udfs::testdb::{asn, build, city};
        let a = dir.join("asn.mmdb");
        std::fs::write(
            &a,
            build(
                "GeoLite2-ASN",
                1,
                &[
                    ("1.128.0.0".parse().unwrap(), 11, asn(1221, Some("Telstra Pty Ltd"))),
                    ("12.81.92.0".parse().unwrap(), 22, asn(7018, Some("AT&T Services"))),
                    ("65.115.241.0".parse().unwrap(), 24, asn(209, None)),
                    ("73.0.0.0".parse().unwrap(), 8, asn(7922, Some("Comcast Cable Communications, Inc."))),
                ],
            ),
        )
        .unwrap();
        let c = dir.join("city.mmdb");
        std::fs::write(
            &c,
            build(
                "GeoLite2-City",
                1,
                &[
                    ("81.2.69.128".parse().unwrap(), 25, city("GB", "United Kingdom", "London", 51.5142, -0.0931)),
                    ("175.16.199.0".parse().unwrap(), 24, city("CN", "China", "Changchun", 43.88, 125.3228)),
                ],
            ),
        )
        .unwrap();
        (a, c)
    };
    let cfg = wisp_udfs::UdfConfig {
        asn_db: Some(asn_db),
        geo_db: Some(geo_db),
        watchlists: vec![("NetworkAllowlist".into(), allow)],
    };
    let udfs = wisp_udfs::Udfs::load(&cfg).unwrap();
    let ctx = SessionContext::new();
    let mut state = ctx.state();
    udfs.register(&mut state).unwrap();
    SessionContext::new_with_state(state)
}

#[tokio::test]
async fn slt_files() {
    let dir = common::tmp("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(common::repo().join("tests/slt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "expected an .slt file per UDF, found {}", files.len());
    let mut failures = Vec::new();
    // Always against databases written here; also against MaxMind's test files when present.
    let mut modes = vec![false];
    if common::repo().join("../shared/fixtures/mmdb/GeoLite2-ASN-Test.mmdb").is_file() {
        modes.push(true);
    } else {
        eprintln!("SKIPPED (MaxMind half): ../shared/fixtures is missing; the .slt files ran against self-written databases only");
    }
    for maxmind in modes {
        for f in &files {
            let d = dir.clone();
            let mut runner = sqllogictest::Runner::new(move || {
                let ctx = session(&d, maxmind);
                async move { Ok(Db { ctx }) }
            });
            runner.with_column_validator(|_, _| true);
            if let Err(e) = runner.run_file_async(f).await {
                failures.push(format!("{} (maxmind={maxmind}): {e}", f.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
