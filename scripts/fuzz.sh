#!/usr/bin/env bash
# Longer fuzzing than CI's bounded run: scripts/fuzz.sh [cases] [seed]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wisp-target}"
WISP_FUZZ_CASES="${1:-20000}" WISP_FUZZ_SEED="${2:-$RANDOM$RANDOM}" cargo test --release --test fuzz -- --nocapture
