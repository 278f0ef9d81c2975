#![allow(dead_code)]
use std::path::PathBuf;
use wisp::ingest::{ingest, IngestOptions, Summary};
use wisp::lake::Lake;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/fixtures`, or `None` with a clear message when the folder is missing.
pub fn fixtures() -> Option<PathBuf> {
    let p = repo().join("../shared/fixtures");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIPPED: ../shared/fixtures is missing (expected beside the checkout at {}); this conformance test needs it", p.display());
        None
    }
}

/// A fresh folder for one test, under this test process's own folder `wisp-test-<pid>` in the
/// temporary directory. Folders are not removed as each test ends (a failed test's files stay to be
/// looked at); instead the first call in a process removes the folders of test processes that are
/// no longer running (this one's and the older `wisp-test-<name>-<pid>-<nanos>` layout), so runs do
/// not pile up in the temporary directory.
pub fn tmp(name: &str) -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let root = ROOT.get_or_init(|| {
        sweep_dead_test_dirs();
        std::env::temp_dir().join(format!("wisp-test-{}", std::process::id()))
    });
    let p = root.join(format!("{name}-{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Removes `wisp-test-…` folders of test processes that have ended (Linux: no `/proc/<pid>`).
fn sweep_dead_test_dirs() {
    if !std::path::Path::new("/proc/self").exists() {
        return;
    }
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("wisp-test-") else { continue };
        let parts: Vec<&str> = rest.split('-').collect();
        // `wisp-test-<pid>`, or the older `wisp-test-<name>-<pid>-<nanos>`.
        let pid = match parts.as_slice() {
            [pid] => pid.parse::<u32>().ok(),
            [.., pid, nanos] if nanos.parse::<u64>().is_ok() => pid.parse::<u32>().ok(),
            _ => None,
        };
        if let Some(pid) = pid {
            if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

pub fn opts(inputs: Vec<String>) -> IngestOptions {
    IngestOptions::new(inputs)
}

pub async fn ingest_into(lake_dir: &std::path::Path, o: IngestOptions) -> Summary {
    let lake = Lake::open(&lake_dir.display().to_string()).unwrap();
    let s = ingest(&lake, &o).await.unwrap();
    assert!(s.balanced(), "read != written + rejected + duplicates: {s:?}");
    s
}

pub async fn query(lake_dir: &std::path::Path, sql: &str) -> Vec<arrow::array::RecordBatch> {
    let lake = Lake::open(&lake_dir.display().to_string()).unwrap();
    let ctx = wisp::session::open(&lake, &Default::default()).await.unwrap();
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

pub async fn query_text(lake_dir: &std::path::Path, sql: &str) -> String {
    let b = query(lake_dir, sql).await;
    arrow::util::pretty::pretty_format_batches(&b).unwrap().to_string()
}

/// Whether `strace` is installed and may trace here. Tests that kill wisp at an exact system call
/// need it; without it they say SKIPPED, unless `WISP_REQUIRE_STRACE` is set (`.ci/run` installs
/// strace and sets it), where its absence fails the test.
pub fn strace_available() -> bool {
    let ok = std::process::Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("WISP_REQUIRE_STRACE").is_none(),
            "WISP_REQUIRE_STRACE is set but `strace -f true` fails: install strace (apt-get install strace)"
        );
        eprintln!("SKIPPED: strace is missing or may not trace here; this test kills wisp at exact system calls with it (apt-get install strace)");
    }
    ok
}

/// A command that runs the wisp binary under strace and SIGKILLs it (every thread) on entry to a
/// `syscall` (the call does not happen): the `when`-th one touching `path` (an exact path; strace's
/// `-P`), or without a path the first time any thread makes its `when`-th such call.
pub fn wisp_killed_at(path: Option<&std::path::Path>, syscall: &str, when: u32) -> std::process::Command {
    let mut c = std::process::Command::new("strace");
    c.args(["-f", "-o", "/dev/null"]);
    if let Some(p) = path {
        c.arg("-P").arg(p);
    }
    c.arg(format!("-etrace={syscall}"))
        .arg(format!("-einject={syscall}:signal=SIGKILL:when={when}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_wisp"));
    c
}

/// Every file under `dir`, as paths relative to it.
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    fn walk(d: &std::path::Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out)
            } else {
                out.push(e.path())
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.iter().map(|f| f.strip_prefix(dir).unwrap().display().to_string()).collect()
}

/// The wisp binary under test.
pub fn wisp() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_wisp"))
}

/// Runs a command to its end: exit code, stdout, stderr.
pub fn run(cmd: &mut std::process::Command) -> (i32, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// A loopback port free now and never handed out before in this process (tests start servers
/// concurrently; two `bind(0)`s in a row may return the same port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap();
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

// Emulators (moto_server, azurite) for the object-store tests: SKIPPED when missing unless
// WISP_REQUIRE_EMULATORS is set (`.ci/run` installs them and sets it).

/// A child process killed when dropped.
pub struct Emulator(pub std::process::Child, pub std::path::PathBuf);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_file(&self.1);
    }
}

pub fn available(program: &str, install: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    required(ok, program, install)
}

/// `ok`, or (when `what` is missing) SKIPPED — a failure when WISP_REQUIRE_EMULATORS is set.
pub fn required(ok: bool, what: &str, install: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os("WISP_REQUIRE_EMULATORS").is_none(),
            "WISP_REQUIRE_EMULATORS is set but {what} is missing: {install}"
        );
        eprintln!("SKIPPED: {what} is missing ({install}); this test needs it");
    }
    ok
}

/// One HTTP request to the emulator; its response, or why there was none.
pub fn http(port: u16, request: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    s.write_all(request.as_bytes())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp)
}

/// Starts an emulator and waits until it answers HTTP on `port` (a bare TCP connect can succeed
/// on something else: a port just freed may connect to itself). Its output goes to a log file that
/// a failure prints.
pub fn start(cmd: &mut std::process::Command, port: u16) -> Emulator {
    let log = std::env::temp_dir().join(format!("wisp-emulator-{}-{port}.log", std::process::id()));
    let out = std::fs::File::create(&log).unwrap();
    let child = cmd.stdout(out.try_clone().unwrap()).stderr(out).spawn().unwrap();
    let mut e = Emulator(child, log.clone());
    let t0 = std::time::Instant::now();
    let probe = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    loop {
        match http(port, &probe) {
            Ok(resp) if resp.starts_with("HTTP/1.") => break,
            _ => {}
        }
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(status) = e.0.try_wait().unwrap() {
            panic!("the emulator exited ({status}) before answering on {port}:\n{}", text());
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(90),
            "the emulator did not answer HTTP on {port} within 90 s:\n{}",
            text()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    e
}
