#!/usr/bin/env bash
# Functions called only from traps look unreachable to shellcheck.
# shellcheck disable=SC2317
# End-to-end benchmark: PostgreSQL direct vs PgBouncer vs pgveil.
#
#   benches/e2e.sh [--quick] [--rounds N] [--duration SECS] [--out DIR]
#                  [--only REGEX] [--targets REGEX] [--profile TARGET]
#                  [--baseline PGVEIL-BINARY] [--syscalls]
#
# Builds pgveil, creates a throwaway PostgreSQL 15 cluster, starts
# PgBouncer (session mode) and pgveil (pass-through) in front of it, and
# runs pgbench workloads against each target, alternating targets within
# each round. Prints median tps per workload and target with the ratios
# pgveil/direct and pgveil/pgbouncer, pgveil's CPU time per transaction and
# its resident memory per idle client connection. Raw results go to
# DIR/e2e-<timestamp>/results.json (DIR defaults to bench-results/).
# --only runs just the workloads whose names match REGEX (for development);
# --targets just the targets whose names match REGEX, such as
# 'pgveil|pgveil-audit' to compare two of them over more rounds.
# --profile records a CPU profile (perf record -g) of the pgveil instance
# behind TARGET during each of its runs, with a text report of the hottest
# functions next to it (DIR/e2e-<timestamp>/profiles/).
# The latency-* workloads also keep pgbench's per-transaction log and report
# the latency each proxy adds (its p50 and p99 minus direct's, same round).
# --syscalls counts the system calls of every proxy during each of its
# runs (perf stat on the syscalls:sys_enter_* tracepoints, counted in the
# kernel, cheap enough to leave tps alone) and reports them per
# transaction.
# --baseline runs a second pgveil binary (another build, such as the
# commit before a change) beside this one, as pgveil-baseline
# (pass-through) and pgveil-policy-baseline (the CRM policy), in the same
# rounds, so that a change is measured side by side with the build before
# it: the ratios pgveil/pgveil-baseline and
# pgveil-policy/pgveil-policy-baseline are printed.
#
# Must run as root (it installs PgBouncer when missing and runs the
# servers as the postgres user). Everything it starts is stopped, and its
# temporary directory removed, on any exit, including Ctrl-C and kill.
# See BENCHMARKS.md.
set -euo pipefail

usage() {
    sed -n '/^# End-to-end/,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------
ROUNDS=3          # rounds over all workloads and targets
DURATION=6        # pgbench -T, seconds per run (3 x 24 runs + a clean build: under 15 min)
OUT=""            # where results are written (default: bench-results/ in the repo)
QUICK=0
ONLY=""          # run only workloads whose name matches this regex
TARGETS=""       # run only targets whose name matches this regex (whole name)
PROFILE=""       # target whose pgveil is profiled during its runs
BASELINE=""      # a second pgveil binary to compare with (--baseline)
SYSCALLS=0       # count the proxies' system calls (--syscalls)
while (($#)); do
    case $1 in
        --quick) QUICK=1; ROUNDS=1; DURATION=2 ;;
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
        --duration) DURATION=${2:?--duration needs seconds}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift ;;
        --only) ONLY=${2:?--only needs a regular expression}; shift ;;
        --targets) TARGETS=${2:?--targets needs a regular expression}; shift ;;
        --profile) PROFILE=${2:?--profile needs a target name}; shift ;;
        --baseline) BASELINE=${2:?--baseline needs a pgveil binary}; shift ;;
        --syscalls) SYSCALLS=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "e2e.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "e2e.sh: bad --rounds $ROUNDS" >&2; exit 2; }
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "e2e.sh: bad --duration $DURATION" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$REPO/bench-results}
BENCHES=$REPO/benches
PG_BIN=/usr/lib/postgresql/15/bin
SCALE=10            # pgbench -i -s: 1,000,000 pgbench_accounts rows
NCUST=100000        # customers seeded for the CRM workload
IDLE_CONNS=1000     # idle connections for the memory measurement
BENCH_USER=bench
BENCH_DB=bench
# A fresh random password per run; the cluster is thrown away afterwards.
BENCH_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
export PGPASSWORD=$BENCH_PASSWORD

STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
RUN_DIR=$(cd "$OUT" && pwd)/e2e-$STAMP
mkdir -p "$RUN_DIR/logs"

# shellcheck source=benches/lib.sh
source "$BENCHES/lib.sh"

# ---------------------------------------------------------------------------
# Cleanup: runs on every exit. INT and TERM are turned into an exit so the
# EXIT trap does the work once.
# ---------------------------------------------------------------------------
WORK=""          # temporary directory (cluster, PgBouncer files)
PG_STARTED=0     # whether pg_ctl start was attempted
PGVEIL_PIDS=()   # every pgveil instance started (see start_pgveil)
BOUNCER_PID=""
CHILD_PID=""     # the long-running foreground step (pgbench, cargo, ...)

# True while process $1 exists and is not a zombie.
alive() {
    local state
    [[ -n $1 ]] || return 1
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# Sends SIGTERM to $1, waits up to 10 s, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1 name=$2 i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        log "$name did not stop within 10 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n $CHILD_PID ]]; then
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
    for pid in "${PGVEIL_PIDS[@]}"; do stop_pid "$pid" pgveil; done
    stop_pid "$BOUNCER_PID" pgbouncer
    stop_pid "${BOUNCER_TLS_PID:-}" pgbouncer-tls
    if [[ $PG_STARTED == 1 ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pgdata" stop -m immediate -w \
            >/dev/null 2>&1
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        # Keep the server logs next to the results for post-mortems.
        cp "$WORK/pglog/postgresql.log" "$WORK/pgbouncer/pgbouncer.log" "$RUN_DIR/" 2>/dev/null
        rm -rf "$WORK"
    fi
    ((rc == 0)) || log "exiting with status $rc; logs in $RUN_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Waits until something accepts TCP connections on 127.0.0.1:$1 while
# process $2 is alive.
wait_port() {
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || die "$name exited during startup"
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$name is not listening on port $port after 10 s"
}

# Waits until file $1 contains the text $2 while process $3 is alive.
wait_log() {
    local file=$1 text=$2 pid=$3 name=$4 i
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || die "$name exited during startup: $(tail -3 "$file")"
        grep -qF "$text" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$name did not report \"$text\" within 10 s"
}

# utime + stime of process $1, in clock ticks (fields 14 and 15); empty
# when the process is gone.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || true; }

# ---------------------------------------------------------------------------
# Preparation
# ---------------------------------------------------------------------------
[[ $(id -u) == 0 ]] || die "run as root (installs PgBouncer, runs servers as postgres)"
[[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 server binaries not found in $PG_BIN"
command -v pgbench >/dev/null || die "pgbench not found"

# 1000+ client sockets plus as many upstream sockets need descriptors.
if (($(ulimit -n) < 4096)); then
    ulimit -n 4096 || die "cannot raise the open-file limit to 4096"
fi

log "building pgveil (release)"
run_child cargo build --release --quiet --manifest-path "$REPO/Cargo.toml" --bin pgveil
PGVEIL_BIN=$REPO/target/release/pgveil

# PgBouncer (and perf, for --profile) come from Debian's packages; install
# them when they are missing.
packages=(pgbouncer)
[[ -z $PROFILE && $SYSCALLS == 0 ]] || packages+=(linux-perf)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run_child apt-get update -qq
    run_child apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PGBOUNCER_BIN=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[[ -x $PGBOUNCER_BIN ]] || die "pgbouncer not found after installing it"

PG_PORT=$(free_port)
BOUNCER_PORT=$(free_port)
WORK=$(mktemp -d /tmp/pgveil-bench.XXXXXX)
chmod 755 "$WORK"
log "work directory $WORK; ports: postgres $PG_PORT, pgbouncer $BOUNCER_PORT"

# --- PostgreSQL 15 cluster ---------------------------------------------------
# 1,000 idle connections (the memory test) and the benchmark clients.
start_cluster "max_connections = 1200"

# Superuser session over the Unix socket (trusted).
su_psql() { psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/sock" -p "$PG_PORT" -U postgres "$@"; }
su_psql -d postgres -c "CREATE ROLE $BENCH_USER LOGIN PASSWORD '$BENCH_PASSWORD'" \
    -c "CREATE DATABASE $BENCH_DB OWNER $BENCH_USER"

# --- PgBouncer, session mode -------------------------------------------------
# Authentication choice: the auth_file holds the user's SCRAM secret, copied
# from pg_authid, and auth_type is scram-sha-256. PgBouncer then verifies
# clients with SCRAM itself and, because the client proved knowledge of
# that secret, logs in to PostgreSQL with SCRAM as well ("SCRAM
# pass-through", PgBouncer 1.14+), without a plaintext password on disk.
# So all three targets authenticate with SCRAM-SHA-256 end to end. (A
# plaintext password in the auth_file would work too; md5 would not match
# the cluster's SCRAM-only pg_hba.)
mkdir -p "$WORK/pgbouncer"
SCRAM_SECRET=$(su_psql -d postgres -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = '$BENCH_USER'")
[[ $SCRAM_SECRET == SCRAM-SHA-256* ]] || die "unexpected password secret for $BENCH_USER"
printf '"%s" "%s"\n' "$BENCH_USER" "$SCRAM_SECRET" >"$WORK/pgbouncer/userlist.txt"
cat >"$WORK/pgbouncer/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/pgbouncer/userlist.txt
pool_mode = session
; the 64-client workloads need 64 server connections in session mode
default_pool_size = 100
max_client_conn = 2000
logfile = $WORK/pgbouncer/pgbouncer.log
ignore_startup_parameters = extra_float_digits
EOF
chown -R postgres:postgres "$WORK/pgbouncer"
chmod 600 "$WORK/pgbouncer/userlist.txt"
# PgBouncer refuses to run as root. setpriv execs it directly, so $! is
# PgBouncer itself and can be signalled and measured.
log "starting pgbouncer $("$PGBOUNCER_BIN" --version | head -1 | awk '{print $2}')"
setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PGBOUNCER_BIN" "$WORK/pgbouncer/pgbouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!
wait_port "$BOUNCER_PORT" "$BOUNCER_PID" pgbouncer

# --- pgveil ------------------------------------------------------------------
# The benchmark targets: name -> port, and the proxy process whose CPU time
# is measured (none for direct).
declare -A TARGET_PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT)
declare -A TARGET_PID=([pgbouncer]=$BOUNCER_PID)

# start_pgveil NAME [VAR=VALUE...] [-- EXTRA-SERVE-ARGS...]
# Starts a pgveil instance in front of the cluster on a free port, with the
# given environment variables and extra `pgveil serve` arguments (such as
# --config FILE for a policy), and registers it as target NAME. Its log is
# $RUN_DIR/NAME.log, in JSON, which is easy to search; readiness is taken
# from its own log line rather than a TCP probe, which pgveil would log as
# a client that hung up mid-startup.
start_pgveil() {
    local name=$1 port pid vars=()
    shift
    while (($#)) && [[ $1 != -- ]]; do vars+=("$1"); shift; done
    (($#)) && shift
    port=$(free_port)
    # Variable names only: their values may be keys.
    log "starting $name on port $port${vars[*]:+ with ${vars[*]%%=*}}${*:+, args $*}"
    env "${vars[@]}" "$PGVEIL_BIN" serve --listen "127.0.0.1:$port" \
        --upstream "127.0.0.1:$PG_PORT" --log-format json "$@" 2>"$RUN_DIR/$name.log" &
    pid=$!   # env execs pgveil, so this is pgveil's own pid
    PGVEIL_PIDS+=("$pid")
    wait_log "$RUN_DIR/$name.log" "accepting connections" "$pid" "$name"
    TARGET_PORT[$name]=$port
    TARGET_PID[$name]=$pid
}

# pgveil with no policy: pure pass-through.
start_pgveil pgveil

# pgveil with the sample CRM policy (policies/crm.toml), in front of its own
# database, where the customers' personal data is stored encrypted. The
# bench user belongs to crm_app, as the CRM's application login would.
ENC_DB=crm_enc
declare -A TARGET_DB=([pgveil-policy]=$ENC_DB)
# The CRM application declares the purpose that national_id's rule asks
# for, at connection time, so crm_app sees all five columns in plaintext.
declare -A TARGET_ENV=([pgveil-policy]="PGOPTIONS=-cpgveil.purpose=kyc")
su_psql -d postgres -c "CREATE DATABASE $ENC_DB OWNER $BENCH_USER" >/dev/null
su_psql -d postgres -c "CREATE ROLE crm_app NOLOGIN; GRANT crm_app TO $BENCH_USER" >/dev/null
MASTER_KEY=$("$PGVEIL_BIN" keys new-master)
PGVEIL_MASTER_KEY=$MASTER_KEY "$PGVEIL_BIN" keys init --policy "$REPO/policies/crm.toml" \
    --keyring "$WORK/keyring.toml" >/dev/null
printf 'policy = "%s"\nkeyring = "%s"\n' "$REPO/policies/crm.toml" "$WORK/keyring.toml" >"$WORK/policy.toml"
start_pgveil pgveil-policy "PGVEIL_MASTER_KEY=$MASTER_KEY" -- --config "$WORK/policy.toml"

# The encrypted database read through pgveil without a policy: what
# PostgreSQL and the relay cost with ciphertext in the rows, with nothing
# decrypted. Between it and pgveil-policy lies the cost of revealing alone.
TARGET_PORT[pgveil-ciphertext]=${TARGET_PORT[pgveil]}
TARGET_PID[pgveil-ciphertext]=${TARGET_PID[pgveil]}
TARGET_DB[pgveil-ciphertext]=$ENC_DB
# The encrypted database read directly: the base of the latency pgveil
# adds while revealing (pgveil-policy).
TARGET_PORT[direct-ciphertext]=$PG_PORT
TARGET_DB[direct-ciphertext]=$ENC_DB
# pgveil-policy writing to the same table without the ciphertext guards:
# between it and pgveil-policy lies PostgreSQL's cost of checking the
# guards, between it and pgveil pgveil's cost of encrypting (crm-insert-c8).
UNGUARDED_DB=crm_unguarded
su_psql -d postgres -c "CREATE DATABASE $UNGUARDED_DB OWNER $BENCH_USER" >/dev/null
TARGET_PORT[pgveil-policy-unguarded]=${TARGET_PORT[pgveil-policy]}
TARGET_PID[pgveil-policy-unguarded]=${TARGET_PID[pgveil-policy]}
TARGET_DB[pgveil-policy-unguarded]=$UNGUARDED_DB
TARGET_ENV[pgveil-policy-unguarded]=${TARGET_ENV[pgveil-policy]}

# pgveil with no policy and the audit log on, recording every statement.
printf 'keyring = "%s"\n[audit]\ndir = "%s"\nscope = "all"\n' "$WORK/keyring.toml" "$WORK/audit" >"$WORK/audit.toml"
start_pgveil pgveil-audit "PGVEIL_MASTER_KEY=$MASTER_KEY" -- --config "$WORK/audit.toml"
STD_TARGETS="direct pgbouncer pgveil"

# TLS on the client leg: pgveil ([tls]) and a second PgBouncer
# (client_tls_*), both with the same certificate, made here by a test CA;
# pgbench connects to them with sslmode=verify-full. The server leg stays
# plaintext, as for the other targets, so the pair differs only in TLS.
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench CA" -keyout "$WORK/tls/ca.key" -out "$WORK/tls/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$WORK/tls/server.key" -out "$WORK/tls/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$WORK/tls/san.ext"
openssl x509 -req -in "$WORK/tls/server.csr" -CA "$WORK/tls/ca.crt" -CAkey "$WORK/tls/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/tls/san.ext" -out "$WORK/tls/server.crt" 2>/dev/null
chmod 600 "$WORK/tls/server.key"
printf '[tls]\ncert = "%s"\nkey = "%s"\n' "$WORK/tls/server.crt" "$WORK/tls/server.key" >"$WORK/tls.toml"
start_pgveil pgveil-tls -- --config "$WORK/tls.toml"
BOUNCER_TLS_PORT=$(free_port)
mkdir -p "$WORK/pgbouncer-tls"
cp "$WORK/tls/server.crt" "$WORK/tls/server.key" "$WORK/pgbouncer/userlist.txt" "$WORK/pgbouncer-tls/"
sed -e "s/^listen_port = .*/listen_port = $BOUNCER_TLS_PORT/" \
    -e "s|$WORK/pgbouncer/|$WORK/pgbouncer-tls/|g" "$WORK/pgbouncer/pgbouncer.ini" >"$WORK/pgbouncer-tls/pgbouncer.ini"
printf '%s\n' "client_tls_sslmode = allow" \
    "client_tls_cert_file = $WORK/pgbouncer-tls/server.crt" \
    "client_tls_key_file = $WORK/pgbouncer-tls/server.key" \
    "client_tls_protocols = tlsv1.2,tlsv1.3" >>"$WORK/pgbouncer-tls/pgbouncer.ini"
chown -R postgres:postgres "$WORK/pgbouncer-tls"
setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PGBOUNCER_BIN" "$WORK/pgbouncer-tls/pgbouncer.ini" >/dev/null 2>&1 &
BOUNCER_TLS_PID=$!
wait_port "$BOUNCER_TLS_PORT" "$BOUNCER_TLS_PID" pgbouncer-tls
TARGET_PORT[pgbouncer-tls]=$BOUNCER_TLS_PORT
TARGET_PID[pgbouncer-tls]=$BOUNCER_TLS_PID
TARGET_ENV[pgveil-tls]="PGSSLMODE=verify-full PGSSLROOTCERT=$WORK/tls/ca.crt"
TARGET_ENV[pgbouncer-tls]=${TARGET_ENV[pgveil-tls]}
for t in pgveil-tls pgbouncer-tls; do
    # shellcheck disable=SC2086 # VAR=VALUE words, split on purpose
    [[ $(env ${TARGET_ENV[$t]} psql -X -q -At -h 127.0.0.1 -p "${TARGET_PORT[$t]}" -U "$BENCH_USER" \
        -d "$BENCH_DB" -c "SELECT 1") == 1 ]] || die "cannot log in through $t with TLS"
done

# The build to compare with (--baseline), started the same way.
BASE_PASS="" BASE_POLICY=""
if [[ -n $BASELINE ]]; then
    [[ -x $BASELINE ]] || die "--baseline: $BASELINE is not an executable"
    PGVEIL_BIN=$BASELINE start_pgveil pgveil-baseline
    PGVEIL_BIN=$BASELINE start_pgveil pgveil-policy-baseline "PGVEIL_MASTER_KEY=$MASTER_KEY" -- --config "$WORK/policy.toml"
    TARGET_DB[pgveil-policy-baseline]=$ENC_DB
    TARGET_ENV[pgveil-policy-baseline]=${TARGET_ENV[pgveil-policy]}
    BASE_PASS=pgveil-baseline BASE_POLICY=pgveil-policy-baseline
fi
[[ -z $PROFILE || $PROFILE == pgveil* && -n ${TARGET_PID[$PROFILE]:-} ]] ||
    die "--profile: $PROFILE is not a pgveil target (${!TARGET_PID[*]})"

# Every target must accept a SCRAM login from the bench user.
for t in $STD_TARGETS; do
    psql -X -q -At -h 127.0.0.1 -p "${TARGET_PORT[$t]}" -U "$BENCH_USER" -d "$BENCH_DB" \
        -c "SELECT 1" >/dev/null || die "cannot log in through $t"
done

# --- data --------------------------------------------------------------------
log "pgbench -i -s $SCALE and CRM seed data ($NCUST customers), directly"
run_child pgbench -i -s "$SCALE" -q -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" "$BENCH_DB" \
    >"$RUN_DIR/logs/pgbench-init.log" 2>&1 || { cat "$RUN_DIR/logs/pgbench-init.log" >&2; die "pgbench -i failed"; }
psql -X -q -v ON_ERROR_STOP=1 -v ncust="$NCUST" -h 127.0.0.1 -p "$PG_PORT" \
    -U "$BENCH_USER" -d "$BENCH_DB" -f "$BENCHES/crm/schema.sql" >/dev/null
# The same customers, written through pgveil-policy so they are encrypted.
log "CRM seed data ($NCUST customers), encrypted through pgveil-policy"
psql -X -q -v ON_ERROR_STOP=1 -v ncust=0 -h 127.0.0.1 -p "$PG_PORT" \
    -U "$BENCH_USER" -d "$ENC_DB" -f "$BENCHES/crm/schema.sql" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -v ncust=0 -h 127.0.0.1 -p "$PG_PORT" \
    -U "$BENCH_USER" -d "$UNGUARDED_DB" -f "$BENCHES/crm/schema.sql" >/dev/null
# The ciphertext guards a deployment adds (pgveil guard), validated at
# once since the table is still empty: every write to the encrypted table,
# the seed data's too, is checked by PostgreSQL, as in production.
for validate in "" --validate; do
    "$PGVEIL_BIN" guard --policy "$REPO/policies/crm.toml" ${validate:+"$validate"} | psql -X -q -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" -d "$ENC_DB" >/dev/null
done
python3 "$BENCHES/crm/seed.py" "$NCUST" | psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 \
    -p "${TARGET_PORT[pgveil-policy]}" -U "$BENCH_USER" -d "$ENC_DB" >/dev/null
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" -d "$ENC_DB" -c "VACUUM ANALYZE customers"
su_psql -d postgres -c CHECKPOINT

# ---------------------------------------------------------------------------
# Idle-connection memory: hold IDLE_CONNS authenticated connections through
# each proxy and compare its VmRSS before and while they are open. Runs on
# the freshly started processes, before any load.
# ---------------------------------------------------------------------------
MEMORY_ARGS=()
for t in pgveil pgbouncer; do
    log "holding $IDLE_CONNS idle connections through $t"
    rc=0
    run_child python3 "$BENCHES/idle_conns.py" --port "${TARGET_PORT[$t]}" \
        --user "$BENCH_USER" --database "$BENCH_DB" --pid "${TARGET_PID[$t]}" \
        --count "$IDLE_CONNS" >"$RUN_DIR/memory-$t.json" 2>"$RUN_DIR/logs/memory-$t.err" || rc=$?
    ((rc == 0)) || log "idle-connection test through $t failed (status $rc): $(head -c 300 "$RUN_DIR/memory-$t.json" "$RUN_DIR/logs/memory-$t.err")"
    MEMORY_ARGS+=(--memory "$t=$RUN_DIR/memory-$t.json")
done

# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------
WL_NAMES=()          # in run order
declare -A WL_TARGETS # name -> space-separated target names
declare -A WL_ARGS    # name -> pgbench arguments, joined with \x1f

# add_workload NAME "TARGETS" PGBENCH-ARGS...
add_workload() {
    local name=$1 targets="" t
    for t in $2; do
        [[ -z $TARGETS || $t =~ ^($TARGETS)$ ]] && targets+="${targets:+ }$t"
    done
    shift 2
    [[ -z $ONLY || $name =~ $ONLY ]] && [[ -n $targets ]] || return 0
    WL_NAMES+=("$name")
    WL_TARGETS[$name]=$targets
    WL_ARGS[$name]=$(IFS=$'\x1f'; printf '%s' "$*")
}

# add_script_workload NAME "TARGETS" CLIENTS SCRIPT[@WEIGHT]...
# A custom-script workload: the scripts (paths relative to benches/) are
# mixed by weight in one pgbench run with the extended protocol and
# prepared statements (bind parameters, as an application sends them), with
# :ncust set to the number of seeded customers.
add_script_workload() {
    local name=$1 targets=$2 clients=$3 s
    shift 3
    local args=(-M prepared -c "$clients" -j "$((clients < 2 ? clients : 2))" -D "ncust=$NCUST")
    for s in "$@"; do args+=(-f "$BENCHES/$s"); done
    add_workload "$name" "$targets" "${args[@]}"
}

# Pass-through workloads: pgbench's built-in scripts.
add_workload select-simple-c8    "$STD_TARGETS pgveil-audit $BASE_PASS" -S -M simple   -c 8  -j 2
add_workload select-simple-c64   "$STD_TARGETS" -S -M simple   -c 64 -j 2
add_workload select-prepared-c8  "$STD_TARGETS pgveil-audit $BASE_PASS" -S -M prepared -c 8  -j 2
add_workload select-prepared-c64 "$STD_TARGETS" -S -M prepared -c 64 -j 2
add_workload tpcb-c8             "$STD_TARGETS"    -M simple   -c 8  -j 2
# TLS on the client leg, through each proxy.
add_workload select-tls-simple-c8   "pgveil-tls pgbouncer-tls" -S -M simple   -c 8 -j 2
add_workload select-tls-prepared-c8 "pgveil-tls pgbouncer-tls" -S -M prepared -c 8 -j 2

# CRM workloads. The CRM mix also runs through pgveil-policy on encrypted
# columns; its ratio to pgveil on the same statements over plaintext is the
# cost of encryption.
add_script_workload crm-mix-c8 "$STD_TARGETS pgveil-policy $BASE_POLICY" 8 \
    crm/lookup_by_email.sql@40 crm/page_of_50.sql@30 \
    crm/update_phone.sql@20 crm/insert_customer.sql@10
# Pages of 50 customers with all five protected columns: 250 values to
# reveal per statement. pgveil-policy/pgveil is the cost of protection;
# pgveil-policy/pgveil-ciphertext its part spent revealing.
add_script_workload crm-page5-c8 "pgveil pgveil-ciphertext pgveil-policy $BASE_POLICY" 8 crm/page_of_50_protected.sql
# Customers registered: one INSERT with five protected values as bind
# parameters. pgveil-policy/pgveil is the cost of encrypting them and of
# PostgreSQL checking the guards (issue 19's goal: at least 0.9);
# pgveil-policy-unguarded/pgveil the cost of encrypting alone.
add_script_workload crm-insert-c8 "pgveil pgveil-policy pgveil-policy-unguarded $BASE_POLICY" 8 crm/insert_only.sql
# Added latency (p50, p99 of each transaction, from pgbench's log), one
# client and eight: select-only, and the CRM page read as plaintext through
# each proxy and revealed by pgveil-policy (whose base is the same encrypted
# rows read directly).
add_workload latency-select-c1 "$STD_TARGETS" -S -M prepared -c 1 -j 1
add_workload latency-select-c8 "$STD_TARGETS" -S -M prepared -c 8 -j 2
add_script_workload latency-page-c1 "$STD_TARGETS direct-ciphertext pgveil-policy" 1 crm/page_of_50_protected.sql
add_script_workload latency-page-c8 "$STD_TARGETS direct-ciphertext pgveil-policy" 8 crm/page_of_50_protected.sql
LATENCY_BASES=(pgveil-policy=direct-ciphertext)
EXTRA_RATIOS=(pgveil-policy/pgveil pgveil-policy-unguarded/pgveil pgveil-policy/pgveil-ciphertext pgveil-audit/pgveil pgveil-tls/pgbouncer-tls)
if [[ -n $BASELINE ]]; then
    EXTRA_RATIOS+=(pgveil/pgveil-baseline pgveil-policy/pgveil-policy-baseline)
fi

# The system calls --syscalls counts: a relay's reads, writes and waits,
# and the wake-ups between threads.
SYSCALL_EVENTS=$(printf 'syscalls:sys_enter_%s,' recvfrom read sendto write writev epoll_wait futex)
SYSCALL_EVENTS=${SYSCALL_EVENTS%,}

# Runs perf record on process $1 in the background, into the file $2;
# PERF_PID is its pid. Sampling at 997 Hz, with call graphs.
start_profile() {
    perf record -q -F 997 -g -p "$1" -o "$2" >/dev/null 2>&1 &
    PERF_PID=$!
}

# Stops the perf record started by start_profile and writes the report of
# its hottest functions (self time) next to its data.
stop_profile() {
    local data=$1
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    perf report -i "$data" --stdio --no-children --percent-limit 0.5 \
        --sort symbol -g none >"${data%.data}.txt" 2>/dev/null ||
        log "perf report failed for $data"
}

# Runs one pgbench measurement and records it.
run_one() {
    local round=$1 name=$2 target=$3
    local port=${TARGET_PORT[$target]} pid=${TARGET_PID[$target]:-}
    local log_file="$RUN_DIR/logs/r$round-$name-$target.log" args rc=0 before="" after cpu=()
    IFS=$'\x1f' read -ra args <<<"${WL_ARGS[$name]}"
    if [[ -n $pid ]]; then
        alive "$pid" || log "$target (pid $pid) is not running"
        before=$(cpu_ticks "$pid")
    fi
    local profile=""
    if [[ $target == "$PROFILE" && -n $pid ]]; then
        mkdir -p "$RUN_DIR/profiles"
        profile=$RUN_DIR/profiles/r$round-$name-$target.data
        start_profile "$pid" "$profile"
    fi
    local counted=() stat_pid=""
    if ((SYSCALLS)) && [[ -n $pid ]]; then
        mkdir -p "$RUN_DIR/syscalls"
        counted=(--syscalls "$RUN_DIR/syscalls/r$round-$name-$target.csv")
        perf stat -x, -p "$pid" -o "${counted[1]}" -e "$SYSCALL_EVENTS" 2>/dev/null &
        stat_pid=$!
    fi
    local txlog=()
    if [[ $name == latency-* ]]; then
        mkdir -p "$RUN_DIR/txlogs"
        txlog=(--txlog-prefix "$RUN_DIR/txlogs/r$round-$name-$target")
        args+=(-l --log-prefix "${txlog[1]}")
    fi
    # shellcheck disable=SC2086 # VAR=VALUE words, split on purpose
    run_child env ${TARGET_ENV[$target]:-} pgbench -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -n -T "$DURATION" \
        "${args[@]}" "${TARGET_DB[$target]:-$BENCH_DB}" >"$log_file" 2>&1 || rc=$?
    [[ -z $profile ]] || stop_profile "$profile"
    if [[ -n $stat_pid ]]; then
        kill -INT "$stat_pid" 2>/dev/null || true
        wait "$stat_pid" 2>/dev/null || true
    fi
    if [[ -n $before ]]; then
        after=$(cpu_ticks "$pid")
        if [[ -n $after ]] && alive "$pid"; then
            cpu=(--cpu-ticks "$((after - before))")
        else
            log "$target (pid $pid) stopped running during this run"
        fi
    fi
    python3 "$BENCHES/report.py" record --raw "$RUN_DIR/runs.jsonl" --round "$round" \
        --target "$target" --workload "$name" --log "$log_file" --rc "$rc" "${cpu[@]}" "${txlog[@]}" \
        "${counted[@]}"
}

total_runs=0
for name in "${WL_NAMES[@]}"; do
    read -ra ts <<<"${WL_TARGETS[$name]}"
    total_runs=$((total_runs + ${#ts[@]}))
done
log "$ROUNDS round(s) of $total_runs runs, $DURATION s each (about $((ROUNDS * total_runs * (DURATION + 1) / 60 + 1)) min)"

for ((round = 1; round <= ROUNDS; round++)); do
    for i in "${!WL_NAMES[@]}"; do
        name=${WL_NAMES[$i]}
        read -ra ts <<<"${WL_TARGETS[$name]}"
        # Rotate the target order per round and workload, so no target is
        # always first (cold caches) or always right after another.
        shift_by=$(((round - 1 + i) % ${#ts[@]}))
        ordered=("${ts[@]:shift_by}" "${ts[@]:0:shift_by}")
        log "round $round/$ROUNDS: $name (${ordered[*]})"
        for target in "${ordered[@]}"; do
            run_one "$round" "$name" "$target"
        done
    done
done

# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
status=0
for t in "${!TARGET_PID[@]}"; do
    alive "${TARGET_PID[$t]}" || { log "$t died during the benchmark; see $RUN_DIR"; status=1; }
done

RATIO_ARGS=()
for r in pgveil/direct pgveil/pgbouncer "${EXTRA_RATIOS[@]}"; do RATIO_ARGS+=(--ratio "$r"); done
for b in "${LATENCY_BASES[@]}"; do RATIO_ARGS+=(--latency-base "$b"); done
python3 "$BENCHES/report.py" summary --raw "$RUN_DIR/runs.jsonl" --out "$RUN_DIR/results.json" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%MZ)" --meta "rounds=$ROUNDS" --meta "duration=$DURATION" \
    --meta "nproc=$(nproc)" \
    --meta "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)" \
    --meta "memory=$(free -h | awk '/^Mem:/{print $2}')" \
    --meta "postgresql=$("$PG_BIN/postgres" --version | awk '{print $3}')" \
    --meta "pgbouncer=$("$PGBOUNCER_BIN" --version | head -1 | awk '{print $2}')" \
    --meta "pgveil_commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --meta "scale=$SCALE" --meta "quick=$QUICK" \
    "${RATIO_ARGS[@]}" "${MEMORY_ARGS[@]}" | tee "$RUN_DIR/summary.txt"

# Problems pgveil logged (anything above info level), per instance.
for f in "${!TARGET_PID[@]}"; do
    f=$RUN_DIR/$f.log
    # PgBouncer's log is its own; targets sharing a pgveil have none.
    [[ $f == */pgbouncer.log || ! -e $f ]] && continue
    n=$(grep -Ec '"level":"(WARN|ERROR)"' "$f" || true)
    if ((n > 0)); then
        log "$(basename "$f") has $n warnings or errors; the first ones:"
        { grep -E '"level":"(WARN|ERROR)"' "$f" | head -5 >&2; } || true
    fi
done
grep -q '"ok": false' "$RUN_DIR/runs.jsonl" && status=1
python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("failed") == 0 else 1)' \
    "$RUN_DIR/memory-pgveil.json" 2>/dev/null || { log "idle-connection test through pgveil failed"; status=1; }
ln -sfn "$(basename "$RUN_DIR")" "$(dirname "$RUN_DIR")/latest"
exit "$status"
