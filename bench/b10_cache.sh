#!/usr/bin/env bash
#! b10_cache.sh — benchmark B10: the gateway's response-cache hit path against nginx's
#! proxy_cache in front of the same container, in the same run:
#!   direct         wrk -> the function container's published port (every request reaches it)
#!   nginx_cache    wrk -> Debian nginx (2 workers, proxy_cache, upstream keepalive 64) -> the container
#!   gateway_cache  wrk -> the Sluice gateway (/function/NAME, deployed with --cache-ttl) -> the container
#! nginx is pointed at the container's own address, as users set it up. Both caches are filled
#! and checked to answer from the cache (X-Cache-Status: HIT, x-sluice-cache: hit) before the
#! rounds, and afterwards the gateway's misses are checked to be the first call's alone.
#! Rounds are interleaved and medians reported, with the ratios gateway_cache/nginx_cache.
#! Results go to bench/results/b10.json.
#!
#! Usage: bench/b10_cache.sh
#! Env:
#!   DURATION=10   seconds per wrk run          ROUNDS=3     rounds (median over them)
#!   THREADS=2 CONNECTIONS=32                  WARMUP=2     warm-up seconds per target
#!   IMAGE=127.0.0.1:5000/sluice/hello:latest (REGISTRY=127.0.0.1:5000 scripts/build-images.sh hello;
#!         deploys pin images to their registry digest)   FUNCTION=hello
#!   SLUICE=path   sluice binary (default $CARGO_TARGET_DIR/release/sluice, built if absent)
#!   API_ADDR=127.0.0.1:7170 GATEWAY_ADDR=127.0.0.1:8170 RAFT_ADDR=127.0.0.1:7171 NGINX_PORT=18170
#!   AGENT_METRICS=127.0.0.1:9170
#!   OUT=bench/results/b10.json
#! Sluice runs with its own data directory and node name, so it leaves other Sluices on the host
#! alone. Everything it starts (sluice, nginx, the deployed function) is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
WARMUP="${WARMUP:-2}"
IMAGE="${IMAGE:-127.0.0.1:5000/sluice/hello:latest}"
FUNCTION="${FUNCTION:-hello}"
API_ADDR="${API_ADDR:-127.0.0.1:7170}"
GATEWAY_ADDR="${GATEWAY_ADDR:-127.0.0.1:8170}"
NGINX_PORT="${NGINX_PORT:-18170}"
AGENT_METRICS="${AGENT_METRICS:-127.0.0.1:9170}"
RAFT_ADDR="${RAFT_ADDR:-127.0.0.1:7171}"
OUT="${OUT:-$ROOT/bench/results/b10.json}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SLUICE="${SLUICE:-$CARGO_TARGET_DIR/release/sluice}"
API="http://$API_ADDR"
ENDPOINT=""

die() { echo "b10: error: $*" >&2; exit 1; }
say() { echo "b10: $*" >&2; }
# shellcheck source=bench/lib/wrk.sh
. "$ROOT/bench/lib/wrk.sh"

for v in DURATION ROUNDS THREADS CONNECTIONS WARMUP NGINX_PORT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
{ [ "$ROUNDS" -ge 1 ] && [ "$DURATION" -ge 1 ]; } || die "ROUNDS and DURATION must be at least 1"

# --- tools -------------------------------------------------------------------------------------
command -v wrk >/dev/null || apt_install wrk
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || apt_install python3

WORK="$(mktemp -d -t sluice-b10.XXXXXX)"
TOKEN_FILE="$WORK/data/admin.token"
NGINX_PID=""
SLUICE_PID=""
WRK_PID=""
DEPLOYED=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$WRK_PID" ]; then kill -TERM "$WRK_PID" 2>/dev/null; fi
    if [ -n "$DEPLOYED" ]; then
        "$SLUICE" --api "$API" --token-file "$TOKEN_FILE" rm "$FUNCTION" >/dev/null 2>&1 || say "could not remove function $FUNCTION (sluice rm)"
    fi
    for pid in $NGINX_PID $SLUICE_PID; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid did not stop within 10 s of SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    if [ -n "$DEPLOYED" ] && [ -n "$ENDPOINT" ] && curl -fsS -m 1 -o /dev/null "http://$ENDPOINT/_/health" 2>/dev/null; then
        say "warning: the instance at $ENDPOINT still answers after sluice stopped; check 'docker ps'"
    fi
    if [ "$rc" -ne 0 ] && [ -f "$WORK/sluice.log" ]; then
        say "--- last lines of the sluice log ---"; tail -n 20 "$WORK/sluice.log" >&2
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- sluice: start, deploy with a cache, find the instance ---------------------------------------
sl() { "$SLUICE" --api "$API" --token-file "$TOKEN_FILE" "$@"; }

# Prints host:port of a ready instance of $FUNCTION, or fails.
ready_endpoint() {
    sl ls --output json 2>/dev/null | FUNCTION="$FUNCTION" python3 -c '
import json, os, sys
for i in json.load(sys.stdin).get("instances") or []:
    ep = i.get("endpoint") or {}
    if i.get("function") == os.environ["FUNCTION"] and i.get("state") == "ready" and ep.get("host"):
        print("%s:%s" % (ep["host"], ep["port"]))
        sys.exit(0)
sys.exit(1)'
}

command -v docker >/dev/null || die "docker not found; B10 needs Docker Engine"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE not found; run scripts/build-images.sh first"
if [ ! -x "$SLUICE" ]; then
    say "building the sluice CLI ($SLUICE not found)"
    (cd "$ROOT" && cargo build --release -p sluice-cli) || die "cargo build -p sluice-cli failed"
    [ -x "$SLUICE" ] || die "built sluice-cli but $SLUICE does not exist; set SLUICE=/path/to/sluice"
fi
for addr in "$API_ADDR" "$GATEWAY_ADDR" "$RAFT_ADDR" "$AGENT_METRICS" "127.0.0.1:$NGINX_PORT"; do
    ! port_busy "$addr" || die "something already listens on $addr; stop it or pick another address (see Env above)"
done
# The registry asks for credentials: sluice up pins and pulls with the file scripts/registry.sh wrote.
CREDENTIALS="${SLUICE_REGISTRY_CREDENTIALS:-$("$ROOT/scripts/registry.sh" credentials)}"
[ -s "$CREDENTIALS" ] || die "no registry credentials at $CREDENTIALS; run scripts/registry.sh start (or set SLUICE_REGISTRY_CREDENTIALS)"
say "starting sluice up (api $API_ADDR, gateway $GATEWAY_ADDR; log in $WORK/sluice.log)"
"$SLUICE" up --registry-credentials "$CREDENTIALS" --api "$API_ADDR" --gateway "$GATEWAY_ADDR" --raft "$RAFT_ADDR" --agent-metrics "$AGENT_METRICS" --data-dir "$WORK/data" \
    --node "b10-$$" >"$WORK/sluice.log" 2>&1 &
SLUICE_PID=$!
wait_for 30 "the admin token in $TOKEN_FILE" test -s "$TOKEN_FILE"
wait_for 30 "sluice API answering at $API" sl ls --output json
say "deploying $FUNCTION ($IMAGE, min 1, max 1, --cache-ttl 1h)"
sl deploy "$FUNCTION" --image "$IMAGE" --port 8080 --min 1 --max 1 --concurrency 1000 --cpu-millis 2000 --cache-ttl 1h \
    >"$WORK/deploy.out" 2>&1 || die "sluice deploy failed: $(cat "$WORK/deploy.out")"
DEPLOYED=1
wait_for 60 "a ready instance of $FUNCTION" ready_endpoint >/dev/null
ENDPOINT="$(ready_endpoint)"
say "instance ready at $ENDPOINT"

# --- nginx with proxy_cache ------------------------------------------------------------------------
mkdir -p "$WORK/nginx/cache"
chmod 0755 "$WORK"  # nginx workers run as nobody when started as root
chmod 0777 "$WORK/nginx/cache"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    # The same bound as the gateway's default (--gateway-cache-mb 64).
    proxy_cache_path $WORK/nginx/cache levels=1:2 keys_zone=fn:10m max_size=64m inactive=1h use_temp_path=off;
    upstream fn {
        server $ENDPOINT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://fn;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache fn;
            proxy_cache_valid 200 1h;
            proxy_cache_lock on;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
}
EOF
"$NGINX" -t -q -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" ||
    die "nginx rejected its config ($WORK/nginx/nginx.conf)"
"$NGINX" -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!

# --- targets ---------------------------------------------------------------------------------------
declare -A URL=(
    [direct]="http://$ENDPOINT/"
    [nginx_cache]="http://127.0.0.1:$NGINX_PORT/"
    [gateway_cache]="http://$GATEWAY_ADDR/function/$FUNCTION/"
)
declare -A HIT_HEADER=([nginx_cache]="x-cache-status: HIT" [gateway_cache]="x-sluice-cache: hit")
TARGETS=(direct nginx_cache gateway_cache)

for t in "${TARGETS[@]}"; do
    wait_for 10 "$t (${URL[$t]}) answering" answers "${URL[$t]}"
    body="$(curl -fsS -m 2 "${URL[$t]}")"
    [ "$body" = "hello, world" ] || die "$t (${URL[$t]}) answered '$body', expected 'hello, world'"
    if [ -n "${HIT_HEADER[$t]:-}" ]; then
        curl -fsS -m 2 -D - -o /dev/null "${URL[$t]}" | tr -d '\r' | grep -qi "^${HIT_HEADER[$t]}\$" ||
            die "$t did not answer from its cache the second time (expected '${HIT_HEADER[$t]}')"
    fi
done

ROWS="$WORK/rows.tsv"
# Each cache's own CPU per request: nginx's master and workers; the whole sluice up process.
CPU_OF[nginx_cache]="$NGINX_PID"
CPU_OF[gateway_cache]="$SLUICE_PID"
run_rounds
kill -0 "$NGINX_PID" 2>/dev/null || die "nginx died during the run; see its error log above"
# Every gateway request after the first was a hit: its misses are the first call's one.
gateway_figure() {
    curl -fsS -m 2 -H "authorization: Bearer $(cat "$TOKEN_FILE")" "http://$GATEWAY_ADDR/metrics" |
        awk -v want="$1{function=\"$FUNCTION\"}" '$1 == want { print $2 }'
}
HITS="$(gateway_figure sluice_gateway_cache_hits_total)"
MISSES="$(gateway_figure sluice_gateway_cache_misses_total)"
{ [ -n "$MISSES" ] && [ "$MISSES" -le 2 ]; } || die "the gateway's cache missed ${MISSES:-?} times: the run did not measure hits"
say "gateway cache: $HITS hits, $MISSES misses"

mkdir -p "$(dirname "$OUT")"
ROWS="$ROWS" OUT="$OUT" HITS="$HITS" MISSES="$MISSES" ENDPOINT="$ENDPOINT" IMAGE="$IMAGE" DURATION="$DURATION" \
    ROUNDS="$ROUNDS" THREADS="$THREADS" CONNECTIONS="$CONNECTIONS" python3 - <<'EOF'
import json, os, statistics, time, platform
rows = {}
for line in open(os.environ["ROWS"]):
    t, rnd, rps, p50, p99, errs, reqs, cpu = line.split("\t")
    rows.setdefault(t, []).append({"round": int(rnd), "rps": float(rps), "p50_ms": float(p50),
                                   "p99_ms": float(p99), "errors": int(errs), "requests": int(reqs),
                                   "cpu_us_per_request": None if float(cpu) < 0 else float(cpu)})
results = {}
for t, rs in rows.items():
    med = lambda k: statistics.median(r[k] for r in rs)
    cpu = [r["cpu_us_per_request"] for r in rs if r["cpu_us_per_request"] is not None]
    results[t] = {"rps": round(med("rps"), 1), "p50_ms": round(med("p50_ms"), 4),
                  "p99_ms": round(med("p99_ms"), 4), "errors": sum(r["errors"] for r in rs),
                  "cpu_us_per_request": round(statistics.median(cpu), 2) if cpu else None, "rounds": rs}
def ratio(a, b):
    if a not in results or b not in results:
        return None
    ca, cb = results[a]["cpu_us_per_request"], results[b]["cpu_us_per_request"]
    return {"rps": round(results[a]["rps"] / results[b]["rps"], 3),
            "p50": round(results[a]["p50_ms"] / results[b]["p50_ms"], 3),
            "cpu_per_request": round(ca / cb, 3) if ca and cb else None}
ratios = {"gateway_cache_over_nginx_cache": ratio("gateway_cache", "nginx_cache"),
          "gateway_cache_over_direct": ratio("gateway_cache", "direct"),
          "nginx_cache_over_direct": ratio("nginx_cache", "direct")}
env = os.environ
doc = {"bench": "b10_cache", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "config": {"image": env["IMAGE"], "endpoint": env["ENDPOINT"], "duration_s": int(env["DURATION"]),
                  "rounds": int(env["ROUNDS"]), "wrk_threads": int(env["THREADS"]),
                  "wrk_connections": int(env["CONNECTIONS"]), "nginx_workers": 2, "nginx_upstream_keepalive": 64},
       "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
       "gateway_cache": {"hits": int(float(env["HITS"])), "misses": int(float(env["MISSES"]))},
       "results": results, "ratios": ratios}
with open(env["OUT"], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"B10 medians over {env['ROUNDS']} round(s) of {env['DURATION']}s:")
for t in ("direct", "nginx_cache", "gateway_cache"):
    if t in results:
        r = results[t]
        print(f"  {t:<14} {r['rps']:>10.0f} req/s   p50 {r['p50_ms']:7.3f} ms   p99 {r['p99_ms']:7.3f} ms   errors {r['errors']}"
              + (f"   CPU {r['cpu_us_per_request']:.1f} us/request" if r["cpu_us_per_request"] else ""))
for name, r in ratios.items():
    if r:
        print(f"  {name.replace('_over_', '/'):<28} throughput {r['rps']:.2f}x   p50 {r['p50']:.2f}x"
              + (f"   CPU per request {r['cpu_per_request']:.2f}x" if r["cpu_per_request"] else ""))
print(f"  written to {env['OUT']}")
EOF
