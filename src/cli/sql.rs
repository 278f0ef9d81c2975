use super::{LakeArgs, OutArgs, EXIT_OK};
use clap::Args;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp sql --lake ./lake \"SELECT service_principal_name, count(*) AS n FROM signins GROUP BY 1 ORDER BY n DESC LIMIT 10\"
  wisp sql --lake ./lake --asn-db GeoLite2-ASN.mmdb --format jsonl \"SELECT source_ip, asn_org(source_ip) FROM signins LIMIT 5\"
  wisp sql --lake ./lake --format parquet -o audit.parquet \"SELECT * FROM audit WHERE day >= '2026-11-01'\"")]
pub struct SqlArgs {
    /// The query (read-only: DDL, DML, COPY and SET are refused).
    pub query: String,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

pub async fn run(a: SqlArgs) -> anyhow::Result<i32> {
    let (_lake, ctx) = a.lake.open().await?;
    let started = std::time::Instant::now();
    let df = crate::query::read_only_sql(&ctx, &a.query).await?;
    let (out, tty) = a.out.sink()?;
    let (n, scan) = crate::output::write_df(df, a.out.format, out, tty, started).await?;
    eprintln!("{}", crate::output::summary(n, &scan, started));
    Ok(EXIT_OK)
}
