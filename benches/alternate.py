#!/usr/bin/env python3
"""wisp and its DuckDB twin alternated on one rule, to read a ratio through this VM's noise.

    python3 benches/alternate.py --lake /tmp/wisp-bench-large/gen/lake --rule sp_risk_event_stacking --days 30 --runs 3

Each run is `wisp hunt RULE` over the last --days before 2026-11-20 (the benchmark lake's end; the
query time wisp reports) followed by the rule's DuckDB twin (`benches/duckdb/RULE.sql`) on the same
lake, in one DuckDB connection; prints both times, the rows and the ratio per run.
"""
import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--rule", required=True)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    end = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    start = end - dt.timedelta(days=a.days)
    con = e2e.duck_connect(e2e.ensure_duckdb(), a.lake)
    lookback_us = int(e2e.WINDOWS[a.rule].total_seconds() * 1e6)
    sql = e2e.duck_params(open(os.path.join(e2e.ROOT, "benches", "duckdb", f"{a.rule}.sql")).read(), start, end, lookback_us=lookback_us)
    for i in range(a.runs):
        p = subprocess.run([e2e.WISP, "hunt", a.rule, "--from", e2e.iso(start), "--to", e2e.iso(end), "--lake", a.lake,
                            "--format", "jsonl", "-o", "/dev/null"], capture_output=True, text=True)
        m = re.search(r"in ([0-9.]+)s", p.stderr)
        if p.returncode != 0 or not m:
            sys.exit(f"wisp failed ({p.returncode}): {p.stderr}")
        q = float(m.group(1))
        t0 = time.perf_counter()
        rows = len(con.execute(sql).fetchall())
        d = time.perf_counter() - t0
        print(f"{a.rule} {a.days}d run {i}: wisp query {q:.3f} s, duckdb {d:.3f} s ({rows} rows), ratio {q / d:.2f}", flush=True)


if __name__ == "__main__":
    main()
