#!/usr/bin/env bash
# test.sh — Sluice's whole test suite on a fresh machine: starts the local
# registry, builds and pushes the example function images, then runs every
# unit, conformance and end-to-end test against the real Docker Engine.
#
# Usage: scripts/test.sh [extra cargo test args]
# Env:   CARGO_TARGET_DIR  build cache (default $HOME/.cache/sluice/target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export REGISTRY="${REGISTRY:-127.0.0.1:5000}"

die() { echo "test: error: $*" >&2; exit 1; }
say() { echo "test: $*"; }

command -v cargo >/dev/null || die "cargo not found; install Rust and re-run"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable; start it (the end-to-end tests need it) and re-run"
if ! command -v curl >/dev/null || ! command -v file >/dev/null; then
    say "installing curl and file"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl file >/dev/null
fi

say "starting the registry on $REGISTRY"
REGISTRY_ADDR="$REGISTRY" scripts/registry.sh start
say "building the example function images"
scripts/build-images.sh

say "checking the systemd units"
scripts/verify-units.sh

say "running the tests"
cargo test --workspace --locked "$@" -- --test-threads 2
