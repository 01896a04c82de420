#!/usr/bin/env bash
# b6_decide.sh — B6: decisions with 1,000 hosts and 10,000 functions, 3 coordinators
# in one process on loopback with fsync on (logs under $HOME/.cache/sluice/b6, a real
# disk). Times a full decision tick and placements/s including the Raft commit, against
# Nomad's published 1,500-3,750 placements/s. Results: bench/results/b6.json.
# Arguments go to the binary: --nodes 1000 --functions 10000 --ticks 5 --dir DIR.
# No Docker needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
RUST_LOG="${RUST_LOG:-warn}" cargo run --release --locked -q -p sluice-bench --bin b6_decide -- "$@"
