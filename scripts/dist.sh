#!/usr/bin/env bash
# The binary to deploy and to benchmark: the `dist` profile (Cargo.toml) built with the profile
# `scripts/pgo.sh` recorded and committed (pgo/wisp.profdata.xz): LLVM's profile-guided layout,
# inlining and branch order, without the instrumented build and the training (one `dist` build,
# about 40 minutes clean on 2 cores, where `scripts/pgo.sh` takes about 80). Same source, same
# results; only the compiler's choices change (BENCHMARKS.md says what it buys).
#
#   scripts/dist.sh            # builds it and prints the binary's path on stdout
#
# Code changed since the profile was recorded (pgo/recorded.txt names the commit) is built as if it
# had no profile: correct, only without the gain. Record a new one with `scripts/pgo.sh`.
#
# Environment: PGO_TARGET_DIR (default ~/.cache/wisp-pgo-target; its `use` folder, apart from the
# usual target folder because other RUSTFLAGS rebuild every crate).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
TARGET="${PGO_TARGET_DIR:-$HOME/.cache/wisp-pgo-target}/use"
packed=pgo/wisp.profdata.xz
if [ ! -f "$packed" ]; then
  echo "error: $packed is missing: record a profile with scripts/pgo.sh, or build the plain \`cargo build --profile dist\`" >&2
  exit 2
fi
# The profile unpacked under a name of its contents: RUSTFLAGS (and so the build) change exactly
# when the profile does (Cargo does not watch a file named in RUSTFLAGS).
sum="$(sha256sum "$packed" | cut -c1-16)"
profile="$TARGET/profiles/wisp-$sum.profdata"
if [ ! -f "$profile" ]; then
  mkdir -p "$TARGET/profiles"
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$packed" >"$profile.tmp"
  mv "$profile.tmp" "$profile"
fi
RUSTFLAGS="-Cprofile-use=$profile" cargo build --profile dist --locked --bin wisp --target-dir "$TARGET" >&2
echo "$TARGET/dist/wisp"
