#!/usr/bin/env bash
# b9_ingest.sh — B9: samples/s from Kafka into the coordinator's windows, beside the same
# messages through the in-process bus and the bare windows (same run). Starts the Kafka
# broker if needed (scripts/brokers.sh). Results: bench/results/b9.json.
# Arguments go to the binary: --nodes 20 --containers 50 --seconds 60 --kafka 127.0.0.1:9092
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
scripts/brokers.sh start kafka
RUST_LOG="${RUST_LOG:-warn}" cargo run --release --locked -q -p sluice-bench --bin b9_ingest -- "$@"
