#!/usr/bin/env python3
"""Scheduled detection (`wisp run`) benchmark: an hourly tick, a catch-up, and the dedup check.

    python3 benches/schedule.py --profile medium            # generates 12 days, then measures
    python3 benches/schedule.py --profile medium --skip-gen # reuses the lake in --work

On a generated tenant (`wisp gen --as lake`, data up to 2026-11-20T00:00Z), all built-in rules,
first-seen state kept by `wisp run` itself:
  1. the first tick of a new ledger (it builds the first-seen state from the history window);
  2. hourly ticks after it (`wisp run --once --until T`, one hour later each): wall time, max RSS;
  3. a catch-up of 24 missed hourly runs from a ledger an hour old;
  4. the dedup check: one more hourly tick against the store the catch-up filled, beside the
     ticks of step 2 (whose store is small); per-rule seconds come from wisp's per-run stderr line.
Writes benches/results/schedule-<profile>.json and prints a Markdown table.
"""
import argparse, datetime as dt, json, os, platform, re, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/wisp-target"))
WISP = os.path.join(TARGET, "release", "wisp")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def timed(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    lines = p.stderr.strip().splitlines()
    return secs, int(lines[-1]) / 1024, "\n".join(lines[:-1])


def run(lake, state, until, since=None):
    cmd = [WISP, "run", "--once", "--lake", lake, "--state", state, "--until", iso(until), "--format", "jsonl"]
    if since:
        cmd += ["--since", iso(since)]
    secs, rss, err = timed(cmd)
    runs = sum(int(x) for x in re.findall(r": ([0-9]+) run\(s\)", err))
    new = sum(int(x) for x in re.findall(r"alerts ([0-9]+) new", err))
    per_rule = {m[0]: float(m[1]) for m in re.findall(r"^([a-z0-9_]+): .*; ([0-9.]+)s$", err, re.M)}
    return {"seconds": round(secs, 3), "max_rss_mib": round(rss), "runs": runs, "new_alerts": new,
            "rule_seconds": per_rule}, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--days", type=int, default=12)
    ap.add_argument("--work", default=None, help="working folder (default /tmp/wisp-sched-<profile>)")
    ap.add_argument("--skip-gen", action="store_true")
    ap.add_argument("--ticks", type=int, default=5)
    a = ap.parse_args()
    work = a.work or f"/tmp/wisp-sched-{a.profile}"
    if not os.path.exists(WISP):
        subprocess.check_call(["cargo", "build", "--release"], cwd=ROOT)
    lake = os.path.join(work, "gen", "lake")
    res = {"profile": a.profile, "days": a.days, "date": dt.date.today().isoformat(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"}
    if not a.skip_gen:
        shutil.rmtree(os.path.join(work, "gen"), ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.check_call([WISP, "gen", "--profile", a.profile, "--days", str(a.days), "--as", "lake", "--no-progress",
                               "--out", os.path.join(work, "gen")])
        res["gen_seconds"] = round(time.perf_counter() - t0, 1)
    end = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    start = end - dt.timedelta(hours=25 + a.ticks + 1)  # leaves room for the catch-up
    hour = dt.timedelta(hours=1)

    # 1-2. A new ledger, its first tick, then hourly ticks.
    state = os.path.join(work, "state-ticks")
    shutil.rmtree(state, ignore_errors=True)
    res["first_tick"], err = run(lake, state, start + hour, since=start)
    log("first tick:", res["first_tick"])
    ticks = []
    for i in range(2, a.ticks + 2):
        r, err = run(lake, state, start + i * hour)
        ticks.append(r)
        log(f"tick {i}:", r)
    res["ticks"] = ticks
    res["tick_median_s"] = statistics.median(t["seconds"] for t in ticks)
    res["tick_max_s"] = max(t["seconds"] for t in ticks)
    res["tick_example_stderr"] = err

    # 3. Catch-up: a ledger one hour old, 24 hourly runs due.
    state2 = os.path.join(work, "state-catchup")
    shutil.rmtree(state2, ignore_errors=True)
    run(lake, state2, start + hour, since=start)
    res["catch_up_24h"], err = run(lake, state2, start + 25 * hour)
    res["catch_up_stderr"] = err
    log("catch-up of 24 hourly runs:", res["catch_up_24h"])

    # 4. The dedup check against a store that holds the catch-up's alerts: one more tick.
    alerts = sum(len(fs) for _, _, fs in os.walk(os.path.join(state2, "alerts")))
    r, err = run(lake, state2, start + 26 * hour)
    res["tick_after_catch_up"] = dict(r, alert_files_in_store=alerts)
    log("tick with the catch-up's alert store:", res["tick_after_catch_up"])

    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    path = os.path.join(ROOT, "benches", "results", f"schedule-{a.profile}.json")
    json.dump(res, open(path, "w"), indent=2)
    print("| measurement | wall s | max RSS MiB | runs | new alerts |\n|---|---|---|---|---|")
    print(f"| first tick of a new ledger (builds first-seen state) | {res['first_tick']['seconds']} | {res['first_tick']['max_rss_mib']} | {res['first_tick']['runs']} | {res['first_tick']['new_alerts']} |")
    for i, t in enumerate(ticks):
        print(f"| hourly tick {i + 1} | {t['seconds']} | {t['max_rss_mib']} | {t['runs']} | {t['new_alerts']} |")
    c = res["catch_up_24h"]
    print(f"| catch-up of 24 missed hourly runs | {c['seconds']} | {c['max_rss_mib']} | {c['runs']} | {c['new_alerts']} |")
    t = res["tick_after_catch_up"]
    print(f"| hourly tick with the catch-up's {t['alert_files_in_store']} alert files in the store | {t['seconds']} | {t['max_rss_mib']} | {t['runs']} | {t['new_alerts']} |")
    print(f"\nresults in {path}")


if __name__ == "__main__":
    main()
