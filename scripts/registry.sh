#!/usr/bin/env bash
#! registry.sh — a local Docker registry for Sluice images, from Debian's docker-registry package,
#! run as a plain background process (no systemd needed). It asks for credentials (htpasswd,
#! bcrypt), as the package's stock config does.
#!
#! Usage: scripts/registry.sh start|stop|status|credentials
#! Env:   REGISTRY_ADDR=host:port   listen address (default 127.0.0.1:5000)
#!        REGISTRY_DIR=dir          where its files live (default $HOME/.cache/sluice/registry),
#!                                  so a second registry can run beside the first
#!
#! Files: $REGISTRY_DIR/{config.yml,htpasswd,credentials,data/,registry.pid,registry.log}
#! `start` installs docker-registry and apache2-utils (htpasswd) if needed (apt-get, as root).
#! The first start makes a user `sluice` with a random password and keeps both, with the
#! registry's address, in $REGISTRY_DIR/credentials (mode 0600): the file Sluice takes as
#! --registry-credentials (or SLUICE_REGISTRY_CREDENTIALS). Every start writes the config and
#! htpasswd from it, starts the registry, waits until GET /v2/ answers, checks the credentials
#! and logs the local Docker in (`docker login`) so that `docker push` and
#! scripts/build-images.sh work. A registry this script started earlier without credentials is
#! restarted with them. `credentials` prints the file's path.
#! Docker already allows plain HTTP to registries on 127.0.0.0/8, so then e.g.
#!   REGISTRY=127.0.0.1:5000 scripts/build-images.sh
set -euo pipefail
# shellcheck source=lib/daemon.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/daemon.sh"

ADDR="${REGISTRY_ADDR:-127.0.0.1:5000}"
DIR="${REGISTRY_DIR:-$HOME/.cache/sluice/registry}"
CONFIG="$DIR/config.yml"
HTPASSWD="$DIR/htpasswd"
CREDENTIALS="$DIR/credentials"
USERNAME=sluice
DATA="$DIR/data"
PIDFILE="$DIR/registry.pid"
LOG="$DIR/registry.log"
START_TIMEOUT=20

die() { echo "registry: error: $*" >&2; exit 1; }
say() { echo "registry: $*"; }

# The HTTP status of GET /v2/ without credentials (000: no answer).
v2_status() { curl -sS -m 2 -o /dev/null -w '%{http_code}' "http://$ADDR/v2/" 2>/dev/null || true; }

# True when a registry answers at all: 200 (open) or 401 (asks for credentials).
answering() { case "$(v2_status)" in 200 | 401) return 0 ;; *) return 1 ;; esac }

# The password in the credentials file.
password() { sed -n 's/^password=//p' "$CREDENTIALS"; }

# True when GET /v2/ with the credentials answers 200. The password goes through curl's
# config on stdin, never on a command line.
credentials_work() {
    printf 'user = "%s:%s"\n' "$USERNAME" "$(password)" | curl -fsS -m 2 -o /dev/null -K - "http://$ADDR/v2/" 2>/dev/null
}

our_pid() { daemon_pid "$PIDFILE" docker-registry; }

ensure_installed() {
    command -v docker-registry >/dev/null && command -v htpasswd >/dev/null && return 0
    [ "$(id -u)" = 0 ] ||
        die "docker-registry or htpasswd is not installed; run: sudo apt-get update && sudo apt-get install -y docker-registry apache2-utils"
    say "installing Debian's docker-registry and apache2-utils (htpasswd) packages"
    apt-get update -qq || die "apt-get update failed; check the apt sources and network"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry apache2-utils >/dev/null ||
        die "apt-get install docker-registry apache2-utils failed; try it by hand to see why"
    command -v docker-registry >/dev/null || die "docker-registry still not on PATH after installing it"
    command -v htpasswd >/dev/null || die "htpasswd still not on PATH after installing apache2-utils"
    if [ "$(ps -p 1 -o comm=)" = systemd ] && systemctl is-active -q docker-registry 2>/dev/null; then
        say "note: the package also started its own service (docker-registry.service, :5000, with auth);"
        say "      stop it with 'systemctl disable --now docker-registry' if it is in the way"
    fi
}

# Makes the credentials file on the first start (a random password), keeps its registry= line
# on this address, and writes the htpasswd file from it (bcrypt; password on stdin).
ensure_credentials() {
    mkdir -p "$DIR"
    if [ ! -s "$CREDENTIALS" ]; then
        (
            umask 077
            printf '# Written by scripts/registry.sh: give it to sluice with --registry-credentials.\nregistry=%s\nusername=%s\npassword=%s\n' \
                "$ADDR" "$USERNAME" "$(od -An -tx1 -N18 /dev/urandom | tr -d ' \n')" >"$CREDENTIALS"
        )
        say "made user $USERNAME with a random password in $CREDENTIALS"
    fi
    chmod 0600 "$CREDENTIALS"
    [ -n "$(password)" ] || die "$CREDENTIALS has no password= line; remove the file and start again to make a new one"
    sed -i "s/^registry=.*/registry=$ADDR/" "$CREDENTIALS"
    (umask 077 && password | htpasswd -B -i -c "$HTPASSWD" "$USERNAME" 2>/dev/null) || die "htpasswd could not write $HTPASSWD"
}

# Logs the local Docker in, so that docker push (scripts/build-images.sh) sends the credentials.
docker_login() {
    command -v docker >/dev/null || { say "note: no docker here; not logging Docker in"; return 0; }
    password | docker login -u "$USERNAME" --password-stdin "$ADDR" >/dev/null 2>&1 ||
        die "docker login $ADDR failed; try: docker login -u $USERNAME $ADDR (password in $CREDENTIALS)"
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
auth:
  htpasswd:
    realm: sluice-registry
    path: $HTPASSWD
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

started() {
    docker_login
    say "credentials in $CREDENTIALS (user $USERNAME); Docker is logged in to $ADDR"
}

start() {
    local pid waited=0
    if answering; then
        if ! pid="$(our_pid)"; then
            say "a registry already answers at http://$ADDR (not started by this script); leaving it"
            return 0
        fi
        if [ "$(v2_status)" = 200 ]; then
            # Started by an older version of this script, without credentials.
            say "the registry (pid $pid) at http://$ADDR asks for no credentials; restarting it with them"
            stop
        elif [ -s "$CREDENTIALS" ] && credentials_work; then
            say "already running (pid $pid) at http://$ADDR"
            started
            return 0
        else
            die "the registry (pid $pid) at http://$ADDR refuses the credentials in $CREDENTIALS; run '$0 stop' then '$0 start'"
        fi
    fi
    ensure_installed
    ensure_credentials
    if pid="$(our_pid)"; then
        die "registry pid $pid is running but http://$ADDR/v2/ does not answer; run '$0 stop' then '$0 start' (log: $LOG)"
    fi
    write_config
    # REGISTRY_ADDR and REGISTRY_DIR are ours; the registry would read REGISTRY_* variables as config overrides.
    daemon_launch "$PIDFILE" "$LOG" env -u REGISTRY_ADDR -u REGISTRY_DIR docker-registry serve "$CONFIG"
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
    credentials_work || die "the registry at http://$ADDR refuses the credentials in $CREDENTIALS; see $LOG"
    say "started (pid $(our_pid)) at http://$ADDR, storage $DATA, log $LOG"
    started
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
    credentials) echo "$CREDENTIALS" ;;
    *) die "usage: $0 start|stop|status|credentials" ;;
esac
