//! The command line: one file per subcommand; flags parsed here, work done in the library.
//!
//! Exit codes: 0 success (also when the reader of stdout closed it early, as `| head` does);
//! 1 error (bad or contradictory flags, no lake, unreadable database, failed query); 2 an input
//! could not be read (the others were still ingested); 3 `--strict` and records were rejected;
//! 4 `wisp run`: some runs failed (the others ran and committed).

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod compact;
pub mod demo;
pub mod detect;
pub mod explain;
pub mod gen;
pub mod hunt;
pub mod ingest;
pub mod pivot;
pub mod rules;
pub mod run;
pub mod shell;
pub mod sql;

use crate::lake::Lake;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_UNREADABLE_INPUT: i32 = 2;
pub const EXIT_STRICT_REJECTS: i32 = 3;
/// `wisp run`: some runs failed (the others ran and committed).
pub const EXIT_RUNS_FAILED: i32 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "wisp",
    version,
    about = "Hunt and detect attacks on Entra ID workload identities over a Parquet lake",
    after_help = "Exit codes: 0 success; 1 error (bad flags, no lake, failed query); 2 an input could not be read \
                  (the others were ingested); 3 ingest --strict and records were rejected; 4 run: some runs failed \
                  (the others ran and committed)."
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
    Sql(sql::SqlArgs),
    /// Ingest the bundled samples into a temporary lake and show what it holds and finds.
    Demo(demo::DemoArgs),
    /// Run detections: one scheduled run (--at) or every run in a range (backtest).
    Detect(detect::DetectArgs),
    /// Scheduled detection: every due run once, late data, an alert store, sinks (`run status`).
    Run(run::RunArgs),
    /// An alert from the store and the evidence rows behind it.
    Explain(explain::ExplainArgs),
    /// List, show and lint the rules.
    Rules(rules::RulesArgs),
    /// Run a hunt (or any rule) once over a window and print its rows.
    Hunt(hunt::HuntArgs),
    /// One timeline of everything a principal did.
    Pivot(pivot::PivotArgs),
    /// Interactive SQL over the lake (read-only), with history.
    Shell(shell::ShellArgs),
    /// Generate a synthetic tenant (raw exports or a lake) with injected attacks and ground truth.
    Gen(gen::GenArgs),
    /// Rewrite days with many files into few `ts`-sorted files (atomic, lossless).
    Compact(compact::CompactArgs),
    /// Apache Ballista processes with wisp's functions: `cluster scheduler`, `cluster executor`.
    #[cfg(feature = "cluster")]
    Cluster(cluster::ClusterArgs),
}

/// Which rules a detection command runs (`detect`, `run`).
#[derive(Debug, Args, Clone)]
pub struct RuleArgs {
    /// Rule ids to run (default: every detection, not hunts).
    #[arg(long = "rule")]
    pub rules: Vec<String>,
    /// Folder of extra or overriding rule files (a path or an object-store prefix).
    #[arg(long)]
    pub rules_dir: Option<PathBuf>,
    /// Override every rule's max_alerts per run.
    #[arg(long)]
    pub max_alerts: Option<usize>,
}

impl RuleArgs {
    /// The built-in rules and `--rules-dir`'s, narrowed to `--rule` and capped by `--max-alerts`.
    pub fn select(&self) -> anyhow::Result<Vec<crate::rules::Rule>> {
        let all = crate::rules::load_all(rules_dir(&self.rules_dir)?.as_deref())?;
        Ok(crate::detect::select(all, &self.rules, self.max_alerts)?)
    }
}

/// `--rules-dir` as a local folder: itself, or a copy of the `.sql` files under an object-store
/// prefix.
pub fn rules_dir(arg: &Option<PathBuf>) -> anyhow::Result<Option<PathBuf>> {
    Ok(arg.as_deref().map(crate::lake::fetch::local_rules_dir).transpose()?)
}

/// Flags every query command shares.
#[derive(Debug, Args, Clone)]
pub struct LakeArgs {
    /// Lake location (a folder written by `wisp ingest`).
    #[arg(long, env = "WISP_LAKE")]
    pub lake: String,
    #[command(flatten)]
    pub functions: FunctionArgs,
    /// Memory pool for queries, in MiB; operators spill to disk beyond it. Parquet readers and
    /// results come on top (the 2.5 GiB default keeps 30-day runs on the large profile near 2.5 GiB).
    #[arg(long, default_value_t = 2560)]
    pub memory_mb: usize,
    /// Where queries run: `local` (this process, the default) or `ballista://HOST:PORT`, an Apache
    /// Ballista cluster of `wisp cluster` processes (same plans, same results).
    #[arg(long, env = "WISP_ENGINE", default_value = "local")]
    pub engine: String,
}

/// The databases and watchlists SQL functions use (`asn()`, `geo()`, `in_watchlist()`): loaded at
/// start, a missing or unreadable one an error then.
#[derive(Debug, Args, Clone, Default)]
pub struct FunctionArgs {
    /// MaxMind ASN database (.mmdb) or a start_ip,end_ip,asn,organization CSV/TSV (a path or an
    /// object-store URL).
    #[arg(long)]
    pub asn_db: Option<PathBuf>,
    /// MaxMind City database (.mmdb; a path or an object-store URL).
    #[arg(long)]
    pub geo_db: Option<PathBuf>,
    /// A named IP watchlist: NAME=FILE.csv, the file a path or an object-store URL (repeatable).
    #[arg(long, value_parser = parse_watchlist)]
    pub watchlist: Vec<(String, PathBuf)>,
}

impl FunctionArgs {
    /// The functions' configuration; files named by object-store URLs are fetched (once per
    /// version: `lake::fetch`).
    pub fn udf_config(&self) -> anyhow::Result<wisp_udfs::UdfConfig> {
        use crate::lake::fetch::local_copy;
        let copy = |p: &Option<PathBuf>| p.as_deref().map(local_copy).transpose();
        let mut watchlists = Vec::new();
        for (name, p) in &self.watchlist {
            watchlists.push((name.clone(), local_copy(p)?));
        }
        Ok(wisp_udfs::UdfConfig { asn_db: copy(&self.asn_db)?, geo_db: copy(&self.geo_db)?, watchlists })
    }
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

/// Time flags, all UTC (RFC 3339, e.g. 2026-11-20T12:00:00Z; durations like 65m, 1h, 30d).
#[derive(Debug, Args, Clone, Default)]
pub struct TimeArgs {
    /// The scheduled run (or window) ending at this time.
    #[arg(long)]
    pub at: Option<String>,
    /// Start of a range (with --to): a backtest, or a hunt's window.
    #[arg(long)]
    pub from: Option<String>,
    /// End of a range (with --from).
    #[arg(long)]
    pub to: Option<String>,
    /// A range over the last duration (e.g. 30d), ending now.
    #[arg(long)]
    pub last: Option<String>,
}

impl TimeArgs {
    pub fn flags(&self) -> crate::detect::TimeFlags {
        crate::detect::TimeFlags {
            at: self.at.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            last: self.last.clone(),
        }
    }
}

fn parse_watchlist(s: &str) -> Result<(String, PathBuf), String> {
    let (n, p) = s.split_once('=').ok_or_else(|| format!("expected NAME=FILE.csv, got '{s}'"))?;
    Ok((n.to_string(), PathBuf::from(p)))
}

impl LakeArgs {
    /// The session's options; databases and watchlists named by object-store URLs are fetched
    /// (once per version: `lake::fetch`).
    pub fn session_options(&self) -> anyhow::Result<crate::session::SessionOptions> {
        if self.engine != "local" {
            #[cfg(feature = "cluster")]
            crate::cluster::scheduler_url(&self.engine)?;
            #[cfg(not(feature = "cluster"))]
            anyhow::bail!("--engine {}: this wisp was built without the `cluster` feature", self.engine);
        }
        Ok(crate::session::SessionOptions {
            udfs: self.functions.udf_config()?,
            memory_limit: self.memory_mb << 20,
            engine: (self.engine != "local").then(|| self.engine.clone()),
            ..Default::default()
        })
    }

    /// Opens the existing lake (never creates one) and a session over it.
    pub async fn open(&self) -> anyhow::Result<(Lake, datafusion::prelude::SessionContext)> {
        self.open_with(self.session_options()?).await
    }

    /// [`LakeArgs::open`] for running these rules only: the session registers just the views
    /// their SQL names.
    pub async fn open_for(
        &self,
        rules: &[&crate::rules::Rule],
    ) -> anyhow::Result<(Lake, datafusion::prelude::SessionContext)> {
        self.open_with(self.session_options()?.for_sql(rules.iter().flat_map(|r| r.texts()))).await
    }

    async fn open_with(
        &self,
        opts: crate::session::SessionOptions,
    ) -> anyhow::Result<(Lake, datafusion::prelude::SessionContext)> {
        let lake = Lake::open_existing(&self.lake)?;
        let ctx = crate::session::open(&lake, &opts).await?;
        Ok((lake, ctx))
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

/// An error and its causes on one line, each cause only when its text is not already there
/// (object-store errors repeat their sources' text in their own).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let t = c.to_string();
        if !out.contains(&t) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&t);
        }
    }
    out
}

/// True when an error comes from writing to a reader that went away (`wisp … | head -1`): not a
/// failure, as ripgrep and xsv treat it.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.to_string().contains("Broken pipe (os error 32)")
    })
}

/// Parses the command line: `--help` and `--version` print and exit 0; usage errors exit 1 (code 2
/// is reserved for unreadable inputs).
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Ingest(a) => ingest::run(a).await,
        Command::Sql(a) => sql::run(a).await,
        Command::Demo(a) => demo::run(a).await,
        Command::Detect(a) => detect::run(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Explain(a) => explain::run(a).await,
        Command::Rules(a) => rules::run(a).await,
        Command::Hunt(a) => hunt::run(a).await,
        Command::Pivot(a) => pivot::run(a).await,
        Command::Shell(a) => shell::run(a).await,
        Command::Gen(a) => gen::run(a).await,
        Command::Compact(a) => compact::run(a).await,
        #[cfg(feature = "cluster")]
        Command::Cluster(a) => cluster::run(a).await,
    }
}
