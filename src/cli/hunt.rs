use super::detect::TimeArgs;
use super::{LakeArgs, OutArgs, EXIT_OK};
use crate::lake::Lake;
use crate::rules::{self, RunWindow};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// Resolves `--last` / `--from --to` (and `--at`, as a window ending then) to a window.
pub fn window(t: &TimeArgs, default_last: &str) -> anyhow::Result<RunWindow> {
    let now = chrono::Utc::now();
    let parse = super::detect::time;
    Ok(match (&t.from, &t.to, &t.last, &t.at) {
        (Some(f), Some(to), _, _) => RunWindow { start: parse(f)?, end: parse(to)? },
        (_, _, Some(last), _) => RunWindow { start: now - rules::parse_duration(last)?, end: now },
        (_, _, _, Some(at)) => {
            let end = parse(at)?;
            RunWindow { start: end - rules::parse_duration(default_last)?, end }
        }
        _ => RunWindow { start: now - rules::parse_duration(default_last)?, end: now },
    })
}

#[derive(Debug, Args)]
pub struct HuntArgs {
    /// A rule id or a rule file (.sql with a TOML header).
    pub rule: String,
    #[command(flatten)]
    pub lake: LakeArgs,
    #[command(flatten)]
    pub time: TimeArgs,
    #[command(flatten)]
    pub out: OutArgs,
}

pub async fn hunt(a: HuntArgs) -> anyhow::Result<i32> {
    let rule = if a.rule.ends_with(".sql") || std::path::Path::new(&a.rule).is_file() {
        let text = std::fs::read_to_string(&a.rule).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", a.rule))?;
        rules::Rule::parse(&a.rule, &text)?
    } else {
        rules::load_all(None)?
            .into_iter()
            .find(|r| r.meta.id == a.rule)
            .ok_or(rules::RuleError::Unknown(a.rule.clone()))?
    };
    let w = window(&a.time, "30d")?;
    eprintln!("hunt {} over [{}, {}]", rule.meta.id, w.start.to_rfc3339(), w.end.to_rfc3339());
    let lake = Lake::open(&a.lake.lake)?;
    let ctx = crate::session::open(&lake, &a.lake.session_options()).await?;
    let started = std::time::Instant::now();
    let df = rule.plan(&ctx, &w).await?;
    let (out, tty) = a.out.sink()?;
    let (n, scan) = crate::output::write_df(df, a.out.format, out, tty).await?;
    eprintln!("{n} row(s), {scan} in {:.3}s", started.elapsed().as_secs_f64());
    Ok(EXIT_OK)
}

#[derive(Debug, Args)]
pub struct PivotArgs {
    #[command(subcommand)]
    pub what: PivotWhat,
}

#[derive(Debug, Subcommand)]
pub enum PivotWhat {
    /// A service principal or managed identity: by object id, app id or display name.
    Sp {
        who: String,
        #[command(flatten)]
        lake: LakeArgs,
        #[command(flatten)]
        time: TimeArgs,
        #[command(flatten)]
        out: OutArgs,
    },
}

pub async fn pivot(a: PivotArgs) -> anyhow::Result<i32> {
    let PivotWhat::Sp { who, lake, time, out } = a.what;
    let w = window(&time, "7d")?;
    let l = Lake::open(&lake.lake)?;
    let ctx = crate::session::open(&l, &lake.session_options()).await?;
    let id = crate::pivot::resolve(&ctx, &who).await?;
    eprintln!("pivot on {who}: service principal ids {:?}, app ids {:?}, names {:?}", id.sp_ids, id.app_ids, id.names);
    let df = crate::pivot::timeline(&ctx, &id, w.start, w.end).await?;
    let (sink, tty) = out.sink()?;
    crate::output::write_stream(df.execute_stream().await?, out.format, sink, tty).await?;
    Ok(EXIT_OK)
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Output format of each result.
    #[arg(long, value_enum, default_value_t = crate::output::OutputFormat::Table)]
    pub format: crate::output::OutputFormat,
    /// History file (default: ~/.wisp_history).
    #[arg(long)]
    pub history: Option<PathBuf>,
}

/// An interactive SQL shell: statements end with `;`; `\q` quits; `\d` lists tables.
pub async fn shell(a: ShellArgs) -> anyhow::Result<i32> {
    let lake = Lake::open(&a.lake.lake)?;
    let ctx = crate::session::open(&lake, &a.lake.session_options()).await?;
    let history = a
        .history
        .unwrap_or_else(|| std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".wisp_history"));
    let mut rl = rustyline::DefaultEditor::new()?;
    let _ = rl.load_history(&history);
    eprintln!("wisp shell on {} — end statements with ';', \\d lists tables, \\q quits", lake.url);
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() { "wisp> " } else { "  ... " };
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buf.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let t = line.trim();
        if buf.is_empty() && (t == "\\q" || t == "quit" || t == "exit") {
            break;
        }
        if buf.is_empty() && t == "\\d" {
            buf.push_str("SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1;");
        } else {
            buf.push_str(&line);
            buf.push('\n');
        }
        if !buf.trim_end().ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut buf);
        let _ = rl.add_history_entry(sql.trim());
        let started = std::time::Instant::now();
        match crate::query::read_only_sql(&ctx, &sql).await {
            Ok(df) => match df.execute_stream().await {
                Ok(stream) => {
                    let out = Box::new(std::io::BufWriter::new(std::io::stdout()));
                    match crate::output::write_stream(stream, a.format, out, false).await {
                        Ok(n) => eprintln!("{n} row(s) in {:.3}s", started.elapsed().as_secs_f64()),
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
                Err(e) => eprintln!("error: {e}"),
            },
            Err(e) => eprintln!("error: {e}"),
        }
    }
    let _ = rl.save_history(&history);
    Ok(EXIT_OK)
}
