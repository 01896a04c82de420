# bench/lib/wrk.sh — what the HTTP benchmarks (B3, B10) share: tools, waiting,
# and wrk rounds. Sourced; the script defines die and say (with its own prefix)
# and sets WRK_PID="" before, for its cleanup trap to stop a running wrk.

# The processes whose CPU each target's proxy spends (see run_rounds); scripts fill it in.
declare -gA CPU_OF=()

# Installs Debian package $1, or says how to when not root.
apt_install() {
    [ "$(id -u)" = 0 ] || die "$1 is not installed; run: sudo apt-get update && sudo apt-get install -y $1"
    say "installing Debian package $1"
    apt-get update -qq || die "apt-get update failed; check the apt sources"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null || die "apt-get install $1 failed"
}

# Runs wrk in the background and waits, so that SIGTERM/SIGINT reach the traps at once.
run_wrk() {
    local rc=0
    wrk "$@" &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    return "$rc"
}

answers() { curl -fsS -m 2 -o /dev/null "$1" 2>/dev/null; }
port_busy() { curl -sS -m 1 -o /dev/null "http://$1/" 2>/dev/null || [ $? -ne 7 ]; }

# Polls until "$@" succeeds, for at most $1 seconds.
wait_for() {
    local limit="$1" what="$2"; shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$what did not happen within ${limit}s"
        sleep 0.2
    done
}

# Prints "rps p50_ms p99_ms errors requests" from wrk --latency output on stdin.
parse_wrk() {
    awk '
    function ms(v) {
        if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
        if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
        if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
        if (v ~ /m$/)  return substr(v, 1, length(v) - 1) * 60000
        return v + 0
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    / requests in / { reqs = $1 }
    /Non-2xx or 3xx responses:/ { errs += $NF }
    /Socket errors:/ { gsub(",", ""); errs += $4 + $6 + $8 + $10 }
    END {
        if (rps == "" || p50 == "" || p99 == "") exit 1
        printf "%s %.4f %.4f %d %d\n", rps, p50, p99, errs, reqs
    }'
}

# CPU time (user + system, in clock ticks) used so far by processes $@ and their children:
# the proxy's cost per request, which the machine's load moves far less than its throughput.
cpu_ticks() {
    local pid total=0 u s
    for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
        # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the command name.
        read -r u s < <(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12, $13}') || continue
        total=$((total + u + s))
    done
    echo "$total"
}

# Warms every target of TARGETS up (WARMUP s), then runs ROUNDS interleaved rounds of
# DURATION s against each (URL[target]), writing "target round rps p50 p99 errors requests
# cpu_us_per_request" rows (tab-separated) to ROWS; the last is the CPU the processes in
# CPU_OF[target] (with their children) spent per request, or -1 where CPU_OF names none.
# Uses THREADS, CONNECTIONS and WORK.
run_rounds() {
    local t round raw fig rps p50 p99 errs reqs before after cpu hz
    hz="$(getconf CLK_TCK)"
    if [ "$WARMUP" -gt 0 ]; then
        for t in "${TARGETS[@]}"; do
            run_wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "${URL[$t]}" >/dev/null ||
                die "wrk warm-up against $t failed"
        done
    fi
    : >"$ROWS"
    say "running $ROUNDS round(s) of ${DURATION}s per target: ${TARGETS[*]} (wrk -t$THREADS -c$CONNECTIONS)"
    for round in $(seq "$ROUNDS"); do
        for t in "${TARGETS[@]}"; do
            raw="$WORK/wrk-$t-$round.txt"
            # shellcheck disable=SC2086  # a list of pids
            before="$(cpu_ticks ${CPU_OF[$t]:-})"
            run_wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${URL[$t]}" >"$raw" 2>&1 ||
                die "wrk against $t failed: $(cat "$raw")"
            # shellcheck disable=SC2086
            after="$(cpu_ticks ${CPU_OF[$t]:-})"
            fig="$(parse_wrk <"$raw")" || die "could not parse wrk output for $t: $(cat "$raw")"
            read -r rps p50 p99 errs reqs <<<"$fig"
            cpu=-1
            if [ -n "${CPU_OF[$t]:-}" ] && [ "$reqs" -gt 0 ]; then
                cpu="$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')"
            fi
            printf '%s\t%s\t%s\t%s\n' "$t" "$round" "${fig// /$'\t'}" "$cpu" >>"$ROWS"
            say "round $round $t: $rps req/s, p50 $p50 ms, p99 $p99 ms, errors $errs$([ "$cpu" = -1 ] || echo ", CPU $cpu us/request")"
        done
    done
}
