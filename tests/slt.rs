//! sqllogictest files for every UDF (tests/slt/*.slt), run on a DataFusion session with the UDFs
//! registered. ASN lookups use MaxMind's test database from ../shared/fixtures when present (label
//! `maxmind`), else an ASN range table this test writes itself with the same Telstra range, so the
//! suite runs where ../shared is absent.

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

fn session(dir: &std::path::Path) -> (SessionContext, bool) {
    let fx = common::repo().join("../shared/fixtures/mmdb");
    let maxmind = fx.join("GeoLite2-ASN-Test.mmdb").is_file();
    let allow = dir.join("allow.csv");
    std::fs::write(
        &allow,
        "SearchKey,IPOrRange\n1,10.0.0.0/8\n2,192.168.1.1-192.168.1.20\n3,2001:db8::/32\n4,198.51.100.7\n",
    )
    .unwrap();
    let asn_db = if maxmind {
        fx.join("GeoLite2-ASN-Test.mmdb")
    } else {
        eprintln!("note: ../shared/fixtures is missing; ASN tests use a self-written range table");
        let p = dir.join("asn.csv");
        std::fs::write(&p, "start_ip,end_ip,asn,organization\n1.128.0.0,1.159.255.255,1221,Telstra Pty Ltd\n12.81.92.0,12.81.95.255,7018,AT&T Services\n").unwrap();
        p
    };
    let cfg = wisp_udfs::UdfConfig {
        asn_db: Some(asn_db),
        geo_db: maxmind.then(|| fx.join("GeoLite2-City-Test.mmdb")),
        watchlists: vec![("NetworkAllowlist".into(), allow)],
    };
    let udfs = wisp_udfs::Udfs::load(&cfg).unwrap();
    let ctx = SessionContext::new();
    let mut state = ctx.state();
    udfs.register(&mut state).unwrap();
    (SessionContext::new_with_state(state), maxmind)
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
    for f in &files {
        let d = dir.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let (ctx, _) = session(&d);
            async move { Ok(Db { ctx }) }
        });
        let (_, maxmind) = session(&dir);
        if maxmind {
            runner.add_label("maxmind");
        }
        runner.with_column_validator(|_, _| true);
        if let Err(e) = runner.run_file_async(f).await {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
