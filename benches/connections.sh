#!/usr/bin/env bash
# Functions called only from traps look unreachable to shellcheck.
# shellcheck disable=SC2317
# Connections benchmark: many logged-in sessions and many half-open ones.
#
#   benches/connections.sh [--sessions N] [--half-open N] [--out DIR]
#
# Builds pgveil (release), creates a throwaway PostgreSQL 15 cluster with
# max_connections raised to match, starts pgveil (pass-through) and
# PgBouncer (session mode) in front of it, and through each:
#   1. opens N sessions (default 2,000) that log in with SCRAM and stay
#      idle, and reads the proxy's resident memory before and while they
#      are held (KiB per idle session; goal for pgveil: at most 32);
#   2. while they are held, opens N more TCP connections (default 10,000)
#      that never send a startup packet, and times new clients logging in
#      and running a query (goal: promptly, each well under a second);
#   3. has every one of the N sessions run SELECT 1 (goal: all answer).
# pgveil's startup_timeout_secs stays at its default (30 s), longer than
# the test holds the half-open connections. Results go to
# DIR/connections-<timestamp>/ (DIR defaults to bench-results/).
#
# Must run as root (raises the open-file limit; the server runs as the
# postgres user). Everything it starts is stopped on any exit.
# See BENCHMARKS.md.
set -euo pipefail

usage() {
    sed -n '/^# Connections benchmark/,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

SESSIONS=2000
HALF_OPEN=10000
OUT=""
while (($#)); do
    case $1 in
        --sessions) SESSIONS=${2:?--sessions needs a number}; shift ;;
        --half-open) HALF_OPEN=${2:?--half-open needs a number}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "connections.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $SESSIONS =~ ^[1-9][0-9]*$ ]] || { echo "connections.sh: bad --sessions $SESSIONS" >&2; exit 2; }
[[ $HALF_OPEN =~ ^[0-9]+$ ]] || { echo "connections.sh: bad --half-open $HALF_OPEN" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"
new_run_dir connections

WORK=""
PG_STARTED=0
CHILD_PID=""
PIDS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    stop_child_and_cluster
    ((rc == 0)) || log "exiting with status $rc; logs in $RUN_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) == 0 ]] || die "run as root"
[[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 server binaries not found in $PG_BIN"
# Every session is a client socket and an upstream socket in the proxy, and
# the half-open ones a client socket each, in the proxy and in this script.
NOFILE=$((2 * SESSIONS + HALF_OPEN + 1024))
ulimit -n "$NOFILE" || die "cannot raise the open-file limit to $NOFILE"
dpkg-query -W -f '${Status}' pgbouncer 2>/dev/null | grep -q 'ok installed' || {
    log "installing pgbouncer"
    DEBIAN_FRONTEND=noninteractive run_child apt-get install -y -qq pgbouncer >/dev/null
}

log "building pgveil (release)"
run_child cargo build --release --quiet --manifest-path "$REPO/Cargo.toml" --bin pgveil
PGVEIL_BIN=$REPO/target/release/pgveil

WORK=$(mktemp -d /tmp/pgveil-conns.XXXXXX)
chmod 755 "$WORK"
PG_PORT=$(free_port)
# Each proxy's sessions are PostgreSQL backends too; the two proxies are
# measured one after the other.
start_cluster "max_connections = $((SESSIONS + 50))" "shared_buffers = 128MB"
USER_NAME=bench
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export PGPASSWORD=$PASSWORD
psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/sock" -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD'" -c "CREATE DATABASE bench OWNER $USER_NAME"

PGVEIL_PORT=$(free_port)
"$PGVEIL_BIN" serve --listen "127.0.0.1:$PGVEIL_PORT" --upstream "127.0.0.1:$PG_PORT" \
    --log-format json 2>"$RUN_DIR/pgveil.log" &
PIDS+=($!)
PGVEIL_PID=$!

BOUNCER_PORT=$(free_port)
mkdir -p "$WORK/pgbouncer"
SECRET=$(psql -X -At -h "$WORK/sock" -p "$PG_PORT" -U postgres -d postgres \
    -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$USER_NAME'")
printf '"%s" "%s"\n' "$USER_NAME" "$SECRET" >"$WORK/pgbouncer/userlist.txt"
cat >"$WORK/pgbouncer/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/pgbouncer/userlist.txt
pool_mode = session
default_pool_size = $((SESSIONS + 10))
max_client_conn = $((SESSIONS + HALF_OPEN + 100))
logfile = $WORK/pgbouncer/pgbouncer.log
INI
chown -R postgres:postgres "$WORK/pgbouncer"
chmod 600 "$WORK/pgbouncer/userlist.txt"
setpriv --reuid=postgres --regid=postgres --init-groups \
    "$(command -v pgbouncer || echo /usr/sbin/pgbouncer)" "$WORK/pgbouncer/pgbouncer.ini" >/dev/null 2>&1 &
PIDS+=($!)
BOUNCER_PID=$!
sleep 1
for port in "$PGVEIL_PORT" "$BOUNCER_PORT"; do
    for _ in $(seq 100); do
        psql -X -q -At -h 127.0.0.1 -p "$port" -U "$USER_NAME" -d bench -c 'SELECT 1' >/dev/null 2>&1 && break
        sleep 0.1
    done
done

status=0
for target in pgveil pgbouncer; do
    if [[ $target == pgveil ]]; then port=$PGVEIL_PORT pid=$PGVEIL_PID; else port=$BOUNCER_PORT pid=$BOUNCER_PID; fi
    log "$target: $SESSIONS sessions, then $HALF_OPEN half-open connections"
    rc=0
    run_child python3 "$REPO/benches/idle_conns.py" --port "$port" --user "$USER_NAME" \
        --database bench --pid "$pid" --count "$SESSIONS" --query-at-end \
        --half-open "$HALF_OPEN" >"$RUN_DIR/$target.json" || rc=$?
    ((rc == 0)) || { log "$target: FAILED (status $rc)"; status=1; }
    python3 - "$target" "$RUN_DIR/$target.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
probes = r.get("probe_ms", [])
print(f"{name}: {r['connections']} sessions ({r['failed']} failed), "
      f"{r['kib_per_connection']} KiB per idle session, "
      f"{r.get('answered_at_end')} answered SELECT 1 at the end; "
      f"with {r.get('half_open')} half-open connections held, new logins took "
      f"{', '.join(f'{p:.0f}' for p in probes)} ms"
      + (f"; errors: {r['probe_errors']}" if r.get("probe_errors") else ""))
PY
done
exit "$status"
