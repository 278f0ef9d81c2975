#!/usr/bin/env python3
"""Commands alternated, to compare two binaries through this VM's noise (one binary's runs spread
±20% within minutes, so only alternated runs compare):

    python3 benches/ab.py 7 "before=bin/a ingest …" "after=bin/b ingest …"

Runs each LABEL=CMD (through bash) in turn, N rounds; prints per label the median and the minimum
of the wall time, of the CPU time (user + sys of the process, from wait4) and of the query time
wisp reports on stderr (the sum of its "in N.NNNs" figures; 0 for commands that report none).
"""
import os
import re
import statistics
import subprocess
import sys
import time


def main():
    if len(sys.argv) < 3 or not sys.argv[1].isdigit() or any("=" not in a for a in sys.argv[2:]):
        sys.exit(__doc__)
    n = int(sys.argv[1])
    cmds = [a.split("=", 1) for a in sys.argv[2:]]
    res = {label: ([], [], []) for label, _ in cmds}
    for _ in range(n):
        for label, cmd in cmds:
            t = time.perf_counter()
            p = subprocess.Popen(["bash", "-c", "exec " + cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            err = p.stderr.read()
            _, status, ru = os.wait4(p.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"{label} failed: {cmd}\n{err}")
            res[label][0].append(time.perf_counter() - t)
            res[label][1].append(ru.ru_utime + ru.ru_stime)
            res[label][2].append(sum(float(x) for x in re.findall(r" in ([0-9.]+)s", err)))
    for label, (wall, cpu, query) in res.items():
        def f(xs):
            return f"{statistics.median(xs) * 1000:.1f} ms (min {min(xs) * 1000:.1f})"
        print(f"{label}: wall {f(wall)}  cpu {f(cpu)}  query {f(query)}")


if __name__ == "__main__":
    main()
