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

# shellcheck source=../common/cluster.sh
source "$REPO/tests/common/cluster.sh"

need_apt postgresql-15 postgresql-contrib python3 python3-venv python3-dev libpq-dev \
    build-essential ca-certificates
[[ -x "$PG_BIN/initdb" ]] || die "no initdb in $PG_BIN"

# ---------------------------------------------------------------- work dir

WORK="$(mktemp -d /tmp/pgveil-drivers.XXXXXX)"
chmod 755 "$WORK"
PGVEIL_PID=""
trap cleanup_work EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- suite

# The suite file defines: SUITE_DB, SUITE_USER, SUITE_PASSWORD,
# suite_prepare (install driver + test code), suite_db_setup (SQL run as
# superuser in SUITE_DB after it is created), suite_run LABEL PORT JUNIT.
# shellcheck source=/dev/null
source "$HERE/suites/$SUITE.sh"
suite_prepare

# ---------------------------------------------------------------- cluster

cluster_start

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
wait_for_pgveil "$PGVEIL_PID" "$WORK/pgveil.log"
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
