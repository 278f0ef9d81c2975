#!/usr/bin/env bash
# Records the profile that the binary to deploy is built with (`scripts/dist.sh`): `dist`
# (Cargo.toml) built once instrumented, run over a training workload, the counts merged and
# written to pgo/wisp.profdata.xz (with pgo/recorded.txt: the commit and compiler they are of),
# then the binary built with them by `scripts/dist.sh` (rustc's `-Cprofile-generate` /
# `-Cprofile-use`, LLVM's PGO). Same source, same results; only the compiler's choices of layout,
# inlining and branch order change (BENCHMARKS.md says what it buys). Commit the two files.
#
#   scripts/pgo.sh                   # records the profile, builds with it, prints the binary's path
#
# The training is every command's hot path on generated tenants that the benchmarks do not use
# (seeds 1001-1004; the benchmarks' are seed 42): ingest of a medium day of raw JSON lines and of
# small days (plain and gzip, one and two mapping threads), `gen --as lake`, `compact`, every
# detection's scheduled run and backtest, every hunt, a SQL query. Functions it never runs are
# left out of the profile (`llvm-profdata merge --sparse`: 14 MB, not 86) and built as without one.
#
# Needs the rustup component `llvm-tools` (installed below when missing) for `llvm-profdata` of
# the compiler's own LLVM. Two clean `dist` builds: about 80 minutes on 2 cores. Environment:
# PGO_TARGET_DIR (default ~/.cache/wisp-pgo-target, apart from the usual target folder: other
# RUSTFLAGS rebuild everything), PGO_WORK (default /tmp/wisp-pgo: training data and profiles).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${PGO_TARGET_DIR:-$HOME/.cache/wisp-pgo-target}"
WORK="${PGO_WORK:-/tmp/wisp-pgo}"
export CARGO_TERM_COLOR=never

sysroot="$(rustc --print sysroot)"
host="$(rustc -vV | sed -n 's/^host: //p')"
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "installing the rustup component llvm-tools (llvm-profdata)" >&2
  rustup component add llvm-tools
fi

rm -rf "$WORK"
mkdir -p "$WORK"
echo "1/4 instrumented build ($TARGET/pgo-gen)" >&2
RUSTFLAGS="-Cprofile-generate=$WORK/profiles" \
  cargo build --profile dist --bin wisp --target-dir "$TARGET/pgo-gen"
B="$TARGET/pgo-gen/dist/wisp"

echo "2/4 training ($WORK)" >&2
t="$WORK/tenant"
# A medium day (1.2 GB of JSON lines) for ingest's steady state, small days for the rest.
"$B" gen --profile medium --days 1 --seed 1001 --no-gzip --no-progress --out "$t/day" >/dev/null
"$B" ingest --threads 1 --compact-after 0 --no-progress --lake "$WORK/lake1" --asn-db "$t/day/asn.csv" "$t/day/raw" >/dev/null
rm -rf "$t/day/raw"
"$B" gen --profile small --days 3 --seed 1002 --no-gzip --no-progress --out "$t/plain" >/dev/null
"$B" gen --profile small --days 1 --seed 1003 --no-progress --out "$t/gz" >/dev/null
asn="$t/plain/asn.csv"
"$B" ingest --threads 2 --no-progress --lake "$WORK/lake2" --asn-db "$asn" "$t/plain/raw" >/dev/null
"$B" ingest --no-progress --lake "$WORK/lake2" --asn-db "$t/gz/asn.csv" "$t/gz/raw" >/dev/null
"$B" compact --lake "$WORK/lake2" >/dev/null
"$B" gen --profile small --days 2 --seed 1004 --as lake --no-progress --out "$t/lake" >/dev/null
L="$WORK/lake2"
"$B" detect --lake "$L" --asn-db "$asn" --from 2026-11-18T00:00:00Z --to 2026-11-20T00:00:00Z --format jsonl >/dev/null
"$B" detect --lake "$L" --asn-db "$asn" --at 2026-11-19T12:00:00Z --state --format jsonl >/dev/null
"$B" detect --lake "$L" --asn-db "$asn" --at 2026-11-19T13:00:00Z --state --format jsonl >/dev/null
"$B" rules list | awk '{print $1}' | while read -r rule; do
  "$B" hunt "$rule" --lake "$L" --asn-db "$asn" --at 2026-11-19T18:00:00Z --format csv >/dev/null
  "$B" hunt "$rule" --lake "$t/lake/lake" --asn-db "$t/lake/asn.csv" --from 2026-11-18T00:00:00Z \
    --to 2026-11-20T00:00:00Z --format jsonl >/dev/null
done
"$B" sql --lake "$L" --format csv \
  "SELECT service_principal_id, count(*) AS n, count(DISTINCT source_ip) AS ips FROM signins GROUP BY 1 ORDER BY n DESC LIMIT 20" >/dev/null

echo "3/4 merging the profiles into pgo/wisp.profdata.xz" >&2
"$profdata" merge --sparse -o "$WORK/wisp.profdata" "$WORK/profiles"
xz -9 -c "$WORK/wisp.profdata" >pgo/wisp.profdata.xz.tmp
mv pgo/wisp.profdata.xz.tmp pgo/wisp.profdata.xz
{
  echo "commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!pgo' || echo ' (with uncommitted changes)')"
  echo "recorded: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "rustc: $(rustc -V)"
} >pgo/recorded.txt

echo "4/4 optimized build (scripts/dist.sh)" >&2
scripts/dist.sh
