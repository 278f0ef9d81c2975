/// Ingest and queries allocate many short-lived strings and buffers; mimalloc measured faster than
/// the system allocator on them (BENCHMARKS.md). It is mimalloc v2 (Cargo.toml says why), wrapped
/// to count live heap bytes when `WISP_MEMORY_TRACE` asks (`wisp::memory`).
#[global_allocator]
static GLOBAL: wisp::memory::Counting<mimalloc::MiMalloc> = wisp::memory::Counting(mimalloc::MiMalloc);

unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in the mimalloc (v2) that libmimalloc-sys builds: how long freed memory
/// stays mapped before it is returned to the system (10 ms by default, times 10 for arenas). The
/// test below checks the index against that default.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Sets mimalloc's purge delay for the command, unless `MIMALLOC_PURGE_DELAY` is set.
///
/// The commands that write a lake (ingest, gen) and those that run many rules in one process
/// (run, detect) purge after 100 ms (1 s for arenas); single queries (sql, hunt, pivot, shell)
/// keep v2's default (10 ms). What decided the peak RSS of a 30-day catch-up of every rule on the
/// large profile was the allocator's version, not the delay: at most 1.9 GiB live on the heap,
/// 3.4-5.9 GiB RSS under mimalloc v3 (its 1 s default, 100 ms, 10 ms or 0 alike), 2.8-3.2 GiB
/// under v2 with 100 ms in 106-114 s, 2.9 GiB with v2's 10 ms in 134 s. Ingest and gen used to
/// never purge (under v3, returning memory made the kernel zero the same pages again, 5-10% of
/// the wall time); under v2 a medium day ingests as fast with 100 ms, and never purging let
/// `gen --profile large --days 30` reach 4.3 GiB in its compaction with 1.2 GiB live
/// (BENCHMARKS.md, issue 16).
fn tune_allocator(purge_delay_ms: std::ffi::c_long) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain option store in the allocator this binary links.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, purge_delay_ms) };
    }
}

/// `mi_option_allow_thp` in the same mimalloc (on by default; the test below checks the index).
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 37;

/// No transparent huge pages for the rest of the process, unless `MIMALLOC_ALLOW_THP` is set.
///
/// mimalloc asks the kernel for transparent huge pages for its segments (`madvise`), so a buffer
/// touched for the first time costs a whole 2 MiB page zeroed at once — again and again as a
/// command builds and frees buffers of megabytes (an ingest's columns, sorted slices and encoded
/// pages; a long scan's batches, hash tables and spills). A profile of a medium day's ingest put
/// 13% of its CPU in that zeroing (`clear_page_erms`), 0.7% with 4 KiB pages. Measured without
/// them (binaries alternated, medians; BENCHMARKS.md, issue 16): a medium day's ingest 16-21% less
/// CPU; 30-day hunts on medium 25-40% faster (rare action 1.79 -> 1.06 s, token replay 8.4 ->
/// 6.0 s) and the ASN rule's 30-day backtest 4.7 -> 3.3 s, with lower peak RSS; a one-hour
/// window the same. So every command turns them off: mimalloc's option (it then asks no more), and
/// `PR_SET_THP_DISABLE`, which keeps the kernel from using them unasked where the system's setting
/// is `always`.
fn no_huge_pages() {
    // Read without allocating: this runs before the first allocation of the process.
    // SAFETY: a NUL-terminated name; the environment is set up before constructors run.
    if !unsafe { libc::getenv(c"MIMALLOC_ALLOW_THP".as_ptr()) }.is_null() {
        return;
    }
    // SAFETY: a plain option store in the allocator this binary links.
    unsafe { mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// `no_huge_pages` as a constructor of the executable (and of its unit-test binary), run by the
/// dynamic loader before Rust's runtime starts: the runtime's first allocation (in `lang_start`,
/// before `main`) took mimalloc's first segment, and with it a huge page zeroed whole — 2.7 ms of
/// every command's CPU (`do_huge_pmd_anonymous_page` under `lang_start_internal` in a profile of
/// one-hour hunts; BENCHMARKS.md, issue 16). So does `#[tokio::main]`'s runtime, whose worker
/// threads started before the first line of `main`: `main` builds the runtime itself.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static NO_HUGE_PAGES: extern "C" fn() = {
    extern "C" fn before_main() {
        no_huge_pages();
    }
    before_main
};

/// zstd contexts kept for reuse. Each column chunk Parquet reads or writes gets a new zstd codec,
/// and the parquet crate's codec creates a compression and a decompression context, each of which
/// asks the CPU whether it has BMI2 (`cpuid`, three times). In a virtual machine `cpuid` exits to
/// the hypervisor: 4.2 us each on this project's 2-core machine kind, so about 25 us per column
/// chunk, the two creations 8% of the scan threads' CPU in a profile of one-hour Key Vault hunts
/// (`ZSTD_createCCtx`, `ZSTD_createDCtx`; BENCHMARKS.md, issue 16). The linker routes zstd's
/// create and free calls here (`--wrap`, build.rs): a freed context is reset to its state as
/// created (`ZSTD_reset_session_and_parameters`: parameters, dictionary and stream state) and
/// kept, up to `KEEP` of each kind; a create takes a kept one when there is one. A context that
/// grew past `KEEP_BYTES` (a stream's window buffers, a large compression workspace) is freed.
/// Every context the Rust side makes comes from `ZSTD_createCCtx`/`ZSTD_createDCtx` (zstd-safe's
/// `create`), none from a static workspace. `ZSTD_compress2` (how the parquet crate compresses a
/// page) is routed here too: a level-1 context is given a smaller match table and a longer search
/// step (`FAST_HASH_LOG`, `FAST_TARGET_LENGTH`).
#[cfg(target_os = "linux")]
mod zstd_contexts {
    use std::ffi::{c_int, c_uint, c_void};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    /// Contexts kept of each kind: a few per thread that reads or writes Parquet.
    const KEEP: usize = 16;
    /// Contexts larger than this are freed.
    const KEEP_BYTES: usize = 4 << 20;
    /// `ZSTD_reset_session_and_parameters` (zstd.h).
    const RESET_ALL: c_int = 3;

    /// Kept contexts, as addresses.
    static DCTX: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    static CCTX: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    /// Creations served from the kept ones (read by the tests).
    pub static REUSED: AtomicU64 = AtomicU64::new(0);
    /// Level-1 compressions given the parameters below (read by the tests).
    pub static TUNED: AtomicU64 = AtomicU64::new(0);

    /// `ZSTD_c_compressionLevel`, `ZSTD_c_hashLog`, `ZSTD_c_targetLength` and
    /// `ZSTD_c_literalCompressionMode` (`ZSTD_c_experimentalParam5`) with `ZSTD_ps_enable` (zstd.h).
    const C_COMPRESSION_LEVEL: c_int = 100;
    const C_HASH_LOG: c_int = 102;
    const C_TARGET_LENGTH: c_int = 106;
    const C_LITERAL_COMPRESSION_MODE: c_int = 1002;
    const PS_ENABLE: c_int = 1;
    /// Level 1 as an ingest's files and the rollups are compressed (`wisp compact` writes level 3,
    /// untouched): a match table of 2^13 entries (32 KB) where the level's own is 2^14 for a page
    /// past 256 KB, and the fast strategy's search stepping 3 positions where the level steps 2
    /// (`targetLength` 2, its "acceleration"), literals still Huffman-coded (zstd turns that off
    /// for a fast strategy with a `targetLength`, as for its negative levels). The medium day's
    /// ingest against the level's own parameters: 5,678 -> 5,458 CPU-ms for a table of 2^12
    /// (sixty-second session), then 2^13 with the longer step as fast again (5,317 -> 5,277 and
    /// 5,333 -> 5,321 ms, medians of 11 and 9 alternated release runs) with files 2.4% smaller
    /// than 2^12's (186.1 -> 181.5 MB; the level's own 179.3). The SP sign-ins' records in time
    /// order in 1 MB pages: 1.30 -> 1.46 GB/s at ratio 11.47 -> 11.26 (BENCHMARKS.md, issue 16).
    const FAST_HASH_LOG: c_int = 13;
    const FAST_TARGET_LENGTH: c_int = 2;

    unsafe extern "C" {
        fn __real_ZSTD_createDCtx() -> *mut c_void;
        fn __real_ZSTD_freeDCtx(dctx: *mut c_void) -> usize;
        fn __real_ZSTD_createCCtx() -> *mut c_void;
        fn __real_ZSTD_freeCCtx(cctx: *mut c_void) -> usize;
        fn ZSTD_DCtx_reset(dctx: *mut c_void, reset: c_int) -> usize;
        fn ZSTD_CCtx_reset(cctx: *mut c_void, reset: c_int) -> usize;
        fn ZSTD_sizeof_DCtx(dctx: *const c_void) -> usize;
        fn ZSTD_sizeof_CCtx(cctx: *const c_void) -> usize;
        fn ZSTD_isError(code: usize) -> c_uint;
        fn __real_ZSTD_compress2(
            cctx: *mut c_void,
            dst: *mut c_void,
            dst_capacity: usize,
            src: *const c_void,
            src_size: usize,
        ) -> usize;
        fn ZSTD_CCtx_getParameter(cctx: *const c_void, param: c_int, value: *mut c_int) -> usize;
        fn ZSTD_CCtx_setParameter(cctx: *mut c_void, param: c_int, value: c_int) -> usize;
    }

    fn take(pool: &Mutex<Vec<usize>>) -> Option<*mut c_void> {
        let p = pool.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        REUSED.fetch_add(1, Ordering::Relaxed);
        Some(p as *mut c_void)
    }

    /// Keeps `ctx` when there is room; false when it must be freed.
    fn keep(pool: &Mutex<Vec<usize>>, ctx: *mut c_void) -> bool {
        let mut kept = pool.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= KEEP {
            return false;
        }
        kept.push(ctx as usize);
        true
    }

    /// Gives up a context: reset and kept when it can be (zstd accepts NULL: freed, as is any
    /// context that does not reset, is too large or finds no room), else freed.
    ///
    /// # Safety
    /// `ctx` is NULL or a live context of the kind the functions take, not used afterwards.
    unsafe fn release(
        pool: &Mutex<Vec<usize>>,
        ctx: *mut c_void,
        reset: unsafe extern "C" fn(*mut c_void, c_int) -> usize,
        size: unsafe extern "C" fn(*const c_void) -> usize,
        free: unsafe extern "C" fn(*mut c_void) -> usize,
    ) -> usize {
        if !ctx.is_null() && ZSTD_isError(reset(ctx, RESET_ALL)) == 0 && size(ctx) <= KEEP_BYTES && keep(pool, ctx) {
            return 0;
        }
        free(ctx)
    }

    #[no_mangle]
    extern "C" fn __wrap_ZSTD_createDCtx() -> *mut c_void {
        // SAFETY: zstd's own constructor.
        take(&DCTX).unwrap_or_else(|| unsafe { __real_ZSTD_createDCtx() })
    }

    #[no_mangle]
    extern "C" fn __wrap_ZSTD_freeDCtx(dctx: *mut c_void) -> usize {
        // SAFETY: `dctx` is a live context its owner gives up, and these are zstd's functions of it.
        unsafe { release(&DCTX, dctx, ZSTD_DCtx_reset, ZSTD_sizeof_DCtx, __real_ZSTD_freeDCtx) }
    }

    #[no_mangle]
    extern "C" fn __wrap_ZSTD_createCCtx() -> *mut c_void {
        // SAFETY: zstd's own constructor.
        take(&CCTX).unwrap_or_else(|| unsafe { __real_ZSTD_createCCtx() })
    }

    #[no_mangle]
    extern "C" fn __wrap_ZSTD_freeCCtx(cctx: *mut c_void) -> usize {
        // SAFETY: as for `__wrap_ZSTD_freeDCtx`.
        unsafe { release(&CCTX, cctx, ZSTD_CCtx_reset, ZSTD_sizeof_CCtx, __real_ZSTD_freeCCtx) }
    }

    /// Compresses as `ZSTD_compress2`, a level-1 context with a match table of 2^`FAST_HASH_LOG`
    /// entries and a search step of `FAST_TARGET_LENGTH` + 1, literals Huffman-coded (the parquet
    /// crate compresses every page through it). The parameters are set on the context and stay
    /// until it is reset: a context whose level is changed afterwards without a reset keeps them
    /// (the parquet crate's codecs are made for one level each, and a context kept for reuse is
    /// reset with its parameters).
    ///
    /// # Safety
    /// As `ZSTD_compress2`'s: a live context, and buffers of the sizes given.
    #[no_mangle]
    unsafe extern "C" fn __wrap_ZSTD_compress2(
        cctx: *mut c_void,
        dst: *mut c_void,
        dst_capacity: usize,
        src: *const c_void,
        src_size: usize,
    ) -> usize {
        let mut level: c_int = 0;
        // SAFETY: `cctx` is live (the caller's contract); the parameter is zstd's, valid at any
        // time, and a failed call leaves the context as it was.
        unsafe {
            if ZSTD_isError(ZSTD_CCtx_getParameter(cctx, C_COMPRESSION_LEVEL, &mut level)) == 0
                && level == 1
                && ZSTD_isError(ZSTD_CCtx_setParameter(cctx, C_HASH_LOG, FAST_HASH_LOG)) == 0
                && ZSTD_isError(ZSTD_CCtx_setParameter(cctx, C_LITERAL_COMPRESSION_MODE, PS_ENABLE)) == 0
                && ZSTD_isError(ZSTD_CCtx_setParameter(cctx, C_TARGET_LENGTH, FAST_TARGET_LENGTH)) == 0
            {
                TUNED.fetch_add(1, Ordering::Relaxed);
            }
            __real_ZSTD_compress2(cctx, dst, dst_capacity, src, src_size)
        }
    }
}

fn main() {
    // Huge pages are off already (`NO_HUGE_PAGES`, a constructor) where the loader runs
    // constructors; elsewhere before the runtime starts its threads.
    #[cfg(not(target_os = "linux"))]
    no_huge_pages();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(wisp::cli::EXIT_ERROR);
        }
    };
    // `run` ends the process itself (`std::process::exit`): dropping the runtime would wait for
    // any blocking task still running.
    runtime.block_on(run())
}

async fn run() {
    let cli = wisp::cli::parse();
    use wisp::cli::Command;
    match cli.command {
        Command::Ingest(_) | Command::Gen(_) | Command::Run(_) | Command::Detect(_) => tune_allocator(100),
        _ => {}
    }
    // `WISP_MEMORY_TRACE=FILE`: sample memory while the command runs (`wisp::memory`).
    let watch = match std::env::var_os("WISP_MEMORY_TRACE") {
        Some(path) if !path.is_empty() => {
            wisp::memory::count_heap();
            match wisp::memory::Watch::start(std::path::Path::new(&path), std::time::Duration::from_millis(100)) {
                Ok(w) => Some(w),
                Err(e) => {
                    eprintln!("error: WISP_MEMORY_TRACE={}: {e}", std::path::Path::new(&path).display());
                    std::process::exit(wisp::cli::EXIT_ERROR);
                }
            }
        }
        _ => None,
    };
    let code = match wisp::cli::run(cli).await {
        Ok(code) => code,
        Err(e) if wisp::cli::is_broken_pipe(&e) => wisp::cli::EXIT_OK,
        Err(e) => {
            eprintln!("error: {}", wisp::cli::error_text(&e));
            wisp::cli::EXIT_ERROR
        }
    };
    if let Some(w) = watch {
        let path = w.path().to_path_buf();
        match w.finish() {
            Ok(peak) => eprintln!("{}", wisp::memory::summary(&peak, &path)),
            Err(e) => eprintln!("warning: the memory trace {}: {e}", path.display()),
        }
    }
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
            10,
            "mimalloc's option order or version changed"
        );
        super::tune_allocator(100);
        assert_eq!(unsafe { super::mi_option_get(super::MI_OPTION_PURGE_DELAY) }, 100);
    }

    /// Parquet's zstd codecs come from the kept contexts once some were freed (the link routes
    /// zstd's calls through `zstd_contexts`), and reused contexts compress and decompress as new
    /// ones: files written at two levels with reused contexts read back the same.
    #[cfg(target_os = "linux")]
    #[test]
    fn zstd_contexts_are_reused() {
        use arrow::array::{Int64Array, RecordBatch, StringArray};
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from_iter_values(0..10_000)) as arrow::array::ArrayRef),
            ("s", Arc::new(StringArray::from_iter_values((0..10_000).map(|i| format!("value {}", i % 97))))),
        ])
        .unwrap();
        let write = |level: i32| write_parquet(&batch, level);
        let read = |file: bytes::Bytes| read_parquet(file, &batch);
        let before = super::zstd_contexts::REUSED.load(Ordering::Relaxed);
        let (one, three) = (write(1), write(3));
        assert_eq!(read(one.clone()), batch);
        assert_eq!(read(three.clone()), batch);
        assert!(super::zstd_contexts::REUSED.load(Ordering::Relaxed) > before, "no zstd context was reused");
        // The same bytes as files written again with reused contexts.
        assert_eq!(write(1), one);
        assert_eq!(write(3), three);
    }

    /// Level 1 through `ZSTD_compress2` (the parquet crate's call) takes the smaller match table
    /// and the longer step, literals Huffman-coded: its frame is the one those parameters make
    /// through `ZSTD_compressStream2` (not routed), not the one the level makes on its own
    /// (`ZSTD_compressCCtx`, not routed), and decompresses to the same bytes; level 3 is left as
    /// zstd makes it, and a page compressed with the parquet crate's own codec (`zstd::bulk`) is
    /// routed too.
    #[cfg(target_os = "linux")]
    #[test]
    fn level_one_compresses_with_the_smaller_match_table() {
        use std::ffi::{c_int, c_uint, c_void};
        use std::sync::atomic::Ordering;
        unsafe extern "C" {
            fn ZSTD_createCCtx() -> *mut c_void;
            fn ZSTD_freeCCtx(cctx: *mut c_void) -> usize;
            fn ZSTD_CCtx_setParameter(cctx: *mut c_void, param: c_int, value: c_int) -> usize;
            fn ZSTD_compress2(cctx: *mut c_void, dst: *mut c_void, cap: usize, src: *const c_void, n: usize) -> usize;
            fn ZSTD_compressCCtx(
                cctx: *mut c_void,
                dst: *mut c_void,
                cap: usize,
                src: *const c_void,
                n: usize,
                level: c_int,
            ) -> usize;
            fn ZSTD_compressStream2(cctx: *mut c_void, out: *mut Buf, input: *mut Buf, end: c_int) -> usize;
            fn ZSTD_decompress(dst: *mut c_void, cap: usize, src: *const c_void, n: usize) -> usize;
            fn ZSTD_compressBound(n: usize) -> usize;
            fn ZSTD_isError(code: usize) -> c_uint;
        }
        /// `ZSTD_inBuffer` and `ZSTD_outBuffer` (zstd.h: a pointer, a size and a position).
        #[repr(C)]
        struct Buf {
            ptr: *mut c_void,
            size: usize,
            pos: usize,
        }
        // About a megabyte of records alike but not equal, as a page of sign-ins' `raw` is.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut src = String::new();
        while src.len() < 1 << 20 {
            let (app, ip, h, n) = (next(300), next(5000), next(24), next(100_000));
            src.push_str(&format!(
                "{{\"time\":\"2026-11-19T{h:02}:{:02}:{:02}.{n:07}Z\",\"appId\":\"{app:08x}-4e1c-9b3a-{app:012x}\",\
                 \"ipAddress\":\"10.{}.{}.7\",\"resultType\":\"{}\",\"correlationId\":\"{:016x}\"}}",
                next(60),
                next(60),
                ip / 256,
                ip % 256,
                if n % 9 == 0 { "7000215" } else { "0" },
                next(u64::MAX),
            ));
        }
        let src = src.as_bytes();
        // Level 1 with these parameters (hash log, literal compression mode, target length),
        // through zstd's streaming call, which is not routed.
        let explicit = |params: &[(c_int, c_int)]| -> Vec<u8> {
            // SAFETY: zstd's functions, a context of its own, buffers of the sizes given.
            unsafe {
                let cctx = ZSTD_createCCtx();
                for &(p, v) in [(100, 1)].iter().chain(params) {
                    assert_eq!(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, p, v)), 0, "parameter {p}");
                }
                let mut out = vec![0u8; ZSTD_compressBound(src.len())];
                let mut o = Buf { ptr: out.as_mut_ptr().cast(), size: out.len(), pos: 0 };
                let mut i = Buf { ptr: src.as_ptr().cast_mut().cast(), size: src.len(), pos: 0 };
                assert_eq!(ZSTD_compressStream2(cctx, &mut o, &mut i, 2), 0, "zstd left output pending");
                assert_eq!(i.pos, src.len());
                ZSTD_freeCCtx(cctx);
                out.truncate(o.pos);
                out
            }
        };
        let compress = |level: c_int, routed: bool| -> Vec<u8> {
            // SAFETY: zstd's functions, a context of its own, buffers of the sizes given.
            unsafe {
                let cctx = ZSTD_createCCtx();
                let mut out = vec![0u8; ZSTD_compressBound(src.len())];
                let (dst, cap, from) = (out.as_mut_ptr().cast(), out.len(), src.as_ptr().cast());
                let n = if routed {
                    assert_eq!(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, 100, level)), 0);
                    ZSTD_compress2(cctx, dst, cap, from, src.len())
                } else {
                    ZSTD_compressCCtx(cctx, dst, cap, from, src.len(), level)
                };
                assert_eq!(ZSTD_isError(n), 0, "zstd failed to compress");
                ZSTD_freeCCtx(cctx);
                out.truncate(n);
                out
            }
        };
        let decompress = |frame: &[u8]| -> Vec<u8> {
            let mut out = vec![0u8; src.len()];
            // SAFETY: as above.
            let n = unsafe { ZSTD_decompress(out.as_mut_ptr().cast(), out.len(), frame.as_ptr().cast(), frame.len()) };
            // SAFETY: a plain function of the code.
            assert_eq!(unsafe { ZSTD_isError(n) }, 0, "zstd failed to decompress");
            out.truncate(n);
            out
        };
        let tuned = &super::zstd_contexts::TUNED;
        let before = tuned.load(Ordering::Relaxed);
        let (one, own) = (compress(1, true), compress(1, false));
        assert!(tuned.load(Ordering::Relaxed) > before, "level 1 was not routed");
        assert_ne!(one, own, "level 1 compressed with the level's own parameters");
        assert_eq!(one, explicit(&[(102, 13), (1002, 1), (106, 2)]), "level 1 not as its parameters make it");
        assert_ne!(one, explicit(&[(102, 13), (106, 2)]), "literals not Huffman-coded");
        assert_eq!(decompress(&one), src);
        assert_eq!(decompress(&own), src);
        assert_eq!(compress(3, true), compress(3, false), "level 3 was changed");
        // The parquet crate's codec: a level-1 file is routed and reads back as written.
        let batch = arrow::array::RecordBatch::try_from_iter([(
            "raw",
            std::sync::Arc::new(arrow::array::StringArray::from_iter_values(
                src.chunks(1000).map(|c| String::from_utf8_lossy(c).into_owned()),
            )) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let before = tuned.load(Ordering::Relaxed);
        let file = write_parquet(&batch, 1);
        assert!(tuned.load(Ordering::Relaxed) > before, "the parquet crate's level-1 pages were not routed");
        assert_eq!(read_parquet(file, &batch), batch);
    }

    /// `batch` as a Parquet file compressed with zstd at `level`, in row groups of 1,000 rows.
    #[cfg(target_os = "linux")]
    fn write_parquet(batch: &arrow::array::RecordBatch, level: i32) -> bytes::Bytes {
        use parquet::basic::{Compression, ZstdLevel};
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(level).unwrap()))
            .set_max_row_group_row_count(Some(1_000))
            .build();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        bytes::Bytes::from(buf)
    }

    /// A Parquet file's rows as one batch of `like`'s schema.
    #[cfg(target_os = "linux")]
    fn read_parquet(file: bytes::Bytes, like: &arrow::array::RecordBatch) -> arrow::array::RecordBatch {
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 4_096).unwrap();
        let batches: Vec<_> = r.map(Result::unwrap).collect();
        arrow::compute::concat_batches(&like.schema(), &batches).unwrap()
    }

    /// The constructor ran before `main` (and before this test harness): the option is off and the
    /// kernel's flag set without any call here.
    #[test]
    fn huge_pages_are_off_before_main() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        // SAFETY: plain option reads.
        assert_eq!(unsafe { super::mi_option_get(super::MI_OPTION_ALLOW_THP) }, 0);
        // The option before it, `generic_collect`, defaults to 10000: the index is `allow_thp`'s.
        assert_eq!(
            unsafe { super::mi_option_get(super::MI_OPTION_ALLOW_THP - 1) },
            10000,
            "mimalloc's option order changed"
        );
        #[cfg(target_os = "linux")]
        // SAFETY: PR_GET_THP_DISABLE reads a flag.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }, 1);
    }
}
