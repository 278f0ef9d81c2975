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
    std::process::exit(code);
}
