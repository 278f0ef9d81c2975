/// Ingest and queries allocate many short-lived strings and buffers; mimalloc measured faster than
/// the system allocator on them (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = wisp::cli::parse();
    let code = match wisp::cli::run(cli).await {
        Ok(code) => code,
        Err(e) if wisp::cli::is_broken_pipe(&e) => wisp::cli::EXIT_OK,
        Err(e) => {
            eprintln!("error: {}", wisp::cli::error_text(&e));
            wisp::cli::EXIT_ERROR
        }
    };
    if std::env::var_os("WISP_STORE_STATS").is_some_and(|v| v != "0") {
        if let Some(line) = wisp::lake::metered::STATS.summary() {
            eprintln!("{line}");
        }
    }
    std::process::exit(code);
}
