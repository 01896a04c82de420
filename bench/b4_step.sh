#!/usr/bin/env bash
# b4_step.sh — B4: reaction to a load step from 1 to 32 concurrent clients on a
# single-node Sluice (real Docker): time to enough ready instances and the
# over-shoot, against one cold start measured in the same run; once without
# prediction and once with it. Then the repeated step (b4_repeat): the same step
# every minute with the function idle in between, without and with prediction.
# Results: bench/results/b4-off.json, b4-sluice.json, b4_repeat.json.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
REGISTRY_ADDR=127.0.0.1:5000 scripts/registry.sh start >/dev/null
REGISTRY=127.0.0.1:5000 SMOKE=0 scripts/build-images.sh sleep >/dev/null
for policy in off sluice; do
    B4_PREDICT=$policy RUST_LOG="${RUST_LOG:-warn}" cargo run --release --locked -q -p sluice-bench --bin b4_step
done
RUST_LOG="${RUST_LOG:-warn}" cargo run --release --locked -q -p sluice-bench --bin b4_repeat
