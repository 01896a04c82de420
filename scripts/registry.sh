#!/usr/bin/env bash
#! registry.sh — a local Docker registry for Sluice images, from Debian's docker-registry package,
#! run as a plain background process (no systemd needed).
#!
#! Usage: scripts/registry.sh start|stop|status
#! Env:   REGISTRY_ADDR=host:port   listen address (default 127.0.0.1:5000)
#!
#! Files: $HOME/.cache/sluice/registry/{config.yml,data/,registry.pid,registry.log}
#! `start` installs the package if needed (apt-get, as root), writes the config, starts the
#! registry and waits until GET /v2/ answers; it does nothing if the registry already answers.
#! Docker already allows plain HTTP to registries on 127.0.0.0/8, so then e.g.
#!   REGISTRY=127.0.0.1:5000 scripts/build-images.sh
set -euo pipefail
# shellcheck source=lib/daemon.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/daemon.sh"

ADDR="${REGISTRY_ADDR:-127.0.0.1:5000}"
DIR="$HOME/.cache/sluice/registry"
CONFIG="$DIR/config.yml"
DATA="$DIR/data"
PIDFILE="$DIR/registry.pid"
LOG="$DIR/registry.log"
START_TIMEOUT=20

die() { echo "registry: error: $*" >&2; exit 1; }
say() { echo "registry: $*"; }

# True when GET /v2/ answers 200 (an open registry; 401 would be someone else's, with auth).
answering() { curl -fsS -m 2 -o /dev/null "http://$ADDR/v2/" 2>/dev/null; }

our_pid() { daemon_pid "$PIDFILE" docker-registry; }

ensure_installed() {
    command -v docker-registry >/dev/null && return 0
    [ "$(id -u)" = 0 ] ||
        die "docker-registry is not installed; run: sudo apt-get update && sudo apt-get install -y docker-registry"
    say "installing Debian's docker-registry package"
    apt-get update -qq || die "apt-get update failed; check the apt sources and network"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry >/dev/null ||
        die "apt-get install docker-registry failed; try it by hand to see why"
    command -v docker-registry >/dev/null || die "docker-registry still not on PATH after installing it"
    if [ "$(ps -p 1 -o comm=)" = systemd ] && systemctl is-active -q docker-registry 2>/dev/null; then
        say "note: the package also started its own service (docker-registry.service, :5000, with auth);"
        say "      stop it with 'systemctl disable --now docker-registry' if it is in the way"
    fi
}

write_config() {
    local secret
    mkdir -p "$DATA"
    # Signs upload state; any value works for a single registry.
    secret="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    cat >"$CONFIG" <<EOF
# Written by scripts/registry.sh; rewritten on every start.
version: 0.1
log:
  level: info
  fields:
    service: sluice-registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $DATA
  delete:
    enabled: true
http:
  addr: $ADDR
  secret: $secret
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
}

start() {
    local pid waited=0
    if answering; then
        if pid="$(our_pid)"; then
            say "already running (pid $pid) at http://$ADDR"
        else
            say "a registry already answers at http://$ADDR (not started by this script); leaving it"
        fi
        return 0
    fi
    ensure_installed
    if pid="$(our_pid)"; then
        die "registry pid $pid is running but http://$ADDR/v2/ does not answer; run '$0 stop' then '$0 start' (log: $LOG)"
    fi
    write_config
    # REGISTRY_ADDR is ours; the registry would read REGISTRY_* variables as config overrides.
    daemon_launch "$PIDFILE" "$LOG" env -u REGISTRY_ADDR docker-registry serve "$CONFIG"
    until answering; do
        sleep 0.25
        waited=$((waited + 1))
        if ! our_pid >/dev/null && [ "$waited" -gt 4 ]; then
            echo "registry: --- last lines of $LOG ---" >&2
            tail -n 20 "$LOG" >&2
            die "docker-registry exited during start (is $ADDR in use? set REGISTRY_ADDR to pick another)"
        fi
        if [ "$waited" -ge $((START_TIMEOUT * 4)) ]; then
            echo "registry: --- last lines of $LOG ---" >&2
            tail -n 20 "$LOG" >&2
            die "http://$ADDR/v2/ did not answer within ${START_TIMEOUT}s; see $LOG, then '$0 stop'"
        fi
    done
    say "started (pid $(our_pid)) at http://$ADDR, storage $DATA, log $LOG"
}

stop() {
    local pid
    if pid="$(daemon_stop "$PIDFILE" docker-registry)"; then say "stopped (was pid $pid)"; else say "not running"; fi
}

status() {
    local pid
    if pid="$(our_pid)"; then
        if answering; then
            say "running (pid $pid) at http://$ADDR, storage $DATA"
            return 0
        fi
        say "pid $pid is running but http://$ADDR/v2/ does not answer; see $LOG"
        return 1
    fi
    if answering; then
        say "not started by this script, but a registry answers at http://$ADDR"
        return 0
    fi
    say "not running (start it with: $0 start)"
    return 3
}

command -v curl >/dev/null || die "curl not found; run: apt-get update && apt-get install -y curl"
case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
