# Shell helpers the benchmark scripts share (benches/e2e.sh,
# benches/migrate.sh): sourced, not run. They expect WORK, PG_BIN and
# PG_PORT where a function says so, and set CHILD_PID and PG_STARTED for
# the caller's cleanup.

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Runs a command in the background and waits for it, so that a signal to
# the script is handled at once (bash delays traps until a foreground
# command ends) and cleanup can stop the command (CHILD_PID).
run_child() {
    local rc=0
    "$@" &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

# A free TCP port on the loopback interface (asks the kernel for one).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_cluster [SETTING...]: a throwaway PostgreSQL in $WORK/pgdata on
# 127.0.0.1:$PG_PORT and the socket directory $WORK/sock, run as the
# postgres user, with each SETTING line added to postgresql.conf. Local
# (Unix socket) connections are trusted for setup as the superuser; every
# TCP connection, which is all a benchmark uses, needs SCRAM. Durability is
# off: the cluster is thrown away, and the benchmarks measure what sits in
# front of PostgreSQL, not the disk.
start_cluster() {
    mkdir -p "$WORK/pgdata" "$WORK/sock" "$WORK/pglog"
    chown postgres:postgres "$WORK/pgdata" "$WORK/sock" "$WORK/pglog"
    log "initdb in $WORK, port $PG_PORT"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pgdata" -U postgres -E UTF8 \
        --auth-local=trust --auth-host=scram-sha-256 --no-instructions >"$WORK/initdb.log" 2>&1 \
        || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    {
        printf '\n# --- pgveil benchmark settings ---\n'
        printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $PG_PORT" \
            "unix_socket_directories = '$WORK/sock'" "shared_buffers = 256MB" \
            "password_encryption = scram-sha-256" "fsync = off" "synchronous_commit = off" \
            "full_page_writes = off" "$@"
    } >>"$WORK/pgdata/postgresql.conf"
    PG_STARTED=1
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/pglog/postgresql.log" \
        -w -t 60 start >/dev/null || { cat "$WORK/pglog/postgresql.log" >&2; die "PostgreSQL did not start"; }
}

# For a cleanup trap: stops the foreground child (run_child), then the
# cluster of start_cluster, keeps its log in $RUN_DIR and removes $WORK.
stop_child_and_cluster() {
    if [[ -n ${CHILD_PID:-} ]]; then
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
    if [[ ${PG_STARTED:-0} == 1 ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pgdata" stop -m immediate -w \
            >/dev/null 2>&1
    fi
    if [[ -n ${WORK:-} && -d $WORK ]]; then
        cp "$WORK/pglog/postgresql.log" "$RUN_DIR/" 2>/dev/null
        rm -rf "$WORK"
    fi
}

# new_run_dir NAME: RUN_DIR, a new directory NAME-<timestamp> under $OUT
# (default: bench-results/ in the repository $REPO), for a run's results.
new_run_dir() {
    OUT=${OUT:-$REPO/bench-results}
    mkdir -p "$OUT"
    RUN_DIR=$(cd "$OUT" && pwd)/$1-$(date +%Y%m%d-%H%M%S)
    mkdir -p "$RUN_DIR"
}
