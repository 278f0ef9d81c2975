#!/usr/bin/env python3
"""A backtest of every built-in detection over a range (default: the 20 days before 2026-11-20)
against a DuckDB script computing the same alerts on the same Parquet (issue 16).

wisp: one process, `wisp detect --from S --to E --rule …` (every built-in rule, the hunts too, each in one pass: its `-- @backtest`
section), uncapped (`--max-alerts`), best of --repeat; then each rule alone, once, for the split.

DuckDB: for each rule its twin in benches/duckdb/<rule>.backtest.sql (every run of the range in one
query, as wisp's section), with the rule's interval and look-back from its header; then what wisp
does after the query, in Python: each alert (the rule's `alert_key`) once, from the first run that
reports it, and the rule's `suppress_by` / `suppress_for` in run order. DuckDB's time is the sum of
the twins' queries (best of --repeat each), the Python steps not counted.

The two are compared per rule on (the rule's key columns, the run that reports the alert).

    python3 benches/backtest.py --lake /tmp/wisp-bench-medium/gen/lake
"""

import argparse, collections, datetime as dt, json, os, platform, sys, time, tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402  (the DuckDB connection, parameters, timing and normalization helpers)

ROOT = e2e.ROOT


def header(rule):
    text = open(os.path.join(ROOT, "sql", f"{rule}.sql")).read()
    return tomllib.loads(text[text.index("/*") + 2:text.index("*/")])


def us(d):
    n, unit = int(d[:-1]), d[-1]
    return n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit] * 1_000_000


def run_end(v):
    if isinstance(v, (int, float)):
        return int(v)
    return int(dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1_000_000)


def suppress(rows, key_cols, every_us):
    """wisp's Suppressor: in run order, an alert whose key stood within `every_us` is dropped."""
    last, out = {}, []
    for r in sorted(rows, key=lambda r: r["run_end_us"]):
        k = tuple(r[c] for c in key_cols)
        if k in last and r["run_end_us"] - last[k] < every_us:
            continue
        last[k] = r["run_end_us"]
        out.append(r)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--days", type=int, default=20)
    ap.add_argument("--end", default="2026-11-20T00:00:00Z")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", default=None, help="results JSON (default benches/results/backtest-<lake folder>.json)")
    a = ap.parse_args()
    duckdb = e2e.ensure_duckdb()
    end = dt.datetime.fromisoformat(a.end.replace("Z", "+00:00"))
    start = end - dt.timedelta(days=a.days)
    rules = list(e2e.RULES)
    res = {"lake": a.lake, "from": e2e.iso(start), "to": e2e.iso(end), "date": dt.date.today().isoformat(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}", "rules": {}}

    # wisp: every rule in one process.
    cmd = [e2e.WISP, "detect", "--from", e2e.iso(start), "--to", e2e.iso(end), "--max-alerts", "1000000000",
           "--lake", a.lake, "--format", "jsonl"]
    every = [x for rule in rules for x in ("--rule", rule)]  # the two daily hunts run only when named
    best, rss, out = None, 0, ""
    for _ in range(a.repeat):
        s, m, out = e2e.timed(cmd + every, timeout=None)
        best = s if best is None else min(best, s)
        rss = max(rss, m)
    res["wisp_all"] = {"seconds": round(best, 2), "query_seconds": round(e2e.LAST_QUERY_S[0], 2), "max_rss_mib": round(rss), "rows_read": e2e.LAST_SCAN[0][0],
                       "mb_read": e2e.LAST_SCAN[0][1]}
    e2e.log("wisp, every rule:", res["wisp_all"])
    by_rule = collections.defaultdict(list)
    for line in out.splitlines():
        if line.strip():
            r = json.loads(line)
            by_rule[r["rule_id"]].append(r)

    con = e2e.duck_connect(duckdb, a.lake)
    duck_total = 0.0
    for rule in rules:
        h = header(rule)
        keys = e2e.RULES[rule][0]
        interval_us, lookback_us = us(h["interval"]), us(h["lookback"])
        # wisp alone.
        s, m, _ = e2e.timed(cmd + ["--rule", rule], timeout=None)
        r = {"wisp_s": round(s, 2), "wisp_query_s": round(e2e.LAST_QUERY_S[0], 2), "wisp_max_rss_mib": round(m),
             "wisp_rows_read": e2e.LAST_SCAN[0][0],
             "wisp_mb_read": e2e.LAST_SCAN[0][1]}
        # DuckDB.
        sql = e2e.duck_params(open(os.path.join(ROOT, "benches", "duckdb", f"{rule}.backtest.sql")).read(), start, end,
                              interval_us=interval_us, lookback_us=lookback_us)
        dbest, got, cols = None, None, None
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            got = con.execute(sql).fetchall()
            d = time.perf_counter() - t0
            dbest = d if dbest is None else min(dbest, d)
            cols = [c[0] for c in con.description]
        duck_total += dbest
        rows = [dict(zip(cols, row)) for row in got]
        # Each alert once, from the first run; then suppression.
        first = {}
        for row in sorted(rows, key=lambda x: x["run_end_us"]):
            first.setdefault(tuple(str(row["run_end_us" if k == "run_end" else k]) for k in h["alert_key"]), row)
        rows = list(first.values())
        if h.get("suppress_by"):
            rows = suppress(rows, h["suppress_by"], us(h.get("suppress_for", "0s")))
        drows = {tuple(e2e.norm(x[k]) for k in keys) + (x["run_end_us"],) for x in rows}
        wrows = set()
        for al in by_rule.get(rule, []):
            f = json.loads(al["fields"])
            wrows.add(tuple(e2e.norm(f.get(k)) for k in keys) + (run_end(al["window_end"]),))
        r.update({"duckdb_s": round(dbest, 3), "ratio": round(r["wisp_s"] / dbest, 2), "alerts": len(wrows),
                  "equal": wrows == drows})
        if wrows != drows:
            r["only_wisp"] = sorted(wrows - drows)[:5]
            r["only_duckdb"] = sorted(drows - wrows)[:5]
        res["rules"][rule] = r
        e2e.log(rule, r)
    res["duckdb_all_s"] = round(duck_total, 2)
    res["ratio"] = round(res["wisp_all"]["seconds"] / duck_total, 2)
    res["equal"] = all(r["equal"] for r in res["rules"].values())
    path = a.out or os.path.join(ROOT, "benches", "results", f"backtest-{os.path.basename(os.path.dirname(os.path.abspath(a.lake)))}.json")
    json.dump(res, open(path, "w"), indent=2, default=str)
    print("| detection | wisp alone s | DuckDB s | wisp/DuckDB | alerts | equal | wisp rows read | wisp MB read | wisp max RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rule, r in res["rules"].items():
        print(f"| {rule} | {r['wisp_s']} | {r['duckdb_s']} | {r['ratio']} | {r['alerts']} | {'yes' if r['equal'] else 'NO'} "
              f"| {r['wisp_rows_read']} | {r['wisp_mb_read']} | {r['wisp_max_rss_mib']} |")
    print(f"\nevery rule, one wisp process: {res['wisp_all']['seconds']} s (max RSS {res['wisp_all']['max_rss_mib']} MiB); "
          f"DuckDB, the twins one after another: {res['duckdb_all_s']} s; ratio {res['ratio']}; equal: {res['equal']}\nresults in {path}")


if __name__ == "__main__":
    main()
