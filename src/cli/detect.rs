use super::{LakeArgs, OutArgs, EXIT_ERROR, EXIT_OK};
use crate::lake::Lake;
use crate::rules::{self, alerts};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Time flags, all UTC.
#[derive(Debug, Args, Clone)]
pub struct TimeArgs {
    /// Run each rule as its scheduled run ending at this time (RFC 3339, UTC).
    #[arg(long, conflicts_with_all = ["from", "last"])]
    pub at: Option<String>,
    /// Backtest: every scheduled run ending in [from, to].
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    /// Backtest over the last duration (e.g. 30d), ending now.
    #[arg(long, conflicts_with = "from")]
    pub last: Option<String>,
}

/// Parses a UTC time flag.
pub(crate) fn time(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    let us = crate::ingest::normalize::parse_time(s)
        .ok_or_else(|| anyhow::anyhow!("bad time '{s}': use RFC 3339 UTC, e.g. 2026-11-20T12:00:00Z"))?;
    chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| anyhow::anyhow!("time out of range: {s}"))
}

#[derive(Debug, Args)]
pub struct DetectArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Rule ids to run (default: all detections, not hunts).
    #[arg(long = "rule")]
    pub rules: Vec<String>,
    /// Folder of extra or overriding rule files.
    #[arg(long)]
    pub rules_dir: Option<PathBuf>,
    /// Override every rule's max_alerts per run.
    #[arg(long)]
    pub max_alerts: Option<usize>,
    /// Keep first-seen state in the lake (`_state/<rule>/`) for new_terms rules: a scheduled run
    /// (--at, or now) then reads its window and the state instead of the whole history window.
    /// Same alerts as without it.
    #[arg(long)]
    pub state: bool,
    #[command(flatten)]
    pub time: TimeArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

pub async fn detect(a: DetectArgs) -> anyhow::Result<i32> {
    let all = rules::load_all(a.rules_dir.as_deref())?;
    let selected: Vec<_> = if a.rules.is_empty() {
        all.into_iter().filter(|r| r.meta.rule_type != rules::RuleType::Hunt).collect()
    } else {
        a.rules
            .iter()
            .map(|id| {
                all.iter().find(|r| &r.meta.id == id).cloned().ok_or_else(|| rules::RuleError::Unknown(id.clone()))
            })
            .collect::<Result<_, _>>()?
    };
    let mut selected = selected;
    if let Some(m) = a.max_alerts {
        for r in &mut selected {
            r.meta.max_alerts = m;
        }
    }
    let lake = Lake::open(&a.lake.lake)?;
    let ctx = crate::session::open(&lake, &a.lake.session_options()).await?;
    let now = chrono::Utc::now();
    let mut out_alerts = Vec::new();
    if a.state && a.time.at.is_none() && (a.time.from.is_some() || a.time.last.is_some()) {
        eprintln!("note: --state applies to single scheduled runs (--at, or now); a backtest reads the history itself");
    }
    for r in &selected {
        let started = std::time::Instant::now();
        // A single scheduled run (--at, or now), or a backtest over a range.
        let single = match (&a.time.at, &a.time.from, &a.time.last) {
            (Some(at), _, _) => Some(r.window_ending(time(at)?)?),
            (None, None, None) => Some(r.window_ending(now)?),
            _ => None,
        };
        let res = match (single, &a.time.from, &a.time.last) {
            (Some(w), _, _) if a.state => {
                let s = crate::state::run(&ctx, &lake, r, &w, now).await?;
                if r.terms_sql.is_some() {
                    eprintln!("{}: first-seen state {:?}, {} term(s)", r.meta.id, s.used, s.terms);
                }
                s.result
            }
            (Some(w), _, _) => alerts::run(&ctx, r, &w, now).await?,
            (None, Some(from), _) => {
                let to = time(a.time.to.as_deref().unwrap_or_default())?;
                alerts::backtest(&ctx, r, time(from)?, to, now).await?
            }
            (None, _, last) => {
                let last = last.as_deref().expect("no --at and no --from: --last");
                alerts::backtest(&ctx, r, now - rules::parse_duration(last)?, now, now).await?
            }
        };
        if res.cut > 0 {
            eprintln!("{}: {} alert(s) past max_alerts = {} were cut", r.meta.id, res.cut, r.meta.max_alerts);
        }
        eprintln!(
            "{}: {} alert(s), {} in {:.3}s",
            r.meta.id,
            res.alerts.len(),
            res.scan,
            started.elapsed().as_secs_f64()
        );
        out_alerts.extend(res.alerts);
    }
    let batch = alerts::to_batch(&out_alerts)?;
    let (out, tty) = a.out.sink()?;
    crate::output::write_batches(&[batch], alerts::alerts_schema(), a.out.format, out, tty)?;
    Ok(EXIT_OK)
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub cmd: RulesCmd,
    /// Folder of extra or overriding rule files.
    #[arg(long, global = true)]
    pub rules_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// One line per rule.
    List,
    /// A rule's header and SQL.
    Show { id: String },
    /// Plan every rule against the lake schema (no data needed).
    Lint {
        #[arg(long, default_value = ".wisp-lint-lake")]
        lake: String,
    },
}

pub async fn rules_cmd(a: RulesArgs) -> anyhow::Result<i32> {
    let all = rules::load_all(a.rules_dir.as_deref())?;
    match a.cmd {
        RulesCmd::List => {
            for r in &all {
                println!(
                    "{:<40} {:<10} {:<8} {:>3}  every {:<4} {}",
                    r.meta.id,
                    format!("{:?}", r.meta.rule_type).to_lowercase(),
                    r.meta.severity,
                    r.meta.risk_score,
                    r.meta.interval,
                    r.meta.name
                );
            }
            Ok(EXIT_OK)
        }
        RulesCmd::Show { id } => {
            let r = all.iter().find(|r| r.meta.id == id).ok_or(rules::RuleError::Unknown(id))?;
            println!("{}\n\n{}", serde_json::to_string_pretty(&r.meta)?, r.sql);
            Ok(EXIT_OK)
        }
        RulesCmd::Lint { lake } => {
            let tmp = std::env::temp_dir().join(format!("wisp-lint-{}", std::process::id()));
            let dir = if lake == ".wisp-lint-lake" { tmp.display().to_string() } else { lake };
            let l = Lake::open(&dir)?;
            let ctx = crate::session::open(&l, &Default::default()).await?;
            let mut bad = 0;
            for (id, res) in rules::lint(&ctx, &all).await {
                match res {
                    Ok(()) => eprintln!("ok    {id}"),
                    Err(e) => {
                        bad += 1;
                        eprintln!("FAIL  {e}");
                    }
                }
            }
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(if bad == 0 { EXIT_OK } else { EXIT_ERROR })
        }
    }
}
