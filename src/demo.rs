//! The demo: ingest the bundled samples into a lake, show what it holds, and run every detection
//! over the samples' time range (a backtest), printing what they find.

use crate::detect;
use crate::ingest::{ingest, IngestOptions};
use crate::lake::{Lake, ALL_TABLES};
use crate::rules::{self, RunWindow};
use arrow::array::{Array, Int64Array};
use std::fmt::Write;
use std::path::Path;

/// `temporary`: the lake is the demo's own and is removed when it ends (the report says so).
pub async fn run(data: &Path, lake_dir: &Path, temporary: bool) -> anyhow::Result<String> {
    let lake = Lake::open(&lake_dir.display().to_string())?;
    let opts = IngestOptions::new(vec![data.join("samples").display().to_string()]);
    let summary = ingest(&lake, &opts).await?;
    if !summary.unreadable.is_empty() {
        anyhow::bail!(
            "the demo's samples could not be read ({}); pass --data with a folder holding samples/, as the repository's data/ does",
            summary.unreadable.join("; ")
        );
    }
    let mut out = String::new();
    let note = if temporary { " (temporary, removed at exit; --lake DIR keeps one)" } else { "" };
    writeln!(out, "wisp demo: lake at {}{note}", lake_dir.display())?;
    writeln!(out, "{summary}\n")?;
    let watchlist = data.join("NetworkAllowlist.csv");
    let mut sopts = crate::session::SessionOptions::default();
    if watchlist.is_file() {
        sopts.udfs.watchlists.push(("NetworkAllowlist".into(), watchlist));
    }
    let ctx = crate::session::open(&lake, &sopts).await?;
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
    writeln!(out, "{}\n", arrow::util::pretty::pretty_format_batches(&batches)?)?;
    // The samples' time range (microseconds), rounded out to whole days below.
    let parts: Vec<String> =
        ALL_TABLES.iter().map(|t| format!("SELECT min(ts) AS a, max(ts) AS b FROM {}", t.name())).collect();
    let sql = format!(
        "SELECT CAST(min(a) AS BIGINT) AS lo, CAST(max(b) AS BIGINT) AS hi FROM ({})",
        parts.join(" UNION ALL ")
    );
    let range = ctx.sql(&sql).await?.collect().await?;
    let value = |c: usize| {
        range.first().and_then(|b| {
            b.column(c).as_any().downcast_ref::<Int64Array>().filter(|a| !a.is_null(0)).map(|a| a.value(0))
        })
    };
    let (lo, hi) = (value(0).unwrap_or(i64::MAX), value(1).unwrap_or(i64::MIN));
    if lo > hi {
        writeln!(out, "the lake is empty: no detections to run")?;
        return Ok(out);
    }
    let day = 86_400_000_000;
    let from = crate::time::from_micros(lo.div_euclid(day) * day)?;
    let to = crate::time::from_micros((hi.div_euclid(day) + 2) * day)?;
    writeln!(out, "detections, every scheduled run from {} to {}:", from.to_rfc3339(), to.to_rfc3339())?;
    let now = chrono::Utc::now();
    let mut found = Vec::new();
    for r in rules::load_all(None)? {
        let res = if r.meta.rule_type == rules::RuleType::Hunt {
            // A hunt runs once over the whole range.
            detect::run(&ctx, &r, &RunWindow { start: from, end: to }, now).await?
        } else {
            detect::backtest(&ctx, &r, from, to, now).await?
        };
        writeln!(out, "  {:<40} {} alert(s)", r.meta.id, res.alerts.len())?;
        found.extend(res.alerts);
    }
    let batch = detect::to_batch(&found)?;
    let mem = datafusion::datasource::MemTable::try_new(detect::alerts_schema(), vec![vec![batch]])?;
    ctx.register_table("demo_alerts", std::sync::Arc::new(mem))?;
    let table = ctx
        .sql(
            "SELECT rule_id, severity, ts, coalesce(service_principal_name, service_principal_id, source_ip) AS entity, \
             source_ip, substr(fields, 1, 80) AS details FROM demo_alerts ORDER BY ts, rule_id",
        )
        .await?
        .collect()
        .await?;
    writeln!(out, "\n{}", arrow::util::pretty::pretty_format_batches(&table)?)?;
    Ok(out)
}
