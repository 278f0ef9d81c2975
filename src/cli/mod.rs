//! The command line: one function per subcommand; flags parsed here, work done in the library.
//!
//! Exit codes: 0 success; 1 error (bad flags, unreadable lake, failed query); 2 an input could
//! not be read (the others were still ingested); 3 `--strict` and records were rejected.

pub mod detect;
pub mod gen;
pub mod hunt;
pub mod ingest;
pub mod query;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_UNREADABLE_INPUT: i32 = 2;
pub const EXIT_STRICT_REJECTS: i32 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "wisp",
    version,
    about = "Hunt and detect attacks on Entra ID workload identities over a Parquet lake"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert raw exports into the Parquet lake.
    Ingest(ingest::IngestArgs),
    /// Run one SQL query over the lake.
    Sql(query::SqlArgs),
    /// Ingest the bundled samples into a temporary lake and show what it holds and finds.
    Demo(query::DemoArgs),
    /// Run detections: one scheduled run (--at) or every run in a range (backtest).
    Detect(detect::DetectArgs),
    /// List, show and lint the rules.
    Rules(detect::RulesArgs),
    /// Run a hunt (or any rule) once over a window and print its rows.
    Hunt(hunt::HuntArgs),
    /// One timeline of everything a principal did.
    Pivot(hunt::PivotArgs),
    /// Interactive SQL over the lake (read-only), with history.
    Shell(hunt::ShellArgs),
    /// Generate a synthetic tenant (raw exports or a lake) with injected attacks and ground truth.
    Gen(gen::GenArgs),
}

/// Flags every query command shares.
#[derive(Debug, Args, Clone)]
pub struct LakeArgs {
    /// Lake location (a folder).
    #[arg(long, env = "WISP_LAKE")]
    pub lake: String,
    /// MaxMind ASN database (.mmdb) or a start_ip,end_ip,asn,organization CSV/TSV.
    #[arg(long)]
    pub asn_db: Option<PathBuf>,
    /// MaxMind City database (.mmdb).
    #[arg(long)]
    pub geo_db: Option<PathBuf>,
    /// A named IP watchlist: NAME=FILE.csv (repeatable).
    #[arg(long, value_parser = parse_watchlist)]
    pub watchlist: Vec<(String, PathBuf)>,
    /// Memory pool for queries, in MiB; operators spill to disk beyond it. Parquet readers and
    /// results come on top (the 2.5 GiB default keeps 30-day runs on the large profile near 2.5 GiB).
    #[arg(long, default_value_t = 2560)]
    pub memory_mb: usize,
}

/// Output flags.
#[derive(Debug, Args, Clone)]
pub struct OutArgs {
    #[arg(long, value_enum, default_value_t = crate::output::OutputFormat::Table)]
    pub format: crate::output::OutputFormat,
    /// Write results to this file instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}

fn parse_watchlist(s: &str) -> Result<(String, PathBuf), String> {
    let (n, p) = s.split_once('=').ok_or_else(|| format!("expected NAME=FILE.csv, got '{s}'"))?;
    Ok((n.to_string(), PathBuf::from(p)))
}

impl LakeArgs {
    pub fn session_options(&self) -> crate::session::SessionOptions {
        crate::session::SessionOptions {
            udfs: wisp_udfs::UdfConfig {
                asn_db: self.asn_db.clone(),
                geo_db: self.geo_db.clone(),
                watchlists: self.watchlist.clone(),
            },
            memory_limit: self.memory_mb << 20,
            ..Default::default()
        }
    }
}

impl OutArgs {
    pub fn sink(&self) -> anyhow::Result<(Box<dyn std::io::Write + Send>, bool)> {
        use std::io::IsTerminal;
        Ok(match &self.output {
            Some(p) => (
                Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?,
                )),
                false,
            ),
            None => (Box::new(std::io::BufWriter::new(std::io::stdout())), std::io::stdout().is_terminal()),
        })
    }
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Ingest(a) => ingest::run(a).await,
        Command::Sql(a) => query::sql(a).await,
        Command::Demo(a) => query::demo(a).await,
        Command::Detect(a) => detect::detect(a).await,
        Command::Rules(a) => detect::rules_cmd(a).await,
        Command::Hunt(a) => hunt::hunt(a).await,
        Command::Pivot(a) => hunt::pivot(a).await,
        Command::Shell(a) => hunt::shell(a).await,
        Command::Gen(a) => gen::run(a).await,
    }
}
