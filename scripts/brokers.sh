#!/usr/bin/env bash
#! brokers.sh — the message brokers Sluice's metrics travel through, on loopback, as plain
#! background processes: a Kafka-protocol broker (tansu, from crates.io) and an MQTT broker
#! (Debian's mosquitto).
#!
#! Usage: scripts/brokers.sh start|stop|status [kafka|mqtt]     (default: both)
#! Env:   KAFKA_ADDR=127.0.0.1:9092   MQTT_ADDR=127.0.0.1:1883
#!        SLUICE_TOOLS=$HOME/.cache/sluice/tools   where tansu is installed (cargo install --root)
#!
#! Files: $HOME/.cache/sluice/brokers/{kafka,mqtt}.{pid,log}, mosquitto.conf, mqtt-data/
#! `start` installs what is missing and waits until the broker accepts connections; it does
#! nothing for a broker that already answers. tansu takes 15-20 minutes to build on 2 cores the
#! first time; the build is cached in $SLUICE_TOOLS and reused. Apache Kafka itself cannot be
#! downloaded here, and Debian's kcat (librdkafka 2.0) cannot talk to tansu: use rdkafka >= 0.39.
set -euo pipefail
# shellcheck source=lib/daemon.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/daemon.sh"

KAFKA_ADDR="${KAFKA_ADDR:-127.0.0.1:9092}"
MQTT_ADDR="${MQTT_ADDR:-127.0.0.1:1883}"
TOOLS="${SLUICE_TOOLS:-$HOME/.cache/sluice/tools}"
TANSU="$TOOLS/bin/tansu"
TANSU_VERSION="${TANSU_VERSION:-}"
DIR="$HOME/.cache/sluice/brokers"
START_TIMEOUT=30

die() { echo "brokers: error: $*" >&2; exit 1; }
say() { echo "brokers: $*"; }

# True when something accepts TCP connections at host:port.
answering() {
    local host="${1%:*}" port="${1##*:}"
    timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

our_pid() { daemon_pid "$DIR/$1.pid" "$2"; }

addr_of() { if [ "$1" = kafka ]; then echo "$KAFKA_ADDR"; else echo "$MQTT_ADDR"; fi; }
comm_of() { if [ "$1" = kafka ]; then echo tansu; else echo mosquitto; fi; }

install_kafka() {
    [ -x "$TANSU" ] && return 0
    command -v cargo >/dev/null || die "cargo not found; install Rust (rustup) to build tansu"
    say "building tansu into $TOOLS (the first time takes 15-20 minutes on 2 cores; it is cached)"
    CARGO_TARGET_DIR="$HOME/.cache/sluice/tansu-target" \
        cargo install tansu --locked --features dynostore --root "$TOOLS" ${TANSU_VERSION:+--version "$TANSU_VERSION"} ||
        die "cargo install tansu failed (see above)"
}

install_mqtt() {
    command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null && return 0
    [ "$(id -u)" = 0 ] ||
        die "mosquitto is not installed; run: sudo apt-get update && sudo apt-get install -y mosquitto mosquitto-clients"
    say "installing Debian's mosquitto and mosquitto-clients"
    apt-get update -qq || die "apt-get update failed; check the apt sources and network"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null ||
        die "apt-get install mosquitto failed; try it by hand to see why"
    if [ "$(ps -p 1 -o comm=)" = systemd ] && systemctl is-active -q mosquitto 2>/dev/null; then
        say "note: the package also started mosquitto.service on :1883; stop it with 'systemctl disable --now mosquitto' if it is in the way"
    fi
}

# Starts `command...` detached, recording its pid in $DIR/<name>.pid.
launch() {
    local name="$1"
    shift
    daemon_launch "$DIR/$name.pid" "$DIR/$name.log" "$@"
}

start_one() {
    local name="$1" addr comm pid waited=0
    addr="$(addr_of "$name")"
    comm="$(comm_of "$name")"
    if answering "$addr"; then
        if pid="$(our_pid "$name" "$comm")"; then say "$name already running (pid $pid) at $addr"; else say "something already answers at $addr; leaving it as the $name broker"; fi
        return 0
    fi
    mkdir -p "$DIR"
    if [ "$name" = kafka ]; then
        install_kafka
        # In-memory storage: the tests create their topics; nothing needs to outlive the broker.
        launch kafka "$TANSU" broker --listener-url "tcp://$addr" --advertised-listener-url "tcp://$addr" --storage-engine memory://tansu/
    else
        install_mqtt
        mkdir -p "$DIR/mqtt-data"
        cat >"$DIR/mosquitto.conf" <<EOF
# Written by scripts/brokers.sh; rewritten on every start.
listener ${addr##*:} ${addr%:*}
allow_anonymous true
# Started as root, mosquitto would switch to the "mosquitto" user, which cannot write the
# persistence directory below \$HOME: sessions would silently not survive a restart.
user $(id -un)
persistence true
persistence_location $DIR/mqtt-data/
# A subscription's session queues what arrives while it is away or behind; mosquitto's default
# (1000 messages) silently drops the rest. Match the in-process bus's per-group bound.
max_queued_messages 100000
log_dest stdout
EOF
        launch mqtt mosquitto -c "$DIR/mosquitto.conf"
    fi
    until answering "$addr"; do
        sleep 0.25
        waited=$((waited + 1))
        if ! our_pid "$name" "$comm" >/dev/null && [ "$waited" -gt 4 ]; then
            tail -n 20 "$DIR/$name.log" >&2
            die "$name broker exited during start (is $addr in use?); log above, full log $DIR/$name.log"
        fi
        [ "$waited" -lt $((START_TIMEOUT * 4)) ] || die "$name broker did not accept connections at $addr within ${START_TIMEOUT}s; see $DIR/$name.log"
    done
    say "$name started (pid $(our_pid "$name" "$comm")) at $addr, log $DIR/$name.log"
}

stop_one() {
    local name="$1" pid
    if pid="$(daemon_stop "$DIR/$name.pid" "$(comm_of "$name")")"; then say "$name stopped (was pid $pid)"; else say "$name not running"; fi
}

status_one() {
    local name="$1" addr pid
    addr="$(addr_of "$name")"
    if pid="$(our_pid "$name" "$(comm_of "$name")")" && answering "$addr"; then
        say "$name running (pid $pid) at $addr"
    elif answering "$addr"; then
        say "$name: not started by this script, but something answers at $addr"
    else
        say "$name not running (start it with: $0 start $name)"
        return 3
    fi
}

ACTION="${1:-}"
shift || true
NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(kafka mqtt)
for name in "${NAMES[@]}"; do
    case "$name" in kafka | mqtt) ;; *) die "unknown broker '$name': use kafka or mqtt" ;; esac
done
rc=0
for name in "${NAMES[@]}"; do
    case "$ACTION" in
        start) start_one "$name" ;;
        stop) stop_one "$name" ;;
        status) status_one "$name" || rc=$? ;;
        *) die "usage: $0 start|stop|status [kafka|mqtt]" ;;
    esac
done
exit "$rc"
