#!/usr/bin/env bash
# faults.sh — the long fault campaigns against a three-coordinator cluster in
# containers: the same tests as the suite's tests/tests/faults.rs, with the
# counts of the reliability reference (R1: 20+ leader kills, R4: 50+ SIGKILLs,
# R2: minutes of random faults and 1,000+ operations). Prints each campaign's
# figures and R2's fault seed and per-kind counts (every kind happens, each
# proven by a probe across it); takes about 15 minutes.
#
# Usage: scripts/faults.sh [r1|r2|r3|r4|r5 ...]     (default: all)
# Env:   SLUICE_R1_KILLS (25), SLUICE_R4_KILLS (60), SLUICE_R2_SECS (300),
#        SLUICE_R2_MIN_OPS (1000), SLUICE_R2_MIN_ADDS (500: acknowledged set adds),
#        SLUICE_FAULT_SEED (random; printed as "fault seed: N", replays R2's choices)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export SLUICE_R1_KILLS="${SLUICE_R1_KILLS:-25}"
export SLUICE_R4_KILLS="${SLUICE_R4_KILLS:-60}"
export SLUICE_R2_SECS="${SLUICE_R2_SECS:-300}"
export SLUICE_R2_MIN_OPS="${SLUICE_R2_MIN_OPS:-1000}"
export SLUICE_R2_MIN_ADDS="${SLUICE_R2_MIN_ADDS:-500}"

CAMPAIGNS=("$@")
[ ${#CAMPAIGNS[@]} -gt 0 ] || CAMPAIGNS=(r1 r2 r3 r4 r5)

scripts/prereqs.sh
echo "faults: building the coordinator image (the campaigns run it, not the workspace)"
scripts/build-images.sh sluice
for c in "${CAMPAIGNS[@]}"; do
    echo "faults: campaign $c"
    cargo test --locked -p sluice-tests --test faults -- "${c}_" --nocapture --test-threads 1 2>&1 |
        grep -E '^(R[0-9]|fault seed|test |Error|error|---)' || { echo "faults: campaign $c FAILED (rerun it alone for the full output)"; exit 1; }
done
