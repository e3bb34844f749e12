#!/usr/bin/env bash
# Runs a PostgreSQL driver's own test suite twice against a throwaway
# PostgreSQL 15 cluster: once directly, once through pgveil. Reports every
# test that passes directly but not through pgveil.
#
#   tests/drivers/run.sh SUITE|all [-- EXTRA_PYTEST_ARGS...]
#
# SUITE: psycopg2, psycopg2-green, asyncpg, pg8000 (tests/drivers/suites/),
# or all of them in turn. Environment knobs:
#   MODE=both|direct|proxy|serve   which runs to do (default both; the
#                            comparison needs both). serve: set up the
#                            cluster and pgveil, print their ports, wait
#   KEEP=1                   keep the work directory (logs, junit files)
#   PGVEIL_BIN=path          use this pgveil binary instead of building one
#   PGVEIL_LOG=filter        pgveil's log filter (RUST_LOG), default info
#   DRIVERS_CACHE=dir        where sdists and venvs are kept between runs
#                            (default ~/.cache/pgveil-drivers)
#   TEST_TIMEOUT=secs        per-test timeout (default 120)
#   RERUNS=n                 re-run each differing test n times each way
#                            (default 3; 0: no re-runs)
#   STRICT=1                 a differing test fails the run even when it
#                            passed every re-run through pgveil
#
# Exit code: 0 when no test outside the allow-list passes directly but
# fails through pgveil (a test that then passes all its re-runs through
# pgveil is reported as FLAKY and does not count, unless STRICT=1);
# 1 otherwise; 2 on a setup error.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SUITE="${1:-}"
shift || true
if [[ "${1:-}" == "--" ]]; then shift; fi
EXTRA_ARGS=("$@")
TARGETS=(tests)   # what the suite's pytest runs: its tests directory

if [[ "$SUITE" == all ]]; then
    # Every suite in turn, each with its own cluster and pgveil.
    status=0
    for f in "$HERE"/suites/*.sh; do
        name="$(basename "$f" .sh)"
        echo "################ $name"
        "$0" "$name" "$@" || status=$?
        [[ $status == 2 ]] && exit 2
    done
    exit $status
fi
if [[ -z "$SUITE" || ! -f "$HERE/suites/$SUITE.sh" ]]; then
    echo "usage: $0 SUITE|all [-- EXTRA_PYTEST_ARGS...]" >&2
    echo "suites: $(cd "$HERE/suites" && ls *.sh | sed 's/\.sh$//' | tr '\n' ' ')" >&2
    exit 2
fi

MODE="${MODE:-both}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
DRIVERS_CACHE="${DRIVERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgveil-drivers}"
TEST_TIMEOUT="${TEST_TIMEOUT:-120}"
RERUNS="${RERUNS:-3}"
PGVEIL_LOG="${PGVEIL_LOG:-info}"
START=$(date +%s)

log() { echo "[drivers $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# ---------------------------------------------------------------- packages

APT_UPDATED=0
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

need_apt postgresql-15 postgresql-contrib python3 python3-venv python3-dev libpq-dev \
    build-essential ca-certificates
[[ -x "$PG_BIN/initdb" ]] || die "no initdb in $PG_BIN"

# ---------------------------------------------------------------- work dir

WORK="$(mktemp -d /tmp/pgveil-drivers.XXXXXX)"
chmod 755 "$WORK"
PGVEIL_PID=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n "$PGVEIL_PID" ]] && kill -0 "$PGVEIL_PID" 2>/dev/null; then
        kill -TERM "$PGVEIL_PID"
        for _ in $(seq 50); do kill -0 "$PGVEIL_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PGVEIL_PID" 2>/dev/null
    fi
    if [[ -f "$WORK/data/postmaster.pid" ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/data" stop -m immediate -w >/dev/null 2>&1
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then
        log "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ---------------------------------------------------------------- suite

# The suite file defines: SUITE_DB, SUITE_USER, SUITE_PASSWORD,
# suite_prepare (install driver + test code), suite_db_setup (SQL run as
# superuser in SUITE_DB after it is created), suite_run LABEL PORT JUNIT.
# shellcheck source=/dev/null
source "$HERE/suites/$SUITE.sh"
suite_prepare

# ---------------------------------------------------------------- cluster

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

psql_super() { psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/sock" -p "$PGPORT_DIRECT" -U postgres "$@"; }

# A fresh database (and no leftover replication slots) before each run, so
# the second run starts from the same state as the first.
reset_db() {
    psql_super -d template1 >/dev/null <<EOF || return 1
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots;
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$SUITE_DB' AND pid <> pg_backend_pid();
DROP DATABASE IF EXISTS "$SUITE_DB";
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$SUITE_USER') THEN
    CREATE ROLE "$SUITE_USER" LOGIN SUPERUSER REPLICATION;
  END IF;
END \$\$;
ALTER ROLE "$SUITE_USER" PASSWORD '$SUITE_PASSWORD';
CREATE DATABASE "$SUITE_DB" OWNER "$SUITE_USER";
EOF
    suite_db_setup | psql_super -d "$SUITE_DB" >/dev/null || return 1
}

# ---------------------------------------------------------------- pgveil

if [[ -z "${PGVEIL_BIN:-}" ]]; then
    log "building pgveil (cargo build --release)"
    (cd "$REPO" && nice cargo build --release --bin pgveil -q) >&2 || die "cargo build failed"
    PGVEIL_BIN="$REPO/target/release/pgveil"
fi
PROXY_PORT="$(free_port)"
RUST_LOG="$PGVEIL_LOG" "$PGVEIL_BIN" serve --listen "127.0.0.1:$PROXY_PORT" \
    --upstream "127.0.0.1:$PGPORT_DIRECT" 2>"$WORK/pgveil.log" &
PGVEIL_PID=$!
for _ in $(seq 100); do
    grep -qs "accepting connections" "$WORK/pgveil.log" && break
    kill -0 "$PGVEIL_PID" 2>/dev/null || { cat "$WORK/pgveil.log" >&2; die "pgveil exited"; }
    sleep 0.1
done
log "pgveil pid $PGVEIL_PID listening on $PROXY_PORT (log: $WORK/pgveil.log)"

# ---------------------------------------------------------------- runs

run_one() {
    local label=$1 port=$2 t0
    reset_db || die "could not recreate database $SUITE_DB"
    t0=$(date +%s)
    log "running $SUITE $label (port $port)"
    set +e
    DRIVERS_TIMELINE="$WORK/$label.timeline" PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" \
        suite_run "$label" "$port" "$WORK/$label.xml" >"$WORK/$label.out" 2>&1
    local rc=$?
    set -e
    log "$label run: exit $rc, $(( $(date +%s) - t0 ))s; $(grep -E '^=*\s*[0-9]+ (passed|failed)|^[0-9]+ (passed|failed)' "$WORK/$label.out" | tail -n 1)"
    [[ -s "$WORK/$label.xml" ]] || { tail -n 50 "$WORK/$label.out" >&2; die "$label run produced no junit file"; }
}

if [[ "$MODE" == serve ]]; then
    # For investigating: leave the cluster and pgveil up until interrupted.
    reset_db || die "could not recreate database $SUITE_DB"
    cat <<EOF2
cluster: 127.0.0.1:$PGPORT_DIRECT (socket dir $WORK/sock)   pgveil: 127.0.0.1:$PROXY_PORT
user $SUITE_USER password $SUITE_PASSWORD database $SUITE_DB
pgveil log: $WORK/pgveil.log   server log: $WORK/pglog/server.log
run the suite against a port with:  (source $HERE/suites/$SUITE.sh; ...)  or see README.md
Ctrl-C (or kill $$) to stop and clean up.
EOF2
    echo "$WORK" >"${SERVE_INFO:-/dev/null}" 2>/dev/null || true
    while kill -0 "$PGVEIL_PID" 2>/dev/null; do sleep 1; done
    die "pgveil exited"
fi

case "$MODE" in
    both) run_one direct "$PGPORT_DIRECT"; run_one proxy "$PROXY_PORT" ;;
    direct) run_one direct "$PGPORT_DIRECT" ;;
    proxy) run_one proxy "$PROXY_PORT" ;;
    *) die "MODE must be both, direct or proxy" ;;
esac

if [[ "${KEEP:-0}" == 1 ]]; then
    log "outputs: $WORK/{direct,proxy}.{out,xml,timeline}, $WORK/pgveil.log, $WORK/pglog/server.log"
fi

if [[ "$MODE" != both ]]; then
    python3 "$HERE/compare.py" --single "$WORK/$MODE.xml"
    exit 0
fi

# Tests that passed directly but not through pgveil (and are not
# allow-listed) are run again, alone, RERUNS times through pgveil and
# RERUNS times directly, to tell a steady failure from a flaky one.
python3 "$HERE/compare.py" --allow "$HERE/allowlist/$SUITE.txt" --list-regressions \
    "$WORK/direct.xml" "$WORK/proxy.xml" >"$WORK/regressions.txt"
: >"$WORK/reruns.txt"
if [[ -s "$WORK/regressions.txt" && "$RERUNS" -gt 0 ]]; then
    mapfile -t ids <"$WORK/regressions.txt"
    log "re-running ${#ids[@]} differing test(s) $RERUNS time(s) each way"
    TARGETS=("${ids[@]}")
    EXTRA_ARGS=()
    for i in $(seq "$RERUNS"); do
        for label in proxy direct; do
            port=$PROXY_PORT; [[ $label == direct ]] && port=$PGPORT_DIRECT
            set +e
            DRIVERS_TIMELINE="$WORK/rerun.timeline" \
                PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" \
                suite_run "rerun-$label" "$port" "$WORK/rerun-$label-$i.xml" \
                >>"$WORK/rerun-$label.out" 2>&1
            set -e
            echo "$label $WORK/rerun-$label-$i.xml" >>"$WORK/reruns.txt"
        done
    done
fi

set +e
python3 "$HERE/compare.py" --allow "$HERE/allowlist/$SUITE.txt" --reruns "$WORK/reruns.txt" \
    ${STRICT:+--strict} "$WORK/direct.xml" "$WORK/proxy.xml"
rc=$?
set -e
sed 's/\x1b\[[0-9;]*m//g' "$WORK/pgveil.log" | grep -E ' (WARN|ERROR) ' \
    | sed -E 's/^[^ ]+ +//; s/conn=[0-9]+/conn=N/; s/client=[0-9.:]+/client=ADDR/' \
    | sort | uniq -c | sort -rn | head -20 >"$WORK/pgveil-warnings.txt" || true
if [[ -s "$WORK/pgveil-warnings.txt" ]]; then
    echo "pgveil warnings/errors during the runs (count, line; match times with $WORK/*.timeline):"
    cat "$WORK/pgveil-warnings.txt"
fi
echo "wall time: $(( $(date +%s) - START ))s"
exit $rc
