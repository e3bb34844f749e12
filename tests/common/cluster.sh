# Shell helpers shared by the script suites (tests/drivers/run.sh,
# tests/orm/run.sh): apt packages, free ports, and a throwaway PostgreSQL
# cluster run as the `postgres` OS user (scram-sha-256 for every TCP login).
# Sourced; the caller defines log and die, and sets WORK (a fresh directory)
# and PG_BIN.

APT_UPDATED=0
# need_apt PACKAGE...: installs the packages that are missing.
need_apt() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing apt packages: ${missing[*]}"
    if ((APT_UPDATED == 0)); then
        apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# cluster_start: initdb in $WORK/data and start the server on a free port.
# Sets PGPORT_DIRECT and SUPERPW (the password of superuser postgres).
cluster_start() {
    PGPORT_DIRECT="$(free_port)"
    SUPERPW="super-$RANDOM$RANDOM"
    echo "$SUPERPW" > "$WORK/pwfile"
    chown postgres "$WORK/pwfile"
    mkdir "$WORK/data" "$WORK/sock" "$WORK/pglog"
    chown postgres "$WORK/data" "$WORK/sock" "$WORK/pglog"
    log "initdb (PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')), port $PGPORT_DIRECT"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/data" -U postgres --pwfile="$WORK/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1 \
        || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    cat >>"$WORK/data/postgresql.conf" <<EOF
port = $PGPORT_DIRECT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/sock'
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
max_prepared_transactions = 10
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
log_min_messages = warning
log_connections = off
EOF
    cat >"$WORK/data/pg_hba.conf" <<EOF
local all         all                trust
local replication all                trust
host  all         all  127.0.0.1/32  scram-sha-256
host  replication all  127.0.0.1/32  scram-sha-256
EOF
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pglog/server.log" -w -t 60 start >/dev/null \
        || { cat "$WORK/pglog/server.log" >&2; die "could not start PostgreSQL"; }
}

# cluster_stop: stops the server of $WORK/data, if it runs.
cluster_stop() {
    if [[ -f "$WORK/data/postmaster.pid" ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/data" stop -m immediate -w >/dev/null 2>&1
    fi
}

# stop_pid PID: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() {
    local pid=$1
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
}

# psql_super ARGS...: psql as the superuser, over the cluster's socket.
psql_super() { psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/sock" -p "$PGPORT_DIRECT" -U postgres "$@"; }

# wait_for_pgveil PID LOG: until pgveil logs that it accepts connections.
wait_for_pgveil() {
    local pid=$1 logfile=$2
    for _ in $(seq 100); do
        grep -qs "accepting connections" "$logfile" && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; die "pgveil exited"; }
        sleep 0.1
    done
    die "pgveil did not start"
}

# cleanup_work: the EXIT trap. Stops pgveil ($PGVEIL_PID) and the cluster,
# and removes $WORK unless KEEP=1; keeps the exit code.
cleanup_work() {
    local rc=$?
    set +e
    stop_pid "${PGVEIL_PID:-}"
    cluster_stop
    if [[ "${KEEP:-0}" == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
