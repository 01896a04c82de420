#!/usr/bin/env bash
# b4_step.sh — B4: reaction to a load step from 1 to 32 concurrent clients on a
# single-node Sluice (real Docker): time to enough ready instances and the
# over-shoot, against one cold start measured in the same run.
# Results: bench/results/b4.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
REGISTRY_ADDR=127.0.0.1:5000 scripts/registry.sh start >/dev/null
REGISTRY=127.0.0.1:5000 SMOKE=0 scripts/build-images.sh sleep >/dev/null
RUST_LOG="${RUST_LOG:-warn}" cargo run --release --locked -q -p sluice-bench --bin b4_step
