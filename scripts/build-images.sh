#!/usr/bin/env bash
#! build-images.sh — builds the example functions (hello, sleep) and the `sluice` binary itself as
#! static binaries and packs each into a Docker image FROM scratch, tagged sluice/<name>:latest.
#! sluice/sluice:latest is what the multi-coordinator tests (tests/src/docker_cluster.rs) run.
#!
#! Usage: scripts/build-images.sh [name...]        (default: hello sleep sluice)
#! Env:
#!   REGISTRY=127.0.0.1:5000   also tag $REGISTRY/sluice/<name>:latest and push it
#!                             (start one with scripts/registry.sh start, which also logs
#!                             Docker in with the registry's credentials)
#!   STATIC_TARGET_DIR=dir     cargo target dir for the static build
#!                             (default $HOME/.cache/sluice/target-static, kept apart from the
#!                             normal CARGO_TARGET_DIR so the two builds do not thrash each other)
#!   SMOKE=0                   skip the smoke test (run each image, probe it, stop it)
#!
#! Each function image holds only /fn, runs as 65534:65534, exposes 8080. The sluice image holds
#! /sluice (its ENTRYPOINT) and an empty /data for --data-dir; it runs as root so it may write
#! there, and exposes 7070 (API), 7071 (Raft) and 8080 (gateway). Safe to re-run.
set -euo pipefail

die() { echo "build-images: error: $*" >&2; exit 1; }
say() { echo "build-images: $*"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET=x86_64-unknown-linux-gnu
STATIC_TARGET_DIR="${STATIC_TARGET_DIR:-$HOME/.cache/sluice/target-static}"
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(hello sleep sluice)

command -v cargo >/dev/null || die "cargo not found; install Rust (https://rustup.rs) and re-run"
command -v docker >/dev/null || die "docker not found; install Docker Engine and re-run"
command -v file >/dev/null || die "'file' not found; run: apt-get update && apt-get install -y file"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon; is it running, and may this user use it?"
# Only build the packages asked for: the sluice binary is by far the slowest to compile.
PACKAGES=()
for name in "${NAMES[@]}"; do
    if [ "$name" = sluice ]; then
        PACKAGES+=(-p sluice-cli --bin sluice)
    else
        [ -f "$ROOT/examples/functions/src/bin/$name.rs" ] ||
            die "no example function '$name' (expected examples/functions/src/bin/$name.rs, or 'sluice')"
        PACKAGES+=(-p sluice-example-functions --bin "$name")
    fi
done
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] ||
    die "static glibc (libc.a) missing; run: apt-get update && apt-get install -y libc6-dev"

say "building static binaries (target dir $STATIC_TARGET_DIR)"
(
    cd "$ROOT"
    CARGO_TARGET_DIR="$STATIC_TARGET_DIR" RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --target "$TARGET" "${PACKAGES[@]}"
) || die "cargo build failed (see above)"

CONTEXT="$(mktemp -d)"
SMOKE_CONTAINER=""
cleanup() {
    rm -rf "$CONTEXT"
    if [ -n "$SMOKE_CONTAINER" ]; then docker rm -f "$SMOKE_CONTAINER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# Runs the image on a random loopback port and checks it answers, then that it stops promptly on
# SIGTERM (it is PID 1 there, so that only works if the binary handles the signal itself).
smoke_test() {
    local image="$1" name="$2" port body start elapsed
    SMOKE_CONTAINER="$(docker run --rm -d -p 127.0.0.1::8080 "$image")" || die "docker run $image failed"
    port="$(docker port "$SMOKE_CONTAINER" 8080/tcp | head -n1 | sed 's/.*://')"
    [ -n "$port" ] || die "$image: could not read the published port of container $SMOKE_CONTAINER"
    for _ in $(seq 50); do
        curl -fsS -m 1 "http://127.0.0.1:$port/_/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    body="$(curl -fsS -m 2 "http://127.0.0.1:$port/_/health")" ||
        die "$image does not answer on 127.0.0.1:$port; logs: $(docker logs "$SMOKE_CONTAINER" 2>&1 | tail -n 20)"
    [ "$body" = ok ] || die "$image: /_/health answered '$body', expected 'ok'"
    if [ "$name" = hello ]; then
        body="$(curl -fsS -m 2 -d sluice "http://127.0.0.1:$port/")" || die "$image: POST / failed"
        [ "$body" = "hello, sluice" ] || die "$image: POST / answered '$body', expected 'hello, sluice'"
    fi
    start=$(date +%s%N)
    docker stop -t 10 "$SMOKE_CONTAINER" >/dev/null
    elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
    SMOKE_CONTAINER=""
    [ "$elapsed" -lt 5000 ] || die "$image took ${elapsed} ms to stop; it is not handling SIGTERM as PID 1"
    say "smoke test $image: answered on 127.0.0.1:$port, stopped in ${elapsed} ms"
}

# The coordinator needs flags and peers to do anything useful, so this only checks that the static
# binary starts at all inside an empty image (no loader, no libc, no /etc).
smoke_test_sluice() {
    local image="$1" out
    out="$(docker run --rm "$image" --version 2>&1)" || die "docker run $image --version failed: $out"
    case "$out" in
        "sluice "*) ;;
        *) die "$image --version printed '$out', expected 'sluice <version>'" ;;
    esac
    say "smoke test $image: --version printed '$out'"
}

for name in "${NAMES[@]}"; do
    bin="$STATIC_TARGET_DIR/$TARGET/release/$name"
    [ -x "$bin" ] || die "expected binary $bin after the build; was it renamed?"
    info="$(file -b "$bin")"
    case "$info" in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) die "$bin is not static ($info); check RUSTFLAGS and that libc6-dev is installed" ;;
    esac
    if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
        die "ldd lists shared libraries for $bin: $(ldd "$bin" 2>&1 | tr '\n' ' ')"
    fi

    rm -rf "${CONTEXT:?}"/*
    if [ "$name" = sluice ]; then
        install -m 0755 "$bin" "$CONTEXT/sluice"
        # FROM scratch has no shell to mkdir with; copying an empty directory creates /data.
        mkdir "$CONTEXT/data"
        cat >"$CONTEXT/Dockerfile" <<'EOF'
FROM scratch
COPY sluice /sluice
COPY data /data
EXPOSE 7070 7071 8080
ENTRYPOINT ["/sluice"]
EOF
    else
        install -m 0755 "$bin" "$CONTEXT/fn"
        cat >"$CONTEXT/Dockerfile" <<'EOF'
FROM scratch
COPY fn /fn
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/fn"]
EOF
    fi
    image="sluice/$name:latest"
    out="$(docker build -t "$image" "$CONTEXT" 2>&1)" || die "docker build of $image failed: $out"
    say "built $image from $bin ($(du -k "$bin" | cut -f1) KiB, ${info%%, for GNU*})"

    if [ "${SMOKE:-1}" != 0 ]; then
        if [ "$name" = sluice ]; then smoke_test_sluice "$image"; else smoke_test "$image" "$name"; fi
    fi

    if [ -n "${REGISTRY:-}" ]; then
        remote="$REGISTRY/sluice/$name:latest"
        docker tag "$image" "$remote"
        docker push "$remote" >/dev/null ||
            die "docker push $remote failed; is the registry up and Docker logged in to it? (scripts/registry.sh start does both)"
        say "pushed $remote"
    fi
done
say "done: ${NAMES[*]}"
