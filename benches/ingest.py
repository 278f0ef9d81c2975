#!/usr/bin/env python3
"""Ingest throughput: one day of a generated tenant as uncompressed diagnostic-settings JSON lines,
ingested with 1 and with 2 mapping threads, and `wisp gen --as lake` of the same day (best of
--repeat runs each).

    python3 benches/ingest.py --profile medium            # 1.2 GB, 1.33 M records
    python3 benches/ingest.py --profile large --repeat 1  # 3.9 GB

Reports, per run: wall time, CPU time (user + sys), throughput in total (MB/s of JSON over the wall
time) and per core (MB/s over the CPU time), max RSS; and how the wall time scales from 1 to 2
threads. `--threads 1` still encodes Parquet on a second thread; the per-core figure counts it.
Compaction is left out of both (`--compact-after 0`). Measures the binary to deploy
(scripts/dist.sh: `dist`, profile-guided), as benches/e2e.py does (WISP_PROFILE=dist or release for
the plain builds, WISP_BIN for another binary). Writes benches/results/ingest-<profile>.json.
"""
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  the build measured: e2e.PROFILE and e2e.WISP (WISP_PROFILE, WISP_BIN)

WISP = e2e.WISP


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def timed(cmd):
    """Runs a command: (wall s, cpu s, max RSS MiB) of that process."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").splitlines()[-10:]
            sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--work", default=None, help="work folder (default /tmp/wisp-ingest-<profile>)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-build", action="store_true")
    a = ap.parse_args()
    work = a.work or f"/tmp/wisp-ingest-{a.profile}"
    if not a.skip_build:
        e2e.build()
    gen = os.path.join(work, "gen")
    raw = os.path.join(gen, "raw")
    if not os.path.isdir(raw):
        log(f"generating one day of {a.profile} as raw JSON lines in {gen}")
        subprocess.run([WISP, "gen", "--profile", a.profile, "--days", "1", "--as", "raw", "--no-gzip",
                        "--out", gen, "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(raw) for f in fs)
    runs = {}
    for threads in (1, 2):
        best = None
        for k in range(a.repeat):
            lake = os.path.join(work, f"lake-{threads}")
            shutil.rmtree(lake, ignore_errors=True)
            wall, cpu, rss = timed([WISP, "ingest", "--threads", str(threads), "--compact-after", "0", "--no-progress",
                                    "--lake", lake, "--asn-db", os.path.join(gen, "asn.csv"), raw])
            log(f"ingest --threads {threads} run {k + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB")
            if best is None or wall < best["wall_s"]:
                best = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "max_rss_mib": round(rss),
                        "mb_per_s_total": round(size / 1e6 / wall, 1), "mb_per_s_per_core": round(size / 1e6 / cpu, 1)}
        runs[str(threads)] = best
    out = os.path.join(work, "gen-lake")
    gen_lake = None
    for k in range(a.repeat):  # best of --repeat, as the ingests
        shutil.rmtree(out, ignore_errors=True)
        wall, cpu, rss = timed([WISP, "gen", "--profile", a.profile, "--days", "1", "--as", "lake", "--out", out,
                                "--compact-after", "0", "--no-progress"])
        log(f"gen --as lake run {k + 1}: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB")
        if gen_lake is None or wall < gen_lake["wall_s"]:
            gen_lake = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "max_rss_mib": round(rss)}
    result = {
        "profile": a.profile, "input_bytes": size, "runs": runs, "gen_as_lake": gen_lake,
        "scaling_1_to_2_threads": round(runs["1"]["wall_s"] / runs["2"]["wall_s"], 2),
        "build": os.environ.get("WISP_BIN") or e2e.PROFILE,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benches", "results", f"ingest-{a.profile}.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("| threads | wall s | CPU s | MB/s total | MB/s per core | max RSS MiB |")
    print("|---|---|---|---|---|---|")
    for t, r in runs.items():
        print(f"| {t} | {r['wall_s']} | {r['cpu_s']} | {r['mb_per_s_total']} | {r['mb_per_s_per_core']} | {r['max_rss_mib']} |")
    print(f"\ninput {size / 1e6:.0f} MB; 1 → 2 threads: {result['scaling_1_to_2_threads']}×; "
          f"gen --as lake of the same day: {gen_lake['wall_s']} s ({gen_lake['cpu_s']} s CPU)")


if __name__ == "__main__":
    main()
