use super::{LakeArgs, EXIT_OK};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  wisp shell --lake ./lake
  wisp shell --lake ./lake --asn-db GeoLite2-ASN.mmdb --watchlist NetworkAllowlist=allow.csv
  echo 'SELECT count(*) FROM signins;' | wisp shell --lake ./lake --format csv")]
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
pub async fn run(a: ShellArgs) -> anyhow::Result<i32> {
    let (lake, ctx) = a.lake.open().await?;
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
        // The rollups' views (and the risk detections' days) name the summaries current now (a
        // compaction may have run since): those the statement names are registered again.
        let only = crate::session::SessionOptions::default().for_sql([sql.as_str()]);
        if let Err(e) = crate::rollups::register(&ctx, &lake, &only).await {
            eprintln!("error: {e}");
            continue;
        }
        if only.wants_view(crate::version_days::NAME) {
            if let Err(e) = crate::version_days::register(&ctx, &lake).await {
                eprintln!("error: {e}");
                continue;
            }
        }
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
