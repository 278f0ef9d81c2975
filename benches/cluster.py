#!/usr/bin/env python3
"""The in-process engine against an Apache Ballista cluster of `wisp cluster` processes on this
machine, on the same lake: time, results, memory per executor, shuffle bytes.

    python3 benches/cluster.py --lake /tmp/wisp-compact-med --from 2026-11-13T00:00:00Z --to 2026-11-20T00:00:00Z

For each engine — local; one executor running 2 tasks at once; two executors running 1 each (the
same two cores) — runs:
  - detect:  every detection's backtest over [--from, --to] (`wisp detect --from --to`),
  - hunt:    `wisp hunt sp_rare_action_multiple_ips` over the same range,
  - sql:     an aggregation over every sign-in of the lake (distinct addresses per principal).
Every command's output must equal the local engine's (alerts compared without their detection
time). Reports wall seconds, the client's max RSS, each executor's peak RSS (VmHWM) and the peak
bytes of shuffle files in the executors' work folders (sampled every 100 ms). Writes
benches/results/cluster-<name>.json and prints a Markdown table. Needs the release binary.
"""
import argparse, json, os, platform, shutil, socket, subprocess, sys, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/wisp-target"))
WISP = os.path.join(TARGET, "release", "wisp")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def du(path):
    total = 0
    for d, _, fs in os.walk(path):
        for f in fs:
            try:
                total += os.path.getsize(os.path.join(d, f))
            except OSError:
                pass
    return total


def hwm(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None


class Cluster:
    def __init__(self, work, executors, tasks, memory_mb):
        self.port = free_port()
        self.procs, self.dirs = [], []
        os.makedirs(work, exist_ok=True)
        self.sched = self.spawn(["cluster", "scheduler", "--bind", f"127.0.0.1:{self.port}"], f"{work}/scheduler.log")
        self.wait(f"{work}/scheduler.log", "listening on")
        for i in range(executors):
            d = f"{work}/executor-{i}"
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            self.dirs.append(d)
            args = ["cluster", "executor", "--scheduler", f"127.0.0.1:{self.port}",
                    "--bind", f"127.0.0.1:{free_port()}", "--grpc-port", str(free_port()),
                    "--concurrent-tasks", str(tasks), "--memory-mb", str(memory_mb), "--work-dir", d]
            self.procs.append(self.spawn(args, f"{work}/executor-{i}.log"))
            self.wait(f"{work}/executor-{i}.log", "Connected to scheduler")
        self.engine = f"ballista://127.0.0.1:{self.port}"

    def spawn(self, args, logfile):
        return subprocess.Popen([WISP] + args, stdout=open(logfile, "w"), stderr=subprocess.STDOUT,
                                env=dict(os.environ, RUST_LOG="info"))

    def wait(self, logfile, text):
        t0 = time.time()
        while text not in open(logfile).read():
            if time.time() - t0 > 60:
                raise SystemExit(f"no '{text}' in {logfile} within 60 s")
            time.sleep(0.1)

    def close(self):
        for p in self.procs + [self.sched]:
            p.kill()
            p.wait()


def run(cmd, cluster):
    """Runs a command; returns (seconds, client max RSS MiB, peak shuffle bytes, stdout)."""
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            if cluster:
                peak[0] = max(peak[0], sum(du(d) for d in cluster.dirs))
            time.sleep(0.1)

    t = threading.Thread(target=sample)
    t.start()
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    stop.set()
    t.join()
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    rss = round(int(p.stderr.strip().splitlines()[-1]) / 1024)
    return round(secs, 2), rss, peak[0], p.stdout


def normalized(name, out):
    if name == "detect":
        rows = []
        for line in out.splitlines():
            j = json.loads(line)
            j.pop("detected_at", None)
            rows.append(json.dumps(j, sort_keys=True))
        return sorted(rows)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--from", dest="start", required=True)
    ap.add_argument("--to", dest="end", required=True)
    ap.add_argument("--work", default="/tmp/wisp-cluster-bench")
    ap.add_argument("--memory-mb", type=int, default=2560, help="per executor (the local pool is the same)")
    ap.add_argument("--name", default="medium")
    ap.add_argument("--commands", default="detect,hunt,sql", help="which of detect, hunt, sql")
    ap.add_argument("--engines", default="local,1x2,2x1", help="local, 1x2 (one executor, 2 tasks), 2x1")
    a = ap.parse_args()
    if not os.path.exists(WISP):
        raise SystemExit(f"{WISP} is missing: cargo build --release")
    commands = {
        "detect": ["detect", "--from", a.start, "--to", a.end, "--format", "jsonl"],
        "hunt": ["hunt", "sp_rare_action_multiple_ips", "--from", a.start, "--to", a.end, "--format", "csv"],
        "sql": ["sql", "--format", "csv",
                "SELECT service_principal_id, count(*) AS n, count(DISTINCT source_ip) AS ips FROM signins "
                "GROUP BY service_principal_id ORDER BY n DESC, service_principal_id LIMIT 100"],
    }
    commands = {k: v for k, v in commands.items() if k in a.commands.split(",")}
    known = {"local": ("local", 0, 0), "1x2": ("1 executor x 2 tasks", 1, 2), "2x1": ("2 executors x 1 task", 2, 1)}
    engines = [known[e] for e in a.engines.split(",")]
    results, expected = [], {}
    for label, n, tasks in engines:
        cluster = Cluster(a.work, n, tasks, a.memory_mb) if n else None
        try:
            for name, cmd in commands.items():
                full = [WISP] + cmd + ["--lake", a.lake, "--memory-mb", str(a.memory_mb)]
                if cluster:
                    full += ["--engine", cluster.engine]
                log(f"{label}: {name}")
                secs, rss, shuffle, out = run(full, cluster)
                got = normalized(name, out)
                if name not in expected:
                    expected[name] = got
                equal = got == expected[name]
                rows = len(got) if isinstance(got, list) else max(0, len(out.splitlines()) - 1)
                ex = [hwm(p.pid) for p in cluster.procs] if cluster else []
                results.append({"engine": label, "command": name, "seconds": secs, "client_max_rss_mib": rss,
                                "executor_peak_rss_mib": ex, "peak_shuffle_mb": round(shuffle / 1e6, 1),
                                "rows": rows, "equal_to_local": equal})
                log(f"  {secs} s, {rows} rows, equal: {equal}, executors {ex} MiB, shuffle {shuffle/1e6:.1f} MB")
        finally:
            if cluster:
                cluster.close()
    meta = {"lake": a.lake, "from": a.start, "to": a.end, "memory_mb": a.memory_mb,
            "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}",
            "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.join(ROOT, "benches/results"), exist_ok=True)
    with open(os.path.join(ROOT, f"benches/results/cluster-{a.name}.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    print("| engine | command | wall s | rows | equal | client max RSS MiB | executor peak RSS MiB | peak shuffle MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ex = ", ".join(str(x) for x in r["executor_peak_rss_mib"]) or "–"
        print(f"| {r['engine']} | {r['command']} | {r['seconds']} | {r['rows']} | {'yes' if r['equal_to_local'] else 'NO'} "
              f"| {r['client_max_rss_mib']} | {ex} | {r['peak_shuffle_mb'] if r['engine'] != 'local' else '–'} |")
    if not all(r["equal_to_local"] for r in results):
        raise SystemExit("a cluster result differs from the local engine's")


if __name__ == "__main__":
    main()
