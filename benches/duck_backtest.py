#!/usr/bin/env python3
"""Times one rule's DuckDB one-pass backtest twin (benches/duckdb/<rule>.backtest.sql) over a range
of a lake, with the parameters benches/e2e.py binds (the rule's interval and look-back from its
header), on an open connection: `python3 benches/duck_backtest.py LAKE RULE FROM TO [REPEAT]`.
Prints each run's time and row count (the twin's rows, one per alert and run, before the
first-run and suppression steps benches/backtest.py applies)."""
import datetime as dt
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import backtest  # noqa: E402
import e2e  # noqa: E402


def main():
    lake, rule, start, end = sys.argv[1:5]
    repeat = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    p = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    h = backtest.header(rule)
    con = e2e.duck_connect(e2e.ensure_duckdb(), lake)
    sql = e2e.duck_params(open(os.path.join(e2e.ROOT, "benches", "duckdb", f"{rule}.backtest.sql")).read(), p(start), p(end),
                          interval_us=backtest.us(h["interval"]), lookback_us=backtest.us(h["lookback"]))
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = con.execute(sql).fetchall()
        print(f"duckdb {time.perf_counter() - t0:.2f} s, {len(rows)} rows", flush=True)


if __name__ == "__main__":
    main()
