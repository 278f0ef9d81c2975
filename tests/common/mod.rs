#![allow(dead_code)]
use std::path::PathBuf;
use wisp::ingest::{ingest, IngestOptions, Summary};
use wisp::lake::Lake;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/fixtures`, or `None` with a clear message when the folder is missing.
pub fn fixtures() -> Option<PathBuf> {
    let p = repo().join("../shared/fixtures");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: ../shared/fixtures is missing (expected beside the checkout at {}); this conformance test needs it", p.display());
        None
    }
}

pub fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "wisp-test-{name}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

pub fn opts(inputs: Vec<String>) -> IngestOptions {
    IngestOptions::new(inputs)
}

pub async fn ingest_into(lake_dir: &std::path::Path, o: IngestOptions) -> Summary {
    let lake = Lake::open(&lake_dir.display().to_string()).unwrap();
    let s = ingest(&lake, &o).await.unwrap();
    assert!(s.balanced(), "read != written + rejected + duplicates: {s:?}");
    s
}

pub async fn query(lake_dir: &std::path::Path, sql: &str) -> Vec<arrow::array::RecordBatch> {
    let lake = Lake::open(&lake_dir.display().to_string()).unwrap();
    let ctx = wisp::session::open(&lake, &Default::default()).await.unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

pub async fn query_text(lake_dir: &std::path::Path, sql: &str) -> String {
    let b = query(lake_dir, sql).await;
    arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string()
}
