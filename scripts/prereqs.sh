#!/usr/bin/env bash
# prereqs.sh — checks the tools the run and test commands need, and installs the
# Debian packages that are missing (curl, file, iptables: the fault tests cut
# links between containers with it; fuse3 for the power-cut test's disk; with
# --browser, chromium and chromium-driver for the dashboard's browser test, which
# scripts/test.sh asks for and scripts/up.sh does not). Docker and Rust must be there.
#
# Usage: scripts/prereqs.sh [--browser]
set -euo pipefail

die() { echo "prereqs: error: $*" >&2; exit 1; }

BROWSER=0
case "${1:-}" in
    "") ;;
    --browser) BROWSER=1 ;;
    *) die "usage: $0 [--browser]" ;;
esac

command -v cargo >/dev/null || die "cargo not found; install Rust (rustup) and re-run"
command -v docker >/dev/null || die "docker not found; install Docker Engine and re-run"
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable; start it and re-run"
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v file >/dev/null || missing+=(file)
command -v iptables >/dev/null || missing+=(iptables)
# The fault tests probe across their cuts from inside the containers' network namespaces.
command -v nsenter >/dev/null || missing+=(util-linux)
# The power-cut test mounts a FUSE file system.
command -v fusermount3 >/dev/null || missing+=(fuse3)
# The dashboard's browser test (tests/tests/ui.rs) drives headless Chromium through chromedriver.
if [ "$BROWSER" = 1 ]; then
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
fi
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    echo "prereqs: installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
