#!/usr/bin/env python3
"""A lake in an object store against the same lake on local disk: time, requests, bytes.

    python3 benches/object_store.py --lake /tmp/wisp-compact-med --work /tmp/wisp-os-bench

Starts the S3 emulator (`moto_server`, in memory) on a free loopback port, then:
  1. detection: uploads the Parquet lake given by --lake (a medium lake from `wisp gen --as lake`)
     and runs every detection's backtest over its whole range (`wisp detect --from --to`) on the
     local lake and on the remote one, with WISP_STORE_STATS=1 (requests by kind, MB fetched);
  2. ingest: generates raw exports (--ingest-profile, --ingest-days), uploads them, and
     ingests them from the bucket into a lake in the bucket, beside the same ingest from local disk
     into a local lake.
Both sides must give the same alerts and row counts (checked). Writes
benches/results/object-store.json and prints a Markdown table. Needs `pip install 'moto[server]'`.
"""
import argparse, concurrent.futures, json, os, platform, shutil, socket, subprocess, sys, time

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


def timed(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True, env=env)
    secs = time.perf_counter() - t0
    if p.returncode not in (0, 3):
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    lines = p.stderr.strip().splitlines()
    stats = next((l for l in lines if l.startswith("object store: ")), "")
    return {"seconds": round(secs, 2), "max_rss_mib": round(int(lines[-1]) / 1024), "store": stats}, p.stdout


def upload(s3, bucket, folder, prefix):
    files = []
    for d, _, fs in os.walk(folder):
        for f in fs:
            full = os.path.join(d, f)
            files.append((full, prefix + "/" + os.path.relpath(full, folder)))
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda f: s3.upload_file(f[0], bucket, f[1]), files))
    return len(files), sum(os.path.getsize(f[0]) for f in files)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True, help="a local Parquet lake to upload (e.g. a medium lake)")
    ap.add_argument("--work", default="/tmp/wisp-os-bench")
    ap.add_argument("--from", dest="frm", default="2026-10-21T00:00:00Z")
    ap.add_argument("--to", default="2026-11-20T00:00:00Z")
    ap.add_argument("--ingest-profile", default="small", choices=["small", "medium", "large"])
    ap.add_argument("--ingest-days", type=int, default=30)
    ap.add_argument("--skip-detect", action="store_true", help="only the ingest step")
    a = ap.parse_args()
    import boto3  # installed with moto[server]

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    port = free_port()
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = dict(os.environ, AWS_ENDPOINT=endpoint, AWS_ALLOW_HTTP="true", AWS_ACCESS_KEY_ID="test",
               AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1", WISP_STORE_STATS="1")
    res = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
           "lake": a.lake, "range": [a.frm, a.to]}
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.2)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
        s3.create_bucket(Bucket="bench")
        t0 = time.perf_counter()
        n, size = upload(s3, "bench", a.lake, "lake") if not a.skip_detect else (0, 0)
        res["upload"] = {"files": n, "mb": round(size / 1e6, 1), "seconds": round(time.perf_counter() - t0, 1)}
        log("uploaded:", res["upload"])

        # 1. Every detection's backtest over the range.
        if not a.skip_detect:
            detect = [WISP, "detect", "--from", a.frm, "--to", a.to, "--format", "jsonl", "--lake"]
            local, out_l = timed(detect + [a.lake], env)
            remote, out_r = timed(detect + ["s3://bench/lake"], env)
            ids = lambda out: sorted(json.loads(l)["alert_id"] for l in out.splitlines() if l.strip())
            assert ids(out_l) == ids(out_r), "remote and local alerts differ"
            res["detect"] = {"local": local, "remote": remote, "alerts": len(ids(out_l))}
            log("detect:", res["detect"])

        # 2. Ingest of the small profile's raw exports.
        gen = os.path.join(a.work, "gen")
        subprocess.run([WISP, "gen", "--profile", a.ingest_profile, "--days", str(a.ingest_days), "--no-progress", "--out", gen],
                       check=True, capture_output=True)
        raw = os.path.join(gen, "raw")
        n, size = upload(s3, "bench", raw, "raw")
        res["ingest_input"] = {"profile": a.ingest_profile, "days": a.ingest_days, "files": n, "mb_gzip": round(size / 1e6, 1)}
        ingest = [WISP, "ingest", "--no-progress", "--asn-db", os.path.join(gen, "asn.csv"), "--lake"]
        local_lake = os.path.join(a.work, "ingested")
        li, _ = timed(ingest + [local_lake, raw], env)
        ri, _ = timed(ingest + ["s3://bench/ingested", "s3://bench/raw/"], env)
        q = "SELECT count(*) AS n FROM signins"
        count = lambda lake: subprocess.run([WISP, "sql", "--format", "csv", "--lake", lake, q], env=env,
                                            capture_output=True, text=True, check=True).stdout
        assert count(local_lake) == count("s3://bench/ingested"), "remote and local lakes differ"
        res["ingest"] = {"local": li, "remote": ri}
        log("ingest:", res["ingest"])
    finally:
        moto.kill()

    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    name = "object-store.json" if not a.skip_detect else f"object-store-ingest-{a.ingest_profile}.json"
    path = os.path.join(ROOT, "benches", "results", name)
    json.dump(res, open(path, "w"), indent=2)
    print("| step | where | wall s | max RSS MiB | requests and bytes (WISP_STORE_STATS) |\n|---|---|---|---|---|")
    for step in [k for k in ("detect", "ingest") if k in res]:
        for where in ("local", "remote"):
            r = res[step][where]
            print(f"| {step} | {where} | {r['seconds']} | {r['max_rss_mib']} | {r['store'] or '—'} |")
    print(f"\nresults in {path}")


if __name__ == "__main__":
    main()
