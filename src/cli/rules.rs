use super::{EXIT_ERROR, EXIT_OK};
use crate::lake::Lake;
use crate::rules;
use clap::{Args, Subcommand};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp rules list
  wisp rules show sp_risk_event_stacking
  wisp rules lint --rules-dir ./my-rules            # plan every rule (yours too) against the lake schema")]
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
        /// Lint against this lake (its watchlists too); default: an empty lake of the same schema.
        #[arg(long)]
        lake: Option<String>,
    },
}

pub async fn run(a: RulesArgs) -> anyhow::Result<i32> {
    let all = rules::load_all(super::rules_dir(&a.rules_dir)?.as_deref())?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.cmd {
        RulesCmd::List => {
            for r in &all {
                writeln!(
                    out,
                    "{:<40} {:<11} {:<8} {:>3}  every {:<4} {}",
                    r.meta.id,
                    serde_json::to_value(r.meta.rule_type)?.as_str().unwrap_or_default(),
                    r.meta.severity,
                    r.meta.risk_score,
                    r.meta.interval,
                    r.meta.name
                )?;
            }
            out.flush()?;
            Ok(EXIT_OK)
        }
        RulesCmd::Show { id } => {
            let r = rules::by_id(&all, &id)?;
            writeln!(out, "{}\n\n{}", serde_json::to_string_pretty(&r.meta)?, r.sql)?;
            out.flush()?;
            Ok(EXIT_OK)
        }
        RulesCmd::Lint { lake } => {
            let tmp = std::env::temp_dir().join(format!("wisp-lint-{}", std::process::id()));
            let l = match &lake {
                Some(l) => Lake::open_existing(l)?,
                None => Lake::open(&tmp.display().to_string())?,
            };
            let result = crate::session::open(&l, &Default::default()).await;
            let mut bad = 0;
            if let Ok(ctx) = &result {
                for (id, res) in rules::lint(ctx, &all).await {
                    match res {
                        Ok(()) => eprintln!("ok    {id}"),
                        Err(e) => {
                            bad += 1;
                            eprintln!("FAIL  {e}");
                        }
                    }
                }
                // Enrichment a rule needs: checked against the lake's data when there is a lake.
                for r in all.iter().filter(|r| !r.meta.requires.is_empty()) {
                    let span = if lake.is_some() { l.day_span() } else { None };
                    match span {
                        Some((first, last)) => {
                            let day = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
                            let to = day(last) + chrono::Duration::days(1);
                            for w in crate::detect::enrichment_warnings(ctx, r, day(first), to).await? {
                                eprintln!("warn  {w}");
                            }
                        }
                        None => eprintln!(
                            "note  {} needs {} enrichment: ingest with --asn-db / --geo-db, or its results change meaning",
                            r.meta.id,
                            r.meta.requires.join(" and ")
                        ),
                    }
                }
            }
            if lake.is_none() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            result?;
            Ok(if bad == 0 { EXIT_OK } else { EXIT_ERROR })
        }
    }
}
