use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = wisp::cli::Cli::parse();
    let code = match wisp::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            wisp::cli::EXIT_ERROR
        }
    };
    std::process::exit(code);
}
