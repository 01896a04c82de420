#!/usr/bin/env bash
# b1_cold_start.sh — B1: Sluice cold invocation vs raw Docker create+start+first
# response of the same image, same run. Env: ROUNDS (default 15).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
REGISTRY_ADDR=127.0.0.1:5000 scripts/registry.sh start >/dev/null
REGISTRY=127.0.0.1:5000 SMOKE=0 scripts/build-images.sh hello >/dev/null
RUST_LOG="${RUST_LOG:-warn}" cargo run --release --locked -q -p sluice-bench --bin b1_cold_start
