# asyncpg's own test suite (tests/ of the asyncpg sdist), run with pytest
# against an existing server ("unmanaged cluster" mode: PGHOST is set).
# The driver itself is the PyPI wheel of the same version: asyncpg speaks
# the protocol itself (no libpq), so this exercises the extended query
# protocol, binary formats, pipelining, COPY and cancellation differently
# from psycopg2. Sourced by run.sh. Override the version with ASYNCPG_VERSION.

ASYNCPG_VERSION="${ASYNCPG_VERSION:-0.32.0}"
SUITE_DB=postgres
# The tests connect to database "postgres" (pools, cache invalidation) and
# expect a superuser; run.sh recreates "postgres" before each run.
SUITE_USER=postgres
SUITE_PASSWORD=asyncpg-pw

suite_prepare() {
    local dir="$DRIVERS_CACHE/asyncpg-$ASYNCPG_VERSION"
    SUITE_SRC="$dir/run"
    SUITE_VENV="$dir/venv"
    if [[ ! -f "$dir/.ready" ]]; then
        log "preparing asyncpg $ASYNCPG_VERSION in $dir"
        rm -rf "$dir"
        mkdir -p "$dir/src" "$dir/run"
        python3 -m venv "$SUITE_VENV"
        "$SUITE_VENV/bin/pip" download -q --no-deps --no-binary :all: \
            -d "$dir" "asyncpg==$ASYNCPG_VERSION" >&2
        tar -xzf "$dir/asyncpg-$ASYNCPG_VERSION.tar.gz" -C "$dir/src"
        # Only tests/ is copied out: next to the sdist's uncompiled asyncpg/
        # package, "import asyncpg" would pick up the source tree.
        cp -r "$dir/src/asyncpg-$ASYNCPG_VERSION/tests" "$dir/run/tests"
        "$SUITE_VENV/bin/pip" install -q "asyncpg==$ASYNCPG_VERSION" \
            "pytest>=8,<9" "pytest-timeout>=2,<3" "distro~=1.9.0" >&2
        touch "$dir/.ready"
    fi
}

suite_db_setup() {
    :
}

# suite_run LABEL PORT JUNIT_FILE
suite_run() {
    local port=$2 junit=$3
    cd "$SUITE_SRC"
    PGHOST=127.0.0.1 PGPORT="$port" PGUSER="$SUITE_USER" PGPASSWORD="$SUITE_PASSWORD" \
    PGDATABASE="$SUITE_DB" PGSSLMODE=prefer \
    timeout --kill-after=30 1200 \
    "$SUITE_VENV/bin/python" -m pytest "${TARGETS[@]}" -p no:cacheprovider -p timeline \
        -o junit_family=xunit1 \
        --timeout="$TEST_TIMEOUT" -q -rfE --junitxml="$junit" "${EXTRA_ARGS[@]}"
}
