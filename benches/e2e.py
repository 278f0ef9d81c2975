#!/usr/bin/env python3
"""End-to-end benchmark: wisp against DuckDB on the same Parquet lake, in one run.

    python3 benches/e2e.py --profile medium            # generate, ingest, detect, compare
    python3 benches/e2e.py --profile small --days 30   # quick

Measures, on the given profile: ingest throughput (records/s and MB/s of uncompressed
diagnostic-settings JSON), each detection over its own window and over 30 days in wisp and in
DuckDB (the same semantics, benches/duckdb/*.sql) with results compared for equality and the time
ratio wisp/DuckDB (best of --repeat runs each, wisp's and DuckDB's alternated), an hourly
scheduled run of all rules, and peak memory (max RSS) of every wisp process. Measures the binary to
deploy (scripts/dist.sh: `dist`, profile-guided; WISP_PROFILE=dist or release for the plain builds), built when missing. Installs DuckDB 1.4.4 and its inet extension from PyPI when missing. Writes
benches/results/<profile>.json and prints a Markdown table.
"""
import argparse, datetime as dt, glob, json, os, platform, re, resource, shutil, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/wisp-target"))
# The build measured: the binary to deploy, `scripts/dist.sh` (the `dist` profile, fat LTO and one
# codegen unit, built with the committed profile of pgo/: profile-guided); WISP_PROFILE=dist for
# the plain `dist` build, WISP_PROFILE=release for the quicker one.
PROFILE = os.environ.get("WISP_PROFILE", "pgo")
PGO_TARGET = os.environ.get("PGO_TARGET_DIR", os.path.expanduser("~/.cache/wisp-pgo-target"))
# WISP_BIN: a binary built otherwise, measured as it is.
WISP = os.environ.get("WISP_BIN") or (
    os.path.join(PGO_TARGET, "use", "dist", "wisp") if PROFILE == "pgo" else os.path.join(TARGET, PROFILE, "wisp"))


def build():
    """Builds the binary measured (WISP_PROFILE), unless WISP_BIN names one."""
    if os.environ.get("WISP_BIN"):
        return
    if PROFILE == "pgo":
        subprocess.check_call([os.path.join(ROOT, "scripts", "dist.sh")], cwd=ROOT, stdout=subprocess.DEVNULL)
    else:
        subprocess.check_call(["cargo", "build", "--profile", PROFILE, "-q"], cwd=ROOT)

RULES = {
    # rule id: (key columns compared, how wisp runs it over 30 days)
    "sp_unusual_source_asn": (["service_principal_id", "source_asn", "id"], "backtest"),
    "sp_rare_action_multiple_ips": (["action", "service_principal_name", "event_day", "event_count", "ip_count"], "hunt"),
    "sp_failed_signins": (["service_principal_name", "source_ip", "error_code", "attempts"], "hunt"),
    "sp_credential_added_after_signin": (["audit_id", "prior_signins", "matched_by", "minutes_since_signin"], "hunt"),
    "sp_risk_event_stacking": (["service_principal_id", "severity", "risk_event_count", "signin_count"], "hunt"),
    "identity_signin_from_suspicious_source": (["source_ip", "event_count", "dataset_count"], "hunt"),
    "sp_credential_failures_from_new_source": (["service_principal_id", "source_ip", "failures", "distinct_ips", "severity"], "backtest"),
    "sp_keyvault_read_from_new_source": (["caller_object_id", "vault", "caller_ip", "reads", "failed_reads", "severity"], "backtest"),
    "sp_token_replay_from_unseen_address": (["service_principal_id", "source_ip", "calls"], "backtest"),
}
WINDOWS = {  # the rule's own window (lookback), as in its header
    "sp_unusual_source_asn": dt.timedelta(minutes=65),
    "sp_rare_action_multiple_ips": dt.timedelta(days=1),
    "sp_failed_signins": dt.timedelta(days=1),
    "sp_credential_added_after_signin": dt.timedelta(days=1),
    "sp_risk_event_stacking": dt.timedelta(hours=1),
    "identity_signin_from_suspicious_source": dt.timedelta(hours=8),
    "sp_credential_failures_from_new_source": dt.timedelta(hours=1),
    "sp_keyvault_read_from_new_source": dt.timedelta(hours=1),
    "sp_token_replay_from_unseen_address": dt.timedelta(hours=1),
}
PRIVATE = ["10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.0.0/29", "192.0.0.8/32",
           "192.0.0.9/32", "192.0.0.10/32", "192.0.0.170/32", "192.0.0.171/32", "192.0.2.0/24", "192.31.196.0/24",
           "192.52.193.0/24", "192.168.0.0/16", "192.88.99.0/24", "224.0.0.0/4", "100.64.0.0/10", "192.175.48.0/24",
           "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "::1/128", "fe80::/10", "ff00::/8"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ensure_duckdb():
    try:
        import duckdb  # noqa: F401
        import duckdb_ext  # noqa: F401
        import pytz  # noqa: F401  (DuckDB needs it to return TIMESTAMPTZ values)
    except ImportError:
        log("installing duckdb==1.4.4, duckdb-ext-inet and pytz from PyPI")
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "duckdb==1.4.4", "duckdb-ext-inet==1.4.4.*", "pytz"])
        # The failed import left benches/duckdb (a folder of SQL, a namespace package to Python)
        # as the module `duckdb`: forget it so the installed package is found.
        import importlib
        sys.modules.pop("duckdb", None)
        importlib.invalidate_caches()
    import duckdb
    return duckdb


LAST_QUERY_S = [0.0]
LAST_PLANNING_S = [0.0]  # of it, planning (hunt and sql say "(planning 0.020s)")
LAST_SCAN = [(0, 0.0)]  # rows and MB wisp read, from its stderr
TIMEOUT_S = 180


def timed(cmd, timeout=TIMEOUT_S, **kw):
    """Runs a command; returns (seconds, max RSS in MiB, stdout). The query time wisp reports on
    stderr ("… in 1.234s": planning and execution, without process start and session open) is
    left in LAST_QUERY_S."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True, timeout=timeout, **kw)
    secs = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    rss_kb = int(p.stderr.strip().splitlines()[-1])
    LAST_QUERY_S[0] = sum(float(x) for x in re.findall(r" in ([0-9.]+)s(?: \(planning [0-9.]+s\))?$", p.stderr, re.M))
    LAST_PLANNING_S[0] = sum(float(x) for x in re.findall(r" \(planning ([0-9.]+)s\)$", p.stderr, re.M))
    scans = re.findall(r"read ([0-9]+) rows, ([0-9.]+) MB", p.stderr)
    LAST_SCAN[0] = (sum(int(r) for r, _ in scans), round(sum(float(m) for _, m in scans), 1))
    return secs, rss_kb / 1024, p.stdout


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def duck_params(sql, start, end, interval_us=3_600_000_000, lookback_us=65 * 60_000_000, history_us=10 * 86_400_000_000):
    ts = lambda t: f"TIMESTAMPTZ '{t.strftime('%Y-%m-%d %H:%M:%S')}+00'"
    rep = {
        "$window_start": ts(start), "$window_end": ts(end), "$history_start": ts(end - dt.timedelta(days=10)),
        "$range_start": ts(start), "$range_end": ts(end),
        "$interval_us": str(interval_us), "$lookback_us": str(lookback_us), "$history_us": str(history_us),
        "$lookback": f"to_microseconds({lookback_us})", "$history": f"to_microseconds({history_us})",
        "$surrounding": "INTERVAL 3 HOUR",
    }
    for k in sorted(rep, key=len, reverse=True):
        sql = sql.replace(k, rep[k])
    return sql


def duck_connect(duckdb, lake):
    con = duckdb.connect(config={"allow_unsigned_extensions": "true", "threads": 2})
    import duckdb_ext
    ext = glob.glob(os.path.join(list(duckdb_ext.__path__)[0], "extensions", "*", "*", "inet.duckdb_extension"))
    con.execute(f"LOAD '{ext[0]}'")
    con.execute("SET TimeZone = 'UTC'")
    for t in ["signins", "audit", "sp_risk_events", "graph_activity", "o365_audit", "azure_activity", "network_alerts", "resource_logs"]:
        if glob.glob(os.path.join(lake, t, "*", "*.parquet")):
            con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/*/*.parquet', hive_partitioning = true, hive_types = {{'day': VARCHAR}})")
    ors = " OR ".join(f"TRY_CAST(ip AS INET) <<= '{c}'::INET" for c in PRIVATE)
    con.execute(f"CREATE MACRO is_private_ip(ip) AS CASE WHEN TRY_CAST(ip AS INET) IS NULL THEN NULL ELSE ({ors}) END")
    return con


def norm(v):
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dt.date, dt.datetime)):
        return v.strftime("%Y-%m-%d")
    return "" if v is None else str(v)


def wisp_rows(out, keys, alerts):
    rows = set()
    for line in out.splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        if alerts:
            r = json.loads(r["fields"])
        rows.add(tuple(norm(r.get(k)) for k in keys))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="small", choices=["small", "medium", "large"])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--work", default=None, help="working folder (default /tmp/wisp-bench-<profile>)")
    ap.add_argument("--skip-gen", action="store_true", help="reuse the lake in --work")
    ap.add_argument("--ingest-days", type=int, default=1, help="days of raw data generated for the ingest measurement")
    ap.add_argument("--repeat", type=int, default=3, help="best of N for query timings")
    ap.add_argument("--only", action="append", default=[],
                    help="re-measure only these rules (repeat the flag or separate them with commas), keeping the other results")
    ap.add_argument("--label", choices=["window", "30d"], default=None,
                    help="re-measure only the rules' own windows or only their 30 days, keeping the other results")
    a = ap.parse_args()
    a.only = [r for o in a.only for r in o.split(",") if r]
    unknown = sorted(set(a.only) - set(RULES))
    if unknown:
        sys.exit(f"--only: no such rule {', '.join(unknown)} (rules: {', '.join(RULES)})")
    work = a.work or f"/tmp/wisp-bench-{a.profile}"
    duckdb = ensure_duckdb()
    if not os.path.exists(WISP):
        log(f"building wisp ({PROFILE})")
        build()
    end = dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc)
    res = {"profile": a.profile, "days": a.days, "build": os.environ.get("WISP_BIN") or PROFILE, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
           "date": dt.date.today().isoformat(), "duckdb": __import__("importlib.metadata").metadata.version("duckdb"), "ingest": {}, "rules": {}, "hourly": {}}

    # 1. Ingest throughput on raw diagnostic-settings JSON lines.
    raw = os.path.join(work, "raw-ingest")
    if a.only:
        old = json.load(open(os.path.join(ROOT, "benches", "results", f"{a.profile}.json")))
        res["ingest"] = old["ingest"]
        res["gen"] = old.get("gen")
    if not a.only:
        if not a.skip_gen:
            shutil.rmtree(raw, ignore_errors=True)
            log(f"generating {a.ingest_days} day(s) of raw exports for the ingest measurement")
            subprocess.check_call([WISP, "gen", "--profile", a.profile, "--days", str(a.ingest_days), "--as", "raw", "--no-gzip", "--no-progress", "--out", raw])
        files = glob.glob(os.path.join(raw, "raw", "**", "PT24H.json"), recursive=True)
        size = sum(os.path.getsize(f) for f in files)
        ilake = os.path.join(work, "ingest-lake")
        shutil.rmtree(ilake, ignore_errors=True)
        secs, rss, _ = timed([WISP, "ingest", "--no-progress", "--lake", ilake, "--asn-db", os.path.join(raw, "asn.csv"),
                              "--summary-json", os.path.join(work, "ingest.json"), os.path.join(raw, "raw")], timeout=None)
        summ = json.load(open(os.path.join(work, "ingest.json")))
        res["ingest"] = {"bytes": size, "records": summ["read"], "seconds": round(secs, 2), "mb_per_s": round(size / 1e6 / secs, 1),
                         "records_per_s": round(summ["read"] / secs), "max_rss_mib": round(rss)}
        log("ingest:", res["ingest"])

    # 2. The detection lake (written directly).
    gdir = os.path.join(work, "gen")
    lake = os.path.join(gdir, "lake")
    if not a.skip_gen:
        shutil.rmtree(gdir, ignore_errors=True)
        log(f"generating the {a.profile} lake ({a.days} days)")
        secs, rss, _ = timed([WISP, "gen", "--profile", a.profile, "--days", str(a.days), "--as", "lake", "--no-progress", "--out", gdir], timeout=None)
        res["gen"] = {"seconds": round(secs, 1), "max_rss_mib": round(rss)}
    res["lake_bytes"] = sum(os.path.getsize(f) for f in glob.glob(os.path.join(lake, "**", "*.parquet"), recursive=True))
    con = duck_connect(duckdb, lake)
    res["signins"] = con.execute("SELECT count(*) FROM signins").fetchone()[0]
    res["other_events"] = sum(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ["audit", "sp_risk_events", "graph_activity", "o365_audit", "azure_activity", "network_alerts", "resource_logs"])
    log(f"lake: {res['signins']} sign-ins, {res['other_events']} other events, {res['lake_bytes'] / 1e6:.0f} MB")

    T = end - dt.timedelta(hours=8)  # a run end inside the last day
    path = os.path.join(ROOT, "benches", "results", f"{a.profile}.json")
    if (a.only or a.label) and os.path.exists(path):
        old = json.load(open(path))
        res["rules"] = old.get("rules", {})
        res["hourly"] = old.get("hourly", {})
    for rule, (keys, mode30) in RULES.items():
        if a.only and rule not in a.only:
            continue
        r = dict(res["rules"].get(rule, {})) if a.label else {}
        lookback_us = int(WINDOWS[rule].total_seconds() * 1e6)  # the rule's look-back (the ASN rule's is 65 min)
        for label, start, mode in [("window", T - WINDOWS[rule], "window"), ("30d", end - dt.timedelta(days=30), mode30)]:
            if a.label and label != a.label:
                continue
            stop = T if label == "window" else end
            if mode == "window":
                # The rule's own window, without max_alerts (a hunt over [T - lookback, T]).
                cmd = [WISP, "hunt", rule, "--from", iso(start), "--to", iso(stop)]
                alerts = False
            elif mode == "backtest":
                # Every hourly run, uncapped (max_alerts would cut the first runs, which see no history).
                cmd = [WISP, "detect", "--rule", rule, "--max-alerts", "1000000000", "--from", iso(start), "--to", iso(stop)]
                alerts = True
            else:
                cmd = [WISP, "hunt", rule, "--from", iso(start), "--to", iso(stop)]
                alerts = False
            cmd += ["--lake", lake, "--format", "jsonl"]
            fname = f"{rule}.backtest.sql" if mode == "backtest" else f"{rule}.sql"
            sql = duck_params(open(os.path.join(ROOT, "benches", "duckdb", fname)).read(), start, stop, lookback_us=lookback_us)
            best, qbest, pbest, rss, out = None, None, None, 0, ""
            dbest, got = None, []
            try:
                # wisp's and DuckDB's runs alternated, so both meet this VM's same moments (one
                # binary's runs spread ±20% within minutes).
                for _ in range(a.repeat):
                    s, m, out = timed(cmd)
                    best = s if best is None else min(best, s)
                    if qbest is None or LAST_QUERY_S[0] < qbest:
                        qbest, pbest = LAST_QUERY_S[0], LAST_PLANNING_S[0]
                    rss = max(rss, m)
                    t0 = time.perf_counter()
                    got = con.execute(sql).fetchall()
                    d = time.perf_counter() - t0
                    dbest = d if dbest is None else min(dbest, d)
            except subprocess.TimeoutExpired:
                subprocess.run(["pkill", "-f", WISP])
                t0 = time.perf_counter()
                sql = duck_params(open(os.path.join(ROOT, "benches", "duckdb", f"{rule}.sql")).read(), start, stop, lookback_us=lookback_us)
                n = len(con.execute(sql).fetchall())
                r[label] = {"wisp_s": f">{TIMEOUT_S}", "wisp_query_s": f">{TIMEOUT_S}", "duckdb_s": round(time.perf_counter() - t0, 3),
                            "ratio": "-", "rows": n, "equal": None, "wisp_max_rss_mib": "-"}
                log(rule, label, r[label])
                continue
            wrows = wisp_rows(out, keys, alerts)
            cols = [c[0] for c in con.description]
            drows = {tuple(norm(row[cols.index(k)]) for k in keys) for row in got}
            equal = wrows == drows
            r[label] = {"wisp_s": round(best, 3), "wisp_query_s": round(qbest, 3), "wisp_planning_s": round(pbest, 3), "duckdb_s": round(dbest, 3),
                        "ratio": round(qbest / dbest, 2), "rows": len(wrows), "equal": equal, "wisp_max_rss_mib": round(rss),
                        "wisp_rows_read": LAST_SCAN[0][0], "wisp_mb_read": LAST_SCAN[0][1]}
            if not equal:
                r[label]["only_wisp"] = sorted(wrows - drows)[:5]
                r[label]["only_duckdb"] = sorted(drows - wrows)[:5]
            log(rule, label, r[label])
        res["rules"][rule] = r

    # 3. An hourly scheduled run of all detections: stateless, then with first-seen state (built by
    # the run an hour earlier; each timed run starts from that state, so it folds in one hour).
    def hourly(extra):
        best, qbest, rss, scan = None, None, 0, None
        for _ in range(a.repeat):
            if extra:
                shutil.rmtree(os.path.join(lake, "_state"), ignore_errors=True)
                shutil.copytree(os.path.join(work, "state-prev"), os.path.join(lake, "_state"))
            s, m, _ = timed([WISP, "detect", "--at", iso(T), "--lake", lake, "--format", "jsonl", "-o", "/dev/null"] + extra)
            if best is None or s < best:
                best, scan = s, LAST_SCAN[0]
            qbest = LAST_QUERY_S[0] if qbest is None else min(qbest, LAST_QUERY_S[0])
            rss = max(rss, m)
        return {"seconds": round(best, 3), "query_seconds": round(qbest, 3), "max_rss_mib": round(rss),
                "rows_read": scan[0], "mb_read": scan[1]}
    res["hourly"] = hourly([])
    log("hourly run of all rules, stateless:", res["hourly"])
    shutil.rmtree(os.path.join(lake, "_state"), ignore_errors=True)
    s, m, _ = timed([WISP, "detect", "--at", iso(T - dt.timedelta(hours=1)), "--state", "--lake", lake, "--format", "jsonl", "-o", "/dev/null"])
    res["hourly_state_build"] = {"seconds": round(s, 3), "max_rss_mib": round(m), "rows_read": LAST_SCAN[0][0], "mb_read": LAST_SCAN[0][1]}
    shutil.rmtree(os.path.join(work, "state-prev"), ignore_errors=True)
    shutil.copytree(os.path.join(lake, "_state"), os.path.join(work, "state-prev"))
    res["hourly_state"] = hourly(["--state"])
    shutil.rmtree(os.path.join(lake, "_state"), ignore_errors=True)
    log("hourly run of all rules, first-seen state:", res["hourly_state"], "(state built in", res["hourly_state_build"], ")")

    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    path = os.path.join(ROOT, "benches", "results", f"{a.profile}.json")
    json.dump(res, open(path, "w"), indent=2, default=str)
    print("| detection | window | wisp query s | of it planning s | DuckDB query s | wisp/DuckDB | wisp process s | wisp max RSS MiB | wisp rows read | wisp MB read | rows | equal |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rule, r in res["rules"].items():
        for label, x in r.items():
            eq = "timed out" if x["equal"] is None else ("yes" if x["equal"] else "NO")
            print(f"| {rule} | {label} | {x.get('wisp_query_s', '-')} | {x.get('wisp_planning_s', '-')} | {x['duckdb_s']} | {x['ratio']} | {x['wisp_s']} | {x['wisp_max_rss_mib']} "
                  f"| {x.get('wisp_rows_read', '-')} | {x.get('wisp_mb_read', '-')} | {x['rows']} | {eq} |")
    print(f"\ningest: {res['ingest']}\nhourly, stateless: {res['hourly']}\nhourly, first-seen state: {res['hourly_state']}"
          f" (built in {res['hourly_state_build']})\nresults in {path}")


if __name__ == "__main__":
    main()
