#!/usr/bin/env bash
# b5_agent.sh — B5: the agent's own cost with 50 containers sampled every second and
# published to Kafka, beside Debian's prometheus-node-exporter on the same host in the
# same minute (scraped every second, so both do their work once a second).
# Prints RSS and CPU (% of one core) of each, and their ratios, then times one pass of the
# agent's cgroup collector over the 50 containers against Docker's one-shot stats API
# (bench/src/bin/b5_collect.rs). Results: bench/results/b5.json.
# Env: B5_CONTAINERS=50 B5_SECONDS=60 REGISTRY=127.0.0.1:5000
# Needs: Docker, the registry and images (scripts/registry.sh, scripts/build-images.sh),
# tansu (scripts/brokers.sh), prometheus-node-exporter (installed with apt if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export REGISTRY="${REGISTRY:-127.0.0.1:5000}"
N="${B5_CONTAINERS:-50}"
SECS="${B5_SECONDS:-60}"
API=127.0.0.1:17070
BUS="kafka://127.0.0.1:9092?prefix=b5x$$"
WORK="$(mktemp -d)"
say() { echo "b5: $*"; }

command -v prometheus-node-exporter >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter >/dev/null; }
scripts/registry.sh start >/dev/null
docker image inspect "$REGISTRY/sluice/sleep:latest" >/dev/null 2>&1 || scripts/build-images.sh
scripts/brokers.sh start kafka >/dev/null
cargo build --release --locked -q -p sluice-cli
cargo build --release --locked -q -p sluice-bench --bin b5_collect
SLUICE="$CARGO_TARGET_DIR/release/sluice"

PIDS=()
cleanup() {
    curl -s -X DELETE "http://$API/v1/functions/b5" >/dev/null 2>&1 || true
    sleep 2
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    docker ps -aq --filter label=io.sluice.node=b5 | xargs -r docker rm -f >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

RUST_LOG=warn "$SLUICE" coordinator --auth off --api "$API" --gateway 127.0.0.1:17080 --raft 127.0.0.1:17071 --data-dir "$WORK/data" --bus "$BUS" >"$WORK/coordinator.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn "$SLUICE" agent --node b5 --coordinator "http://$API" --bus "$BUS" --agent-metrics 127.0.0.1:19101 --sample-secs 1 >"$WORK/agent.log" 2>&1 &
AGENT=$!
PIDS+=($AGENT)
prometheus-node-exporter --web.listen-address=127.0.0.1:19100 >"$WORK/node-exporter.log" 2>&1 &
EXPORTER=$!
PIDS+=($EXPORTER)

for _ in $(seq 100); do curl -sf "http://$API/healthz" >/dev/null && break; sleep 0.2; done
curl -sf -X POST "http://$API/v1/functions" -H 'content-type: application/json' \
    -d "{\"name\":\"b5\",\"image\":\"$REGISTRY/sluice/sleep:latest\",\"min_instances\":$N,\"max_instances\":$N,\"limits\":{\"cpu_millis\":10,\"memory_mb\":16}}" >/dev/null
say "waiting for $N instances"
for i in $(seq 300); do
    ready=$( (curl -sf "http://$API/v1/instances?function=b5" || true) | grep -o '"state":"ready"' | wc -l || true)
    [ "$ready" -ge "$N" ] && break
    [ $((i % 20)) = 0 ] && say "$ready of $N ready"
    sleep 1
done
[ "$ready" -ge "$N" ] || { say "only $ready of $N instances became ready"; exit 1; }
sleep 5 # let both settle

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)
a0=$(ticks $AGENT); e0=$(ticks $EXPORTER)
say "measuring for $SECS s (node_exporter scraped every second)"
for _ in $(seq "$SECS"); do
    curl -s -o /dev/null http://127.0.0.1:19100/metrics
    sleep 1
done
a1=$(ticks $AGENT); e1=$(ticks $EXPORTER)
agent_rss=$(rss_kib $AGENT); exporter_rss=$(rss_kib $EXPORTER)
agent_hwm=$(hwm_kib $AGENT); exporter_hwm=$(hwm_kib $EXPORTER)
# The collector alone against Docker's one-shot stats, over the same containers.
"$CARGO_TARGET_DIR/release/b5_collect" b5 30 | tee "$WORK/collect.txt"
seen=$( (curl -sf "http://$API/v1/metrics/functions/b5?range=10s" || true) | grep -o '"i[0-9]*":' | wc -l || true)
python3 - "$a0" "$a1" "$e0" "$e1" "$HZ" "$SECS" "$agent_rss" "$exporter_rss" "$agent_hwm" "$exporter_hwm" "$N" "$seen" <<'PY'
import json, sys
a0, a1, e0, e1, hz, secs, arss, erss, ahwm, ehwm, n, seen = map(float, sys.argv[1:])
acpu = 100 * (a1 - a0) / hz / secs
ecpu = 100 * (e1 - e0) / hz / secs
print(f"b5: containers sampled {int(n)}, instances in the coordinator's windows {int(seen)}")
print(f"b5: agent          RSS {arss/1024:6.1f} MiB (peak {ahwm/1024:.1f})   CPU {acpu:5.2f}% of a core")
print(f"b5: node_exporter  RSS {erss/1024:6.1f} MiB (peak {ehwm/1024:.1f})   CPU {ecpu:5.2f}% of a core")
print(f"b5: ratios agent/node_exporter: RSS {arss/erss:.2f}  CPU {acpu/ecpu if ecpu else float('inf'):.2f};  goals: RSS <= 15 MiB ({arss/1024/15:.2f} of it), CPU <= 1% ({acpu:.2f} of it)")
json.dump({"containers": n, "instances_in_windows": seen, "seconds": secs, "agent_rss_kib": arss, "agent_peak_kib": ahwm, "agent_cpu_percent": acpu,
           "node_exporter_rss_kib": erss, "node_exporter_peak_kib": ehwm, "node_exporter_cpu_percent": ecpu}, open("bench/results/b5.json", "w"), indent=2)
PY
