#!/usr/bin/env bash
# Functions called only from traps look unreachable to shellcheck.
# shellcheck disable=SC2317
# Migration benchmark: how fast `pgveil migrate` encrypts legacy rows.
#
#   benches/migrate.sh [--rows N] [--rounds N] [--batch-size N] [--out DIR]
#
# Builds pgveil (release), creates a throwaway PostgreSQL 15 cluster and a
# customers table of N rows (default 100,000) with five protected columns
# (full_name, email, phone, national_id, address) written as plaintext
# directly, as before pgveil, then times `pgveil migrate` encrypting them
# all, ROUNDS times (the table is written again as plaintext before each
# round). Prints rows per second per round and their median; the goal on
# a 2-core machine is at least 20,000 rows a second. A second, read-only
# run over the migrated table (nothing left to change) is timed too.
# Results go to DIR/migrate-<timestamp>/ (DIR defaults to bench-results/).
#
# Must run as root (the server runs as the postgres user). Everything it
# starts is stopped, and its temporary directory removed, on any exit.
# See BENCHMARKS.md.
set -euo pipefail

usage() {
    sed -n '/^# Migration benchmark/,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

ROWS=100000
ROUNDS=3
BATCH=""
OUT=""
while (($#)); do
    case $1 in
        --rows) ROWS=${2:?--rows needs a number}; shift ;;
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift ;;
        --batch-size) BATCH=${2:?--batch-size needs a number}; shift ;;
        --out) OUT=${2:?--out needs a directory}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "migrate.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $ROWS =~ ^[1-9][0-9]*$ ]] || { echo "migrate.sh: bad --rows $ROWS" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "migrate.sh: bad --rounds $ROUNDS" >&2; exit 2; }
[[ -z $BATCH || $BATCH =~ ^[1-9][0-9]*$ ]] || { echo "migrate.sh: bad --batch-size $BATCH" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"
new_run_dir migrate

WORK=""
PG_STARTED=0
CHILD_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_child_and_cluster
    ((rc == 0)) || log "exiting with status $rc; logs in $RUN_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) == 0 ]] || die "run as root (runs the server as postgres)"
[[ -x $PG_BIN/initdb ]] || die "PostgreSQL 15 server binaries not found in $PG_BIN"

log "building pgveil (release)"
run_child cargo build --release --quiet --manifest-path "$REPO/Cargo.toml" --bin pgveil
PGVEIL_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/pgveil

PG_PORT=$(free_port)
WORK=$(mktemp -d /tmp/pgveil-bench-migrate.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/pgveil"
# The same cluster as benches/e2e.sh's, without autovacuum, which would
# race the migration's updates.
start_cluster "autovacuum = off"

su_psql() { psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/sock" -p "$PG_PORT" -U postgres -d postgres "$@"; }
PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
su_psql -c "CREATE ROLE migrator LOGIN PASSWORD '$PASSWORD'"
su_psql <<'EOF'
CREATE TABLE public.customers (
    id          bigserial PRIMARY KEY,
    full_name   text,
    email       text,
    phone       text,
    national_id text,
    address     text,
    segment     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.customers OWNER TO migrator;
EOF

# The policy: the sample CRM's five columns (two deterministic).
P=$WORK/pgveil
cat >"$P/policy.toml" <<'EOF'
[[column]]
table = "customers"
column = "full_name"
reveal = { migrator = "plaintext" }
[[column]]
table = "customers"
column = "email"
encryption = "deterministic"
reveal = { migrator = "plaintext" }
[[column]]
table = "customers"
column = "phone"
encryption = "deterministic"
reveal = { migrator = "plaintext" }
[[column]]
table = "customers"
column = "national_id"
reveal = { migrator = "plaintext" }
[[column]]
table = "customers"
column = "address"
reveal = { migrator = "plaintext" }
EOF
umask 077
"$PGVEIL_BIN" keys new-master >"$P/master.key"
printf '%s\n' "$PASSWORD" >"$P/password"
"$PGVEIL_BIN" keys init --policy "$P/policy.toml" --keyring "$P/keyring.toml" \
    --master-key-file "$P/master.key" >/dev/null
cat >"$P/pgveil.toml" <<EOF
upstream = "127.0.0.1:$PG_PORT"
policy = "$P/policy.toml"
keyring = "$P/keyring.toml"
master_key_file = "$P/master.key"
[maintenance]
user = "migrator"
database = "postgres"
password_file = "$P/password"
[audit]
dir = "$P/audit"
EOF

# Legacy rows: plaintext, written straight to PostgreSQL.
load() {
    su_psql -c "TRUNCATE public.customers" -c "
        INSERT INTO public.customers (full_name, email, phone, national_id, address, segment)
        SELECT 'Customer ' || g || ' Lastname',
               'customer' || g || '@example.com',
               '+1 (555) ' || lpad((g % 10000000)::text, 7, '0'),
               'ID-' || lpad(g::text, 9, '0'),
               g || ' Main Street, Springfield, 12345',
               (ARRAY['retail', 'business', 'vip'])[1 + g % 3]
        FROM pg_catalog.generate_series(1, $ROWS) AS g" -c "VACUUM ANALYZE public.customers"
}

# Runs pgveil migrate; prints its rows per second.
migrate() {
    local name=$1
    shift
    "$PGVEIL_BIN" migrate --config "$P/pgveil.toml" ${BATCH:+--batch-size "$BATCH"} "$@" \
        >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.err" || {
        cat "$RUN_DIR/$name.out" "$RUN_DIR/$name.err" >&2
        die "pgveil migrate failed ($name)"
    }
    sed -n 's/^\(migrated\|read\) [0-9]* rows in [0-9.]* s (\([0-9]*\) rows\/s)$/\2/p' "$RUN_DIR/$name.out"
}

RATES=()
for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round: loading $ROWS legacy rows"
    load
    rate=$(migrate "round$round")
    left=$(su_psql -At -c "SELECT count(*) FROM public.customers WHERE NOT (full_name LIKE 'pgv1:%'
        AND email LIKE 'pgv1:%' AND phone LIKE 'pgv1:%' AND national_id LIKE 'pgv1:%'
        AND address LIKE 'pgv1:%')")
    [[ $left == 0 ]] || die "round $round left $left rows with plaintext"
    log "round $round: $rate rows/s (5 columns encrypted per row)"
    RATES+=("$rate")
done
again=$(migrate "rerun")
log "a run over the migrated table (nothing to change): $again rows/s"

median=$(printf '%s\n' "${RATES[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
{
    echo "pgveil migrate: $ROWS rows, 5 protected columns, batch ${BATCH:-default}"
    echo "rounds (rows/s): ${RATES[*]}"
    echo "median: $median rows/s (goal: at least 20000)"
    echo "rerun over migrated rows: $again rows/s"
} | tee "$RUN_DIR/summary.txt"
