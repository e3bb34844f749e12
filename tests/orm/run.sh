#!/usr/bin/env bash
# Drives pgveil with other drivers and ORMs (Python, Node.js, Java) through
# the sample CRM (policies/crm.sql, policies/crm.toml), as each of its
# roles, then scans the database directly for every plaintext value any of
# them wrote. See tests/orm/README.md.
#
#   tests/orm/run.sh [CLIENT...]     default: every client
#
# Clients: psycopg3-client psycopg3-server psycopg3-binary sqlalchemy django
# django-server asyncpg node-pg knex jdbc. Environment knobs:
#   PGVEIL_BIN=path   use this pgveil binary instead of building a release one
#   PGVEIL_LOG=filter pgveil's log filter (RUST_LOG), default info
#   ORM_TRACE=1       Python clients print the traceback of each failure
#   KEEP=1            keep the work directory (outputs, logs, dumps)
#   ORM_TLS=1         TLS on both legs: pgveil with [tls] mode = "require"
#                     and [upstream_tls] verify-full, PostgreSQL with ssl on
#                     admitting TCP logins only under TLS, every client with
#                     verify-full (libpq ones with channel_binding=disable)
#
# Exit code: 0 when every step of every client passed, every role saw what
# the policy grants and no plaintext was found; 1 otherwise; 2 on a setup
# error.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ALL_CLIENTS=(psycopg3-client psycopg3-server psycopg3-binary sqlalchemy django django-server asyncpg node-pg knex jdbc)
if (($# > 0)); then CLIENTS=("$@"); else CLIENTS=("${ALL_CLIENTS[@]}"); fi
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PGVEIL_LOG="${PGVEIL_LOG:-info}"
DEPS="$REPO/target/orm"
DB=crm
PASSWORD="orm-pw-$RANDOM$RANDOM"
JDBC_JAR=/usr/share/java/postgresql.jar

log() { echo "[orm $(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# shellcheck source=../common/cluster.sh
source "$REPO/tests/common/cluster.sh"

for client in "${CLIENTS[@]}"; do
    [[ " ${ALL_CLIENTS[*]} " == *" $client "* ]] || die "unknown client $client (clients: ${ALL_CLIENTS[*]})"
done

# ---------------------------------------------------------------- packages

need_apt postgresql-15 python3 python3-venv nodejs openjdk-17-jdk-headless \
    libpostgresql-jdbc-java ca-certificates
[[ -x "$PG_BIN/initdb" ]] || die "no initdb in $PG_BIN"
command -v npm >/dev/null || need_apt npm   # nodejs packages from elsewhere ship npm
mkdir -p "$DEPS"

# Each dependency set is installed once and stamped with its list, so a
# change of versions reinstalls it.
installed() { [[ -f "$1/.stamp" && "$(cat "$1/.stamp")" == "$2" ]]; }

PY_REQS="psycopg[binary]==3.3.9 psycopg2-binary==2.9.13 SQLAlchemy==2.1.9 Django==5.2.19 asyncpg==0.32.0"
if ! installed "$DEPS/venv" "$PY_REQS"; then
    log "installing Python packages into $DEPS/venv: $PY_REQS"
    rm -rf "$DEPS/venv"
    python3 -m venv "$DEPS/venv"
    # shellcheck disable=SC2086
    "$DEPS/venv/bin/pip" install -q $PY_REQS >&2 || die "pip install failed"
    echo "$PY_REQS" >"$DEPS/venv/.stamp"
fi

NODE_REQS="pg@8.23.1 knex@3.3.0"
if ! installed "$DEPS/node" "$NODE_REQS"; then
    log "installing npm packages into $DEPS/node: $NODE_REQS"
    rm -rf "$DEPS/node"
    mkdir -p "$DEPS/node"
    echo '{"private": true}' >"$DEPS/node/package.json"
    # shellcheck disable=SC2086
    (cd "$DEPS/node" && npm install --no-audit --no-fund --silent $NODE_REQS) >&2 || die "npm install failed"
    echo "$NODE_REQS" >"$DEPS/node/.stamp"
fi

if [[ " ${CLIENTS[*]} " == *" jdbc "* ]]; then
    mkdir -p "$DEPS/java"
    javac -d "$DEPS/java" -cp "$JDBC_JAR" "$HERE/clients/CrmJdbc.java" || die "javac failed"
fi

if [[ -z "${PGVEIL_BIN:-}" ]]; then
    log "building pgveil (cargo build --release)"
    (cd "$REPO" && nice cargo build --release --bin pgveil -q) >&2 || die "cargo build failed"
    PGVEIL_BIN="$REPO/target/release/pgveil"
fi

# ---------------------------------------------------------------- cluster

WORK="$(mktemp -d /tmp/pgveil-orm.XXXXXX)"
chmod 755 "$WORK"
PGVEIL_PID=""
trap cleanup_work EXIT
trap 'exit 130' INT TERM

cluster_start
psql_super -d postgres -c "CREATE DATABASE $DB" >/dev/null
psql_super -d "$DB" -f "$REPO/policies/crm.sql" >/dev/null
for pair in crm_user:crm_app support_user:support analyst_user:analyst kyc_user:kyc_officer; do
    psql_super -d "$DB" -c "CREATE ROLE ${pair%%:*} LOGIN PASSWORD '$PASSWORD' IN ROLE ${pair#*:}" >/dev/null
done

# ---------------------------------------------------------------- TLS

# ORM_TLS=1: a test CA and one certificate (localhost, 127.0.0.1) that
# pgveil and PostgreSQL both show; the server then takes TCP logins only
# under TLS, so a session that reaches it went through pgveil's TLS too.
TLS_CONFIG=""
CLIENT_TLS_ENV=()
if [[ "${ORM_TLS:-0}" == 1 ]]; then
    TLS="$WORK/tls"
    mkdir -p "$TLS"
    (
        umask 077
        openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 2 \
            -subj "/CN=pgveil orm test CA" -keyout "$TLS/ca.key" -out "$TLS/ca.crt"
        openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
            -subj "/CN=localhost" -keyout "$TLS/server.key" -out "$TLS/server.csr"
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$TLS/san.ext"
        openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
            -CAcreateserial -days 2 -extfile "$TLS/san.ext" -out "$TLS/server.crt"
    ) >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; die "openssl failed"; }
    chmod 755 "$TLS"
    chmod 644 "$TLS/ca.crt" "$TLS/server.crt"
    install -o postgres -m 600 "$TLS/server.key" "$WORK/data/server.key"
    install -o postgres -m 644 "$TLS/server.crt" "$WORK/data/server.crt"
    psql_super -d postgres -c "ALTER SYSTEM SET ssl = on" >/dev/null
    cat >"$WORK/data/pg_hba.conf" <<EOF
local     all all               trust
hostssl   all all  127.0.0.1/32 scram-sha-256
hostnossl all all  127.0.0.1/32 reject
EOF
    psql_super -d postgres -c "SELECT pg_reload_conf()" >/dev/null
    for _ in $(seq 100); do   # the reload is asynchronous
        PGPASSWORD="$SUPERPW" psql -X -q -h 127.0.0.1 -p "$PGPORT_DIRECT" -U postgres -d postgres \
            "sslmode=require" -c "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.1
    done
    TLS_CONFIG="
[tls]
cert = \"$TLS/server.crt\"
key = \"$TLS/server.key\"
mode = \"require\"

[upstream_tls]
mode = \"verify-full\"
ca = \"$TLS/ca.crt\"
"
    # libpq (psycopg, psycopg2) and asyncpg read these; node-pg and JDBC
    # read ORM_TLS_CA in their clients. Channel binding cannot cross
    # pgveil when both legs are TLS (README, TLS).
    CLIENT_TLS_ENV=(PGSSLMODE=verify-full "PGSSLROOTCERT=$TLS/ca.crt" PGCHANNELBINDING=disable
        "ORM_TLS_CA=$TLS/ca.crt")
    log "TLS on both legs (ORM_TLS=1)"
fi

# ---------------------------------------------------------------- pgveil

PGVEIL_MASTER_KEY="$("$PGVEIL_BIN" keys new-master)"
export PGVEIL_MASTER_KEY
"$PGVEIL_BIN" keys init --policy "$REPO/policies/crm.toml" --keyring "$WORK/keyring.toml" >/dev/null \
    || die "pgveil keys init failed"
PROXY_PORT="$(free_port)"
cat >"$WORK/pgveil.toml" <<EOF
listen = "127.0.0.1:$PROXY_PORT"
upstream = "127.0.0.1:$PGPORT_DIRECT"
policy = "$REPO/policies/crm.toml"
keyring = "$WORK/keyring.toml"
$TLS_CONFIG
EOF
RUST_LOG="$PGVEIL_LOG" "$PGVEIL_BIN" serve --config "$WORK/pgveil.toml" 2>"$WORK/pgveil.log" &
PGVEIL_PID=$!
wait_for_pgveil "$PGVEIL_PID" "$WORK/pgveil.log"
log "pgveil pid $PGVEIL_PID on port $PROXY_PORT in front of PostgreSQL on $PGPORT_DIRECT (database $DB)"

# ---------------------------------------------------------------- clients

client_command() {
    local py="$DEPS/venv/bin/python" dir="$HERE/clients"
    case "$1" in
        psycopg3-*) echo "$py $dir/psycopg3_client.py ${1#psycopg3-}" ;;
        sqlalchemy) echo "$py $dir/sqlalchemy_client.py" ;;
        django) echo "$py $dir/django_client.py" ;;
        django-server) echo "env DJANGO_SERVER_SIDE_BINDING=1 $py $dir/django_client.py" ;;
        asyncpg) echo "$py $dir/asyncpg_client.py" ;;
        node-pg) echo "node $dir/node_pg.js" ;;
        knex) echo "node $dir/knex_client.js" ;;
        jdbc) echo "java -cp $DEPS/java:$JDBC_JAR CrmJdbc" ;;
    esac
}

status=0
mkdir "$WORK/plans"
for i in "${!ALL_CLIENTS[@]}"; do
    # Plans of every client, so that the scan looks for all of them.
    python3 "$HERE/crm.py" plan "${ALL_CLIENTS[$i]}" "$((i + 1))" >"$WORK/plans/${ALL_CLIENTS[$i]}.plan"
done
SUMMARY=()
for client in "${CLIENTS[@]}"; do
    log "running $client"
    set +e
    # shellcheck disable=SC2046
    env "${CLIENT_TLS_ENV[@]}" \
    PGHOST=127.0.0.1 PGPORT="$PROXY_PORT" PGDATABASE="$DB" ORM_PASSWORD="$PASSWORD" \
        ORM_PLAN="$WORK/plans/$client.plan" ORM_OBSERVED="$WORK/$client.observed" \
        NODE_PATH="$DEPS/node/node_modules" \
        timeout 300 $(client_command "$client") >"$WORK/$client.out" 2>&1
    rc=$?
    python3 "$HERE/crm.py" check "$WORK/plans/$client.plan" "$WORK/$client.observed" >"$WORK/$client.check" 2>&1
    check_rc=$?
    set -e
    cat "$WORK/$client.out" "$WORK/$client.check"
    passed=$(grep -c '^PASS ' "$WORK/$client.out" || true)
    failed=$(grep -c '^FAIL ' "$WORK/$client.out" || true)
    wrong=$(grep -c 'wrong view' "$WORK/$client.check" || true)
    SUMMARY+=("$(printf '%-16s %3d passed %3d failed %3d wrong views  exit %d' "$client" "$passed" "$failed" "$wrong" "$rc")")
    ((rc == 0 && check_rc == 0)) || status=1
done

OBSERVED_PLANS=() OBSERVED=()
for client in "${CLIENTS[@]}"; do
    OBSERVED_PLANS+=("$WORK/plans/$client.plan")
    OBSERVED+=("$WORK/$client.observed")
done
python3 "$HERE/crm.py" pseudonyms "${OBSERVED_PLANS[@]}" "${OBSERVED[@]}" || status=1

# ---------------------------------------------------------------- scan

# Directly, as the superuser: every table's rows, a pg_dump, and the data
# files and server log once everything is on disk.
log "scanning the database for plaintext"
mkdir "$WORK/scan"
psql_super -d "$DB" -At -c "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables
    WHERE table_schema NOT IN ('pg_catalog', 'information_schema')" >"$WORK/scan/tables.txt"
while read -r table; do
    psql_super -d "$DB" -c "\\copy (SELECT * FROM $table) TO '$WORK/scan/table-$table.txt'"
done <"$WORK/scan/tables.txt"
runuser -u postgres -- pg_dump -h "$WORK/sock" -p "$PGPORT_DIRECT" -d "$DB" >"$WORK/scan/pg_dump.sql"
psql_super -d "$DB" -c CHECKPOINT >/dev/null
python3 "$HERE/crm.py" scan "$WORK/plans" "$WORK/scan" "$WORK/data" "$WORK/pglog" || status=1

echo "---------------------------------------------------------------- summary"
printf '%s\n' "${SUMMARY[@]}"
grep -E ' (WARN|ERROR) ' "$WORK/pgveil.log" | sed 's/\x1b\[[0-9;]*m//g' | sort | uniq -c | head -20 || true
exit $status
