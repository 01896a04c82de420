#!/usr/bin/env bash
# b7_raft.sh — B7: Raft among 3 `sluice coordinator` processes on loopback, fsync on.
# Same run: the filesystem's raw fsync rate and a sequential client (references),
# committed writes/s with batching and with --raft-max-batch 1, and leader failover
# (SIGKILL the leader, time to a new leader and to the first committed write, catch-up
# of the restarted one, no acknowledged write lost). Results: bench/results/b7.json.
# Arguments go to the binary (bench/b7_raft.sh --help): --seconds 10 --clients 64 --kills 20 ...
# Data directories default to $HOME/.cache/sluice/b7 (--dir): it must be a real disk, not tmpfs.
# No Docker or registry needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
cargo build --release --locked -q -p sluice-cli
export SLUICE="${SLUICE:-$CARGO_TARGET_DIR/release/sluice}"
RUST_LOG="${RUST_LOG:-warn}" cargo run --release --locked -q -p sluice-bench --bin b7_raft -- "$@"
