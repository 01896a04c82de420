#!/usr/bin/env bash
# up.sh — Sluice on this machine in one command: starts the local registry,
# builds the example images and the sluice binary, then runs `sluice up`
# (coordinator, gateway and agent in one process, on local Docker) with
# --registry-credentials set to the registry's credentials file, so the agent
# pulls and the coordinator pins images from the registry, which asks for them.
#
# Usage: scripts/up.sh [sluice up flags], e.g. --gateway 127.0.0.1:8080
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export REGISTRY="${REGISTRY:-127.0.0.1:5000}"

scripts/prereqs.sh
REGISTRY_ADDR="$REGISTRY" scripts/registry.sh start
CREDENTIALS="$(REGISTRY_ADDR="$REGISTRY" scripts/registry.sh credentials)"
scripts/build-images.sh
cargo build --release --locked -p sluice-cli
echo "up: sluice binary: $CARGO_TARGET_DIR/release/sluice"
echo "up: try: $CARGO_TARGET_DIR/release/sluice deploy hello --image $REGISTRY/sluice/hello:latest"
echo "up: build your own: SLUICE_REGISTRY_CREDENTIALS=$CREDENTIALS $CARGO_TARGET_DIR/release/sluice deploy NAME --build DIR"
exec "$CARGO_TARGET_DIR/release/sluice" up --registry-credentials "$CREDENTIALS" "$@"
