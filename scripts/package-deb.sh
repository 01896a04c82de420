#!/usr/bin/env bash
# package-deb.sh — builds the sluice .deb (cli/Cargo.toml, [package.metadata.deb])
# with cargo-deb and checks it with lintian; the .deb's path is the last line printed.
#
# Usage: scripts/package-deb.sh [--binary PATH] [--out DIR]
#   (none)         a release build of sluice-cli, packaged as built
#   --binary PATH  package this sluice binary instead of building one (scripts/test-deb.sh
#                  passes the static build, or a debug build: minutes instead of a release build)
#   --out DIR      where the .deb goes (default $CARGO_TARGET_DIR/debian)
# Env:   CARGO_TARGET_DIR  build cache (default $HOME/.cache/sluice/target)
#
# cargo-deb is installed from crates.io into ~/.cache/sluice/tools on first use
# (a few minutes), lintian from Debian. Lintian must report no error or warning;
# the one warning left, initial-upload-closes-no-bugs, is overridden in
# packaging/deb/lintian-overrides (shipped in the package) with its reason.
# At info level (`lintian -I --pedantic`) it also says, and we leave as they are:
#   hardening-no-fortify-functions  Rust code has no _FORTIFY_SOURCE calls to make
#   no-md5sums-control-file         cargo-deb writes none; dpkg checks the .deb as a whole
#   package-supports-alternative-init-but-no-init.d-script
#                                   the units are systemd's only: Type=notify has no sysvinit peer
#   spelling-error-in-binary        strings inside dependencies' code, not ours
# It runs as root here (CI and throwaway machines), which lintian remarks on.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
TOOLS="$HOME/.cache/sluice/tools"
CARGO_DEB_VERSION=3.8.0

say() { echo "package-deb: $*" >&2; }

binary=""
out="$CARGO_TARGET_DIR/debian"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$(realpath "$2")"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR]" >&2; exit 2 ;;
    esac
done

if [ "$("$TOOLS/bin/cargo-deb" --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    say "installing cargo-deb $CARGO_DEB_VERSION into $TOOLS"
    # Its own target directory: the tool's build is not the project's.
    CARGO_TARGET_DIR="$TOOLS/build" cargo install --locked --quiet --root "$TOOLS" cargo-deb --version "$CARGO_DEB_VERSION"
    rm -rf "$TOOLS/build"
fi
missing=()
command -v lintian >/dev/null || missing+=(lintian)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$out"
if [ -n "$binary" ]; then
    [ -x "$binary" ] || { say "no executable at $binary"; exit 1; }
    # cargo-deb takes the binary from <target dir>/release: give it one that holds only this.
    stage="$(mktemp -d)"
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/release"
    cp "$binary" "$stage/release/sluice"
    say "packaging $binary"
    CARGO_TARGET_DIR="$stage" "$TOOLS/bin/cargo-deb" -p sluice-cli --no-build --locked --output "$out" >/dev/null
else
    say "building sluice (release) and packaging it"
    "$TOOLS/bin/cargo-deb" -p sluice-cli --locked --output "$out" >/dev/null
fi
deb="$(ls -t "$out"/sluice_*.deb | head -1)"

say "lintian $deb"
# Errors and warnings fail; the overrides shipped in the package say why each is kept.
lintian --fail-on error,warning "$deb" >&2
echo "$deb"
