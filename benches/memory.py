#!/usr/bin/env python3
"""Memory bound check: every rule over 30 days on a generated lake with default settings.

    python3 benches/memory.py --lake /tmp/wisp-large/gen/lake [--end 2026-11-20T00:00:00Z]

Runs each detection as a 30-day hunt (one query over the whole window) and, for rules with a
one-pass backtest, as a 30-day backtest (`wisp detect --from --to`), with wisp's default memory
settings; records exit code, seconds, max RSS and whether DataFusion reported "Resources
exhausted". Writes benches/results/memory-<name>.json and prints a Markdown table. A run that
aborts for memory, or exceeds the 4 GiB RSS bar, is marked.
"""
import argparse, datetime as dt, json, os, platform, re, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/wisp-target"))
WISP = os.environ.get("WISP_BIN", os.path.join(TARGET, "release", "wisp"))
BAR_MIB = 4096


def rules():
    """The built-in rules (sql/*.sql): id and whether it has a one-pass backtest."""
    out = []
    for f in sorted(os.listdir(os.path.join(ROOT, "sql"))):
        if not f.endswith(".sql"):
            continue  # sql/rollups/ holds the rollups' definitions, not rules
        text = open(os.path.join(ROOT, "sql", f)).read()
        rid = re.search(r'^id = "([a-z0-9_]+)"', text, re.M).group(1)
        out.append({"id": rid, "one_pass_backtest": "\n-- @backtest" in text})
    return out


def timed(cmd, timeout):
    t0 = time.perf_counter()
    try:
        p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-f", WISP])
        return {"exit": "timeout", "seconds": timeout}
    secs = time.perf_counter() - t0
    lines = p.stderr.strip().splitlines()
    rss = int(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None
    return {"exit": p.returncode, "seconds": round(secs, 1), "max_rss_mib": round(rss) if rss else None,
            "resources_exhausted": "Resources exhausted" in p.stderr,
            "error": None if p.returncode == 0 else p.stderr[-400:]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--end", default="2026-11-20T00:00:00Z")
    ap.add_argument("--name", default="large")
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--only", action="append", default=[], help="measure only these rules, keeping the others' results")
    ap.add_argument("--scheduled", action="store_true",
                    help="also the scheduled forms: every rule's hourly run at the end (`wisp detect --at`) and a "
                         "30-day catch-up of every rule in one process (`wisp run --once --max-catch-up 30d`, "
                         "its state in a temporary folder)")
    a = ap.parse_args()
    end = dt.datetime.fromisoformat(a.end.replace("Z", "+00:00"))
    start = end - dt.timedelta(days=30)
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
    res = {"lake": a.lake, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
           "date": dt.date.today().isoformat(), "window": [iso(start), iso(end)], "runs": []}
    path = os.path.join(ROOT, "benches", "results", f"memory-{a.name}.json")
    if a.only and os.path.exists(path):
        res["runs"] = [x for x in json.load(open(path))["runs"] if x["rule"] not in a.only]
    for r in rules():
        rid = r.get("id")
        if a.only and rid not in a.only:
            continue
        forms = [("hunt", [WISP, "hunt", rid])]
        if r.get("one_pass_backtest"):
            forms.append(("backtest", [WISP, "detect", "--rule", rid, "--max-alerts", "1000000000"]))
        for form, cmd in forms:
            cmd = cmd + ["--from", iso(start), "--to", iso(end), "--lake", a.lake, "--format", "jsonl", "-o", "/dev/null"]
            x = timed(cmd, a.timeout)
            x.update({"rule": rid, "form": form})
            res["runs"].append(x)
            print(rid, form, {k: v for k, v in x.items() if k != "error"}, file=sys.stderr, flush=True)
    if a.scheduled:
        with tempfile.TemporaryDirectory() as state:
            for form, cmd in [
                ("hourly run", [WISP, "detect", "--at", iso(end), "--lake", a.lake, "--format", "jsonl", "-o", "/dev/null"]),
                ("30-day catch-up", [WISP, "run", "--once", "--lake", a.lake, "--state", state, "--since", iso(start),
                                     "--until", iso(end), "--max-catch-up", "30d", "--sink", f"jsonl:{state}/alerts.jsonl"]),
            ]:
                x = timed(cmd, a.timeout)
                x.update({"rule": "(every rule)", "form": form})
                res["runs"] = [y for y in res["runs"] if (y["rule"], y["form"]) != ("(every rule)", form)] + [x]
                print(form, {k: v for k, v in x.items() if k != "error"}, file=sys.stderr, flush=True)
    res["runs"].sort(key=lambda x: (x["rule"], x["form"]))
    json.dump(res, open(path, "w"), indent=2)
    print("| rule | form | exit | seconds | max RSS MiB | within 4 GiB |")
    print("|---|---|---|---|---|---|")
    for x in res["runs"]:
        ok = x.get("max_rss_mib") is not None and x["max_rss_mib"] <= BAR_MIB
        print(f"| {x['rule']} | {x['form']} | {x['exit']} | {x['seconds']} | {x.get('max_rss_mib', '-')} | {'yes' if ok else 'NO'} |")
    print(f"\nresults in {path}")


if __name__ == "__main__":
    main()
