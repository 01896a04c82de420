#!/usr/bin/env bash
# test-deb.sh — installs the sluice .deb on this machine, checks what it put
# there, then removes and purges it and checks that nothing is left: no file,
# no user. Needs root (dpkg); for throwaway machines and CI, where test.sh runs it.
#
# Usage: scripts/test-deb.sh [--binary PATH]
#   --binary PATH  the sluice binary to package (test.sh passes the static release
#                  build it already has); default: a debug build, so that the test
#                  costs no release build. Packaging and lintian are the same either way.
# Env:   CARGO_TARGET_DIR  build cache (default $HOME/.cache/sluice/target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"

say() { echo "test-deb: $*"; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }

binary=""
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        *) echo "usage: $0 [--binary PATH]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || fail "needs root for dpkg -i"
if dpkg -s sluice >/dev/null 2>&1; then
    fail "sluice is installed already; this test installs and purges it, so run it where that is fine"
fi
getent passwd sluice >/dev/null && fail "a sluice user exists already; the test checks the package makes and removes it"

if [ -z "$binary" ]; then
    say "building sluice (debug)"
    cargo build --locked -q -p sluice-cli
    binary="$CARGO_TARGET_DIR/debug/sluice"
fi
work="$(mktemp -d)"
# A failed check must not leave the package (and its user) behind: the next run
# would refuse to start on this machine.
cleanup() {
    if dpkg -s sluice >/dev/null 2>&1; then dpkg -P sluice >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
deb="$(scripts/package-deb.sh --binary "$binary" --out "$work" | tail -1)"
say "testing $deb"

# Everything under the places a package may touch, to compare after the purge.
snapshot() {
    find /etc /usr /lib /var/lib -xdev \
        -path /var/lib/dpkg -prune -o -path /var/lib/apt -prune -o -path /var/lib/docker -prune -o \
        -path /var/lib/containerd -prune -o -print 2>/dev/null | sort
}
snapshot > "$work/before"

say "dpkg -i"
dpkg -i "$deb" >/dev/null
[ "$(/usr/bin/sluice --version)" = "sluice $(dpkg-deb -f "$deb" Version | cut -d- -f1)" ] || fail "/usr/bin/sluice --version says: $(/usr/bin/sluice --version)"
for unit in sluice-coordinator sluice-agent; do
    f="/usr/lib/systemd/system/$unit.service"
    [ -f "$f" ] || fail "$f is not installed"
    grep -q '^ExecStart=/usr/bin/sluice ' "$f" || fail "$f does not start /usr/bin/sluice"
    grep -q '^Type=notify$' "$f" || fail "$f is not Type=notify"
done
# The installed units as they are, with the installed binary.
if out="$(systemd-analyze verify /usr/lib/systemd/system/sluice-coordinator.service /usr/lib/systemd/system/sluice-agent.service 2>&1 | grep -v docker.service)"; then
    fail "systemd-analyze verify on the installed units: $out"
fi
getent passwd sluice >/dev/null || fail "no sluice user after install"
getent group sluice >/dev/null || fail "no sluice group after install"
[ "$(getent passwd sluice | cut -d: -f7)" = /usr/sbin/nologin ] || fail "the sluice user has a login shell: $(getent passwd sluice)"
id -nG sluice | tr ' ' '\n' | grep -qx docker && fail "the sluice user is in the docker group (only sluice-agent.service gets it)"
[ "$(stat -c '%U:%G %a' /etc/sluice)" = "root:sluice 750" ] || fail "/etc/sluice is $(stat -c '%U:%G %a' /etc/sluice), not root:sluice 750"
for doc in copyright changelog.Debian.gz README.md; do
    [ -f "/usr/share/doc/sluice/$doc" ] || fail "/usr/share/doc/sluice/$doc is missing"
done
[ -f /usr/share/man/man1/sluice.1.gz ] || fail "no man page"
for config in coordinator agent; do
    f="/etc/sluice/$config.toml"
    [ -f "$f" ] || fail "$f is not installed"
    grep -qx "$f" /var/lib/dpkg/info/sluice.conffiles || fail "$f is not a conffile (an upgrade would overwrite local edits)"
    out="$(/usr/bin/sluice config check "$f" 2>&1)" || fail "the installed $f does not pass sluice config check: $out"
done

say "dpkg -i again (an upgrade in place keeps working)"
dpkg -i "$deb" >/dev/null

# What a coordinator would leave behind: its state directory (systemd makes it).
install -d -o sluice -g sluice -m 0700 /var/lib/sluice
echo state > /var/lib/sluice/raft.redb

say "dpkg -r"
dpkg -r sluice >/dev/null
[ -e /usr/bin/sluice ] && fail "/usr/bin/sluice is still there after dpkg -r"
[ -e /usr/lib/systemd/system/sluice-coordinator.service ] && fail "the coordinator unit is still there after dpkg -r"
getent passwd sluice >/dev/null || fail "dpkg -r removed the sluice user (only a purge should)"
[ -f /var/lib/sluice/raft.redb ] || fail "dpkg -r removed the coordinator's state (only a purge should)"

say "dpkg -P"
dpkg -P sluice >/dev/null
dpkg -s sluice >/dev/null 2>&1 && fail "sluice is still known to dpkg after the purge"
getent passwd sluice >/dev/null && fail "the sluice user is still there after the purge"
getent group sluice >/dev/null && fail "the sluice group is still there after the purge"
snapshot > "$work/after"
if ! diff -u "$work/before" "$work/after" > "$work/diff"; then
    fail "files left or removed by install and purge:"$'\n'"$(cat "$work/diff")"
fi
say "installed, upgraded in place, removed and purged cleanly"
