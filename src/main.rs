/// Ingest and queries allocate many short-lived strings and buffers; mimalloc measured faster than
/// the system allocator on them (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in the mimalloc (v3) that libmimalloc-sys builds: how long freed memory
/// stays mapped before it is returned to the system (1000 ms by default). The test below checks
/// the index against that default.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// For the commands that write a lake (ingest, gen): freed memory stays mapped instead of going
/// back to the system after mimalloc's 1 s delay. They free and reallocate buffers of tens of MB
/// every few hundred ms, and each return to the system made the kernel zero the same pages again
/// (on a medium day: 5-10% of the wall time, a third of the system time; BENCHMARKS.md). Peak
/// RSS rises a little (about 60 MB there); the other commands keep the default.
/// `MIMALLOC_PURGE_DELAY` still wins.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain option store in the allocator this binary links.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[tokio::main]
async fn main() {
    let cli = wisp::cli::parse();
    if matches!(cli.command, wisp::cli::Command::Ingest(_) | wisp::cli::Command::Gen(_)) {
        tune_allocator();
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_is_the_option_tuned() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: a plain option read.
        assert_eq!(
            unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DELAY) },
            1000,
            "mimalloc's option order changed"
        );
        super::tune_allocator();
        assert_eq!(unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DELAY) }, -1);
    }
}
