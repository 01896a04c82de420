#!/usr/bin/env bash
# test.sh — Sluice's whole test suite on a fresh machine: starts the local
# registry and the message brokers (tansu for Kafka, mosquitto for MQTT; the
# first run builds tansu, ~20 minutes, cached after), builds and pushes the
# example function images, then runs every unit, conformance and end-to-end test
# against the real Docker Engine and brokers, after rustfmt and clippy. The brokers are stopped at the end.
# The registry asks for credentials: its file (scripts/registry.sh credentials) is exported as
# SLUICE_REGISTRY_CREDENTIALS, which the tests give every coordinator and agent they start.
#
# Usage: scripts/test.sh [extra cargo test args]
# Env:   CARGO_TARGET_DIR  build cache (default $HOME/.cache/sluice/target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export REGISTRY="${REGISTRY:-127.0.0.1:5000}"

say() { echo "test: $*"; }

scripts/prereqs.sh --browser   # and Chromium with chromedriver, for tests/tests/ui.rs

say "starting the registry on $REGISTRY"
REGISTRY_ADDR="$REGISTRY" scripts/registry.sh start
SLUICE_REGISTRY_CREDENTIALS="$(REGISTRY_ADDR="$REGISTRY" scripts/registry.sh credentials)"
export SLUICE_REGISTRY_CREDENTIALS
say "starting the message brokers"
scripts/brokers.sh start
trap 'scripts/brokers.sh stop || true' EXIT
say "building the example function images"
scripts/build-images.sh   # hello, sleep, and sluice (the coordinator image the cluster tests run)
# The multi-coordinator process tests run this same static build of sluice.
export SLUICE_BIN="${STATIC_TARGET_DIR:-$HOME/.cache/sluice/target-static}/x86_64-unknown-linux-gnu/release/sluice"

say "checking the systemd units"
scripts/verify-units.sh
# The debug sluice verify-units.sh just built goes into the .deb: no release build here.
say "packaging the .deb, installing and purging it"
scripts/test-deb.sh

say "checking the code with rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -q -- -D warnings

say "running the tests"
cargo test --workspace --locked "$@" -- --test-threads 2
say "dashboard screenshots (tests/tests/ui.rs): $ROOT/target/ui-screenshots"
