#!/usr/bin/env bash
# b2_paused.sh — B2: an invocation of a function whose only instance is paused
# (frozen by a rule's pause_idle) against the same function hot, same run, on a
# single-node Sluice (real Docker), with where the paused invocation's time goes.
# Env: ROUNDS (default 30). Results: bench/results/b2.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
REGISTRY_ADDR=127.0.0.1:5000 scripts/registry.sh start >/dev/null
REGISTRY=127.0.0.1:5000 SMOKE=0 scripts/build-images.sh hello >/dev/null
RUST_LOG="${RUST_LOG:-warn}" cargo run --release --locked -q -p sluice-bench --bin b2_paused
