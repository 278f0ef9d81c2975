//! The demo: ingest the bundled samples into a lake and report what it holds.

use crate::ingest::{formats::Format, ingest, IngestOptions};
use crate::lake::{Lake, ALL_TABLES};
use std::fmt::Write;
use std::path::Path;

pub async fn run(data: &Path, lake_dir: &Path) -> anyhow::Result<String> {
    let lake = Lake::open(&lake_dir.display().to_string())?;
    let opts = IngestOptions {
        inputs: vec![data.join("samples").display().to_string()],
        format: Format::Auto,
        asn_db: None,
        geo_db: None,
        keep_raw: true,
        progress: false,
    };
    let summary = ingest(&lake, &opts).await?;
    let mut out = String::new();
    writeln!(out, "wisp demo: lake at {}", lake_dir.display())?;
    writeln!(out, "{summary}\n")?;
    let ctx = crate::session::open(&lake, &Default::default()).await?;
    let union: Vec<String> = ALL_TABLES
        .iter()
        .map(|t| {
            format!(
                "SELECT '{0}' AS \"table\", count(*) AS \"rows\", min(ts) AS first, max(ts) AS last FROM {0}",
                t.name()
            )
        })
        .collect();
    let sql = format!("SELECT * FROM ({}) ORDER BY \"table\"", union.join(" UNION ALL "));
    let batches = ctx.sql(&sql).await?.collect().await?;
    writeln!(out, "{}", arrow::util::pretty::pretty_format_batches(&batches)?)?;
    Ok(out)
}
