# daemon.sh — run a program as a plain background process tracked by a pid file, for the
# scripts that start local services (registry.sh, brokers.sh). Source it; it defines functions only.

# Prints the pid in PIDFILE if that process is alive and its command name is COMM.
daemon_pid() {
    local pidfile="$1" comm="$2" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(ps -p "$pid" -o comm= 2>/dev/null)" = "$comm" ] || return 1
    echo "$pid"
}

# Starts COMMAND... detached, its output appended to LOG (emptied first), its pid in PIDFILE.
daemon_launch() {
    local pidfile="$1" log="$2"
    shift 2
    : >"$log"
    # setsid: detach from this shell's session so the service outlives it and its Ctrl-C.
    # The child writes its own pid before exec, which stays correct even if setsid forks.
    # shellcheck disable=SC2016 # $$ is for the child shell
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
}

# Stops the process in PIDFILE (SIGTERM, then SIGKILL after 10 s) and prints its pid;
# returns 1, printing nothing, if it was not running.
daemon_stop() {
    local pidfile="$1" comm="$2" pid
    if ! pid="$(daemon_pid "$pidfile" "$comm")"; then
        rm -f "$pidfile"
        return 1
    fi
    kill -TERM "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "pid $pid ignored SIGTERM for 10 s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
    echo "$pid"
}
