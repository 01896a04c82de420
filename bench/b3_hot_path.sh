#!/usr/bin/env bash
#! b3_hot_path.sh — benchmark B3: hot-path throughput and latency of one warm function instance,
#! called three ways in the same run:
#!   direct   wrk -> the function container's own address (its IP on the Docker network, its port)
#!   nginx    wrk -> Debian nginx (worker_processes auto, upstream keepalive 64) -> the same address, as a user
#!            would configure it (upstream = the container's IP:port)
#!   gateway  wrk -> the Sluice gateway (/function/NAME) -> the instance, the way Sluice reaches it
#! and, with PUBLISHED=1, a fourth for reference:
#!   published  wrk -> the container's published port on loopback (Docker's userland proxy)
#! The function is not ours by default: Debian's nginx answering `return 200` from a FROM-scratch
#! image the script builds (FN=hello uses Sluice's example function instead). It gets 2 cores
#! (--cpu-millis 2000). Rounds are interleaved (direct, nginx, gateway per round) and medians are
#! reported, with every figure as a ratio to nginx in the same run. Results go to bench/results/b3.json.
#!
#! Usage: bench/b3_hot_path.sh
#! Env:
#!   DURATION=10   seconds per wrk run          ROUNDS=3     rounds (median over them)
#!   THREADS=2 CONNECTIONS=32                  WARMUP=2     warm-up seconds per target
#!   FN=nginx      the function: nginx (not ours: Debian's nginx in a FROM-scratch image, built here)
#!                 or hello (sluice/hello:latest; build it with scripts/build-images.sh)
#!   FUNCTION=b3   its name in Sluice          PUBLISHED=0  1 adds the published-port reference
#!   SLUICE=path   sluice binary (default $CARGO_TARGET_DIR/release/sluice, built if absent)
#!   API_ADDR=127.0.0.1:7070 GATEWAY_ADDR=127.0.0.1:8080 NGINX_PORT=18080
#!   NGINX_WORKERS=auto  the reference's worker_processes (auto, as its users set it: one per core)
#!   GATEWAY_THREADS=N        sluice up --gateway-threads N (default: its own, one per core)
#!   MODE=no-gateway ENDPOINT=IP:PORT   skip Sluice: benchmark direct and nginx against a container you
#!                                      started yourself, e.g.
#!     id=$(docker run -d sluice/hello:latest)
#!     ENDPOINT=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id"):8080
#!   OUT=bench/results/b3.json
#! Everything it starts (sluice, nginx, the deployed function) is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-2}"
CONNECTIONS="${CONNECTIONS:-32}"
WARMUP="${WARMUP:-2}"
FN="${FN:-nginx}"
FUNCTION="${FUNCTION:-b3}"
PUBLISHED="${PUBLISHED:-0}"
MODE="${MODE:-full}"
ENDPOINT="${ENDPOINT:-}"
API_ADDR="${API_ADDR:-127.0.0.1:7070}"
GATEWAY_ADDR="${GATEWAY_ADDR:-127.0.0.1:8080}"
NGINX_PORT="${NGINX_PORT:-18080}"
NGINX_WORKERS="${NGINX_WORKERS:-auto}"
OUT="${OUT:-$ROOT/bench/results/b3.json}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SLUICE="${SLUICE:-$CARGO_TARGET_DIR/release/sluice}"
API="http://$API_ADDR"

die() { echo "b3: error: $*" >&2; exit 1; }
say() { echo "b3: $*" >&2; }
# shellcheck source=bench/lib/wrk.sh
. "$ROOT/bench/lib/wrk.sh"

for v in DURATION ROUNDS THREADS CONNECTIONS WARMUP NGINX_PORT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a whole number, got '${!v}'"
done
[[ "$NGINX_WORKERS" =~ ^(auto|[1-9][0-9]*)$ ]] || die "NGINX_WORKERS must be 'auto' or a number of workers, got '$NGINX_WORKERS'"
{ [ "$ROUNDS" -ge 1 ] && [ "$DURATION" -ge 1 ]; } || die "ROUNDS and DURATION must be at least 1"
case "$FN" in
    nginx) IMAGE=sluice/b3-nginx:latest ;;
    hello) IMAGE=sluice/hello:latest ;;
    *) die "FN must be 'nginx' or 'hello', got '$FN'" ;;
esac
case "$MODE" in
    full) [ -z "$ENDPOINT" ] || die "ENDPOINT is only used with MODE=no-gateway" ;;
    no-gateway) [[ "$ENDPOINT" =~ ^[^:]+:[0-9]+$ ]] ||
        die "MODE=no-gateway needs ENDPOINT=IP:port of a running container (docker run -d $IMAGE; docker inspect it for its IP)"
        [ "$PUBLISHED" = 0 ] || die "PUBLISHED=1 needs MODE=full" ;;
    *) die "MODE must be 'full' or 'no-gateway', got '$MODE'" ;;
esac
[[ "$PUBLISHED" =~ ^[01]$ ]] || die "PUBLISHED must be 0 or 1, got '$PUBLISHED'"

# --- tools -------------------------------------------------------------------------------------
command -v wrk >/dev/null || apt_install wrk
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
command -v curl >/dev/null || apt_install curl
command -v python3 >/dev/null || apt_install python3

WORK="$(mktemp -d -t sluice-b3.XXXXXX)"
NGINX_PID=""
SLUICE_PID=""
PUBLISHED_ENDPOINT=""
WRK_PID=""
DEPLOYED=""
cleanup() {
    local rc=$?
    set +e
    if [ -n "$WRK_PID" ]; then kill -TERM "$WRK_PID" 2>/dev/null; fi
    if [ -n "$DEPLOYED" ]; then
        "$SLUICE" --api "$API" rm "$FUNCTION" >/dev/null 2>&1 || say "could not remove function $FUNCTION (sluice rm)"
        # The agent stops and removes the container after the rm: give it the time before stopping sluice.
        for _ in $(seq 100); do
            [ -z "$(docker ps -aq --filter label=io.sluice.node=b3 2>/dev/null)" ] && break
            sleep 0.1
        done
    fi
    for pid in $NGINX_PID $SLUICE_PID; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid did not stop within 10 s of SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    if [ -n "$DEPLOYED" ] && [ -n "$ENDPOINT" ] && curl -fsS -m 1 -o /dev/null "http://$ENDPOINT/" 2>/dev/null; then
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

# --- the function ---------------------------------------------------------------------------------
# Debian's nginx with the libraries it links, FROM scratch, answering every path with 200
# "hello, world" on kept-alive connections: a function that is not Sluice's. It runs as Sluice runs
# every function (user 65534, read-only root, /tmp the only writable place), hence the paths.
build_nginx_function() {
    local ctx="$WORK/nginx-fn" lib
    mkdir -p "$ctx/etc/nginx"
    cp "$NGINX" "$ctx/nginx"
    for lib in $(ldd "$NGINX" | grep -o '/[^ ]*'); do
        mkdir -p "$ctx$(dirname "$lib")"
        cp -L "$lib" "$ctx$lib"
    done
    cat >"$ctx/etc/nginx/nginx.conf" <<'CONF'
worker_processes 2;
daemon off;
pid /tmp/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    keepalive_requests 1000000;
    server {
        listen 8080;
        location / {
            default_type text/plain;
            return 200 "hello, world";
        }
    }
}
CONF
    cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY . /
USER 65534:65534
EXPOSE 8080
ENTRYPOINT ["/nginx", "-p", "/tmp/", "-c", "/etc/nginx/nginx.conf", "-e", "stderr"]
DOCKERFILE
    docker build -q -t "$IMAGE" "$ctx" >"$WORK/docker-build.log" 2>&1 || die "docker build of $IMAGE failed: $(cat "$WORK/docker-build.log")"
}

# --- sluice: start, deploy, find the instance ---------------------------------------------------
# Prints "published-host:port direct-ip:port" of a ready instance of $FUNCTION, or fails.
ready_endpoint() {
    "$SLUICE" --api "$API" ls --output json 2>/dev/null | FUNCTION="$FUNCTION" python3 -c '
import json, os, sys
for i in json.load(sys.stdin).get("instances") or []:
    ep = i.get("endpoint") or {}
    if i.get("function") == os.environ["FUNCTION"] and i.get("state") == "ready" and ep.get("host") and ep.get("direct"):
        print("%s:%s %s" % (ep["host"], ep["port"], ep["direct"]))
        sys.exit(0)
sys.exit(1)'
}

if [ "$MODE" = full ]; then
    command -v docker >/dev/null || die "docker not found; B3 needs Docker Engine"
    if [ "$FN" = nginx ]; then
        say "building $IMAGE from $NGINX"
        build_nginx_function
    fi
    docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE not found; run scripts/build-images.sh first"
    if [ ! -x "$SLUICE" ]; then
        say "building the sluice CLI ($SLUICE not found)"
        (cd "$ROOT" && cargo build --release -p sluice-cli) || die "cargo build -p sluice-cli failed"
        [ -x "$SLUICE" ] || die "built sluice-cli but $SLUICE does not exist; set SLUICE=/path/to/sluice"
    fi
    ! port_busy "$API_ADDR" || die "something already listens on $API_ADDR; stop it or set API_ADDR"
    ! port_busy "$GATEWAY_ADDR" || die "something already listens on $GATEWAY_ADDR; stop it or set GATEWAY_ADDR"
    say "starting sluice up (api $API_ADDR, gateway $GATEWAY_ADDR; log in $WORK/sluice.log)"
    # Its own data directory (and so its own admin token), ports the OS picks for Raft and the
    # agent's metrics, and images run as built here: no registry is involved.
    mkdir -p "$WORK/data"
    export SLUICE_TOKEN_FILE="$WORK/data/admin.token"
    "$SLUICE" up --api "$API_ADDR" --gateway "$GATEWAY_ADDR" --raft 127.0.0.1:0 --agent-metrics 127.0.0.1:0 \
        --node b3 --data-dir "$WORK/data" --no-image-pinning \
        ${GATEWAY_THREADS:+--gateway-threads "$GATEWAY_THREADS"} \
        >"$WORK/sluice.log" 2>&1 &
    SLUICE_PID=$!
    wait_for 30 "sluice API answering at $API" "$SLUICE" --api "$API" ls --output json >/dev/null 2>&1
    say "deploying $FUNCTION ($IMAGE, min 1, max 1, 2 cores)"
    "$SLUICE" --api "$API" deploy "$FUNCTION" --image "$IMAGE" --port 8080 --min 1 --max 1 --concurrency 1000 --cpu-millis 2000 \
        >"$WORK/deploy.out" 2>&1 || die "sluice deploy failed: $(cat "$WORK/deploy.out")"
    DEPLOYED=1
    wait_for 60 "a ready instance of $FUNCTION with a direct address" ready_endpoint >/dev/null
    read -r PUBLISHED_ENDPOINT ENDPOINT <<<"$(ready_endpoint)"
    say "instance ready: its own address $ENDPOINT, published at $PUBLISHED_ENDPOINT"
fi

# --- nginx ----------------------------------------------------------------------------------------
! port_busy "127.0.0.1:$NGINX_PORT" || die "something already listens on 127.0.0.1:$NGINX_PORT; stop it or set NGINX_PORT"
mkdir -p "$WORK/nginx"
chmod 0755 "$WORK"  # nginx workers run as nobody when started as root
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
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
    [nginx]="http://127.0.0.1:$NGINX_PORT/"
    [gateway]="http://$GATEWAY_ADDR/function/$FUNCTION"
    [published]="http://${PUBLISHED_ENDPOINT:-}/"
)
TARGETS=(direct nginx)
[ "$MODE" = full ] && TARGETS+=(gateway)
[ "$PUBLISHED" = 1 ] && TARGETS+=(published)

for t in "${TARGETS[@]}"; do
    wait_for 10 "$t (${URL[$t]}) answering" answers "${URL[$t]}"
    body="$(curl -fsS -m 2 "${URL[$t]}")"
    [ "$body" = "hello, world" ] || die "$t (${URL[$t]}) answered '$body', expected 'hello, world'"
done

ROWS="$WORK/rows.tsv"
# Each proxy's own CPU per request (the function's is the same for all): nginx's master and workers,
# and the whole sluice up process for the gateway (its agent's work included).
CPU_OF[nginx]="$NGINX_PID"
[ -z "$SLUICE_PID" ] || CPU_OF[gateway]="$SLUICE_PID"
run_rounds
kill -0 "$NGINX_PID" 2>/dev/null || die "nginx died during the run; see its error log above"

mkdir -p "$(dirname "$OUT")"
ROWS="$ROWS" OUT="$OUT" MODE="$MODE" ENDPOINT="$ENDPOINT" PUBLISHED_ENDPOINT="$PUBLISHED_ENDPOINT" FN="$FN" IMAGE="$IMAGE" DURATION="$DURATION" \
    ROUNDS="$ROUNDS" THREADS="$THREADS" CONNECTIONS="$CONNECTIONS" NGINX_WORKERS="$(pgrep -c -P "$NGINX_PID")" \
    GATEWAY_THREADS="$(grep -o 'gateway_threads=[0-9]*' "$WORK/sluice.log" 2>/dev/null | head -n 1 | cut -d= -f2)" python3 - <<'EOF'
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
# Every figure against nginx in the same run: the machine's load moves all of them together.
ratios = {f"{t}_over_nginx": ratio(t, "nginx") for t in ("direct", "gateway", "published") if t in results}
ratios["gateway_over_direct"] = ratio("gateway", "direct")
g = ratios.get("gateway_over_nginx")
goal = None if not g else {"throughput_at_least_nginx": g["rps"] >= 1.0, "p50_no_worse_than_nginx": g["p50"] <= 1.0,
                           "moonshot_1_2x": g["rps"] >= 1.2, "no_errors": results["gateway"]["errors"] == 0}
env = os.environ
doc = {"bench": "b3_hot_path", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mode": env["MODE"],
       "config": {"function": env["FN"], "image": env["IMAGE"], "endpoint": env["ENDPOINT"],
                  "published_endpoint": env.get("PUBLISHED_ENDPOINT") or None, "cpu_millis": 2000,
                  "duration_s": int(env["DURATION"]), "rounds": int(env["ROUNDS"]), "wrk_threads": int(env["THREADS"]),
                  "wrk_connections": int(env["CONNECTIONS"]), "nginx_workers": int(env["NGINX_WORKERS"]),
                  "nginx_upstream_keepalive": 64, "gateway_threads": int(env["GATEWAY_THREADS"]) if env.get("GATEWAY_THREADS") else None},
       "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
       "results": results, "ratios": ratios, "goal": goal}
with open(env["OUT"], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"B3 medians over {env['ROUNDS']} round(s) of {env['DURATION']}s ({env['FN']} function, 2 cores;"
      f" nginx workers {env['NGINX_WORKERS']}, gateway threads {env.get('GATEWAY_THREADS') or '-'}):")
for t in ("direct", "nginx", "gateway", "published"):
    if t in results:
        r, x = results[t], ratio(t, "nginx")
        print(f"  {t:<9} {r['rps']:>9.0f} req/s ({x['rps']:.2f}x nginx)   p50 {r['p50_ms']:7.3f} ms ({x['p50']:.2f}x)"
              f"   p99 {r['p99_ms']:7.3f} ms   errors {r['errors']}"
              + (f"   CPU {r['cpu_us_per_request']:.1f} us/request" if r["cpu_us_per_request"] else ""))
g = ratios.get("gateway_over_nginx")
if g and g["cpu_per_request"]:
    print(f"  CPU per request, gateway process (coordinator and agent: sluice up) over nginx's: {g['cpu_per_request']:.2f}x")
if goal:
    print("  goal (gateway vs nginx): throughput >= 1x %s, p50 <= 1x %s, no errors %s; moonshot 1.2x %s" % tuple(
        "met" if goal[k] else "NOT met" for k in ("throughput_at_least_nginx", "p50_no_worse_than_nginx", "no_errors", "moonshot_1_2x")))
print(f"  written to {env['OUT']}")
EOF
