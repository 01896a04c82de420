#!/usr/bin/env bash
# b8_sim.sh — B8: the keep-warm policies replayed on a real invocation trace, all in one
# `sluice sim` run per case: fixed 10-minute keep-alive, the hybrid histogram policy of
# "Serverless in the Wild" (ATC'20), Sluice's model and a clairvoyant oracle (a floor).
# Cases: the shared 250-function Azure 2019 trace at three learn/score splits, then
# synthetic traces with known patterns (periodic, bursty, diurnal, random, one-off,
# mix), where Sluice also runs at higher `worth` to compare at matched memory.
# Prints each table and its sluice/hybrid ratios; JSON per case under bench/results/b8/.
# Usage: bench/b8_sim.sh [TRACE_DIR]   (default ../shared/traces/azure-functions-2019-250)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
TRACE="${1:-$ROOT/../shared/traces/azure-functions-2019-250}"
[ -d "$TRACE" ] || { echo "b8: no trace directory at $TRACE: give one as the first argument" >&2; exit 1; }
cargo build --release --locked -q -p sluice-cli
SLUICE="$CARGO_TARGET_DIR/release/sluice"
OUT="$ROOT/bench/results/b8"
mkdir -p "$OUT"
for learn in 0.5 0.25 0.75; do
    echo "== $(basename "$TRACE"), learning on the first ${learn} of the minutes"
    "$SLUICE" sim --trace "$TRACE" --learn "$learn"
    "$SLUICE" sim --trace "$TRACE" --learn "$learn" --json > "$OUT/trace-learn-$learn.json" 2>/dev/null
done
for pattern in periodic bursty diurnal random one-off mix; do
    echo "== synthetic $pattern (200 functions, a day, seed 1)"
    args=(--synthetic "$pattern" --policy fixed-10m --policy hybrid --policy sluice --policy sluice:worth=1 --policy sluice:worth=3 --policy oracle)
    "$SLUICE" sim "${args[@]}"
    "$SLUICE" sim "${args[@]}" --json > "$OUT/synthetic-$pattern.json" 2>/dev/null
done
