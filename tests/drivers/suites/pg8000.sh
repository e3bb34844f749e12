# pg8000's own test suite (test/ of the pg8000 sdist), run with pytest.
# pg8000 is a pure-Python driver (the one SQLAlchemy and many serverless
# setups use); it speaks the protocol itself, extended query protocol with
# unnamed and named statements. Sourced by run.sh. Override the version
# with PG8000_VERSION.

PG8000_VERSION="${PG8000_VERSION:-1.31.6}"
# The tests connect as postgres/pw (password from PGPASSWORD) to the
# default database "postgres"; run.sh recreates it before each run.
SUITE_DB=postgres
SUITE_USER=postgres
SUITE_PASSWORD=pw

suite_prepare() {
    local dir="$DRIVERS_CACHE/pg8000-$PG8000_VERSION"
    SUITE_SRC="$dir/src/pg8000-$PG8000_VERSION"
    SUITE_VENV="$dir/venv"
    if [[ ! -f "$dir/.ready" ]]; then
        log "preparing pg8000 $PG8000_VERSION in $dir"
        rm -rf "$dir"
        mkdir -p "$dir/src"
        python3 -m venv "$SUITE_VENV"
        "$SUITE_VENV/bin/pip" download -q --no-deps --no-binary :all: \
            -d "$dir" "pg8000==$PG8000_VERSION" >&2
        tar -xzf "$dir/pg8000-$PG8000_VERSION.tar.gz" -C "$dir/src"
        "$SUITE_VENV/bin/pip" install -q "pg8000==$PG8000_VERSION" \
            "pytest>=8,<9" "pytest-timeout>=2,<3" pytest-mock pytest-benchmark pytz >&2
        touch "$dir/.ready"
    fi
}

suite_db_setup() {
    echo "CREATE EXTENSION IF NOT EXISTS hstore;"
}

# suite_run LABEL PORT JUNIT_FILE
suite_run() {
    local port=$2 junit=$3
    cd "$SUITE_SRC"
    local targets=("${TARGETS[@]}")
    [[ "${targets[*]}" == tests ]] && targets=(test)
    PGHOST=127.0.0.1 PGPORT="$port" PGPASSWORD="$SUITE_PASSWORD" \
    timeout --kill-after=30 1200 \
    "$SUITE_VENV/bin/python" -m pytest "${targets[@]}" -p no:cacheprovider -p timeline \
        -o junit_family=xunit1 --benchmark-disable \
        --timeout="$TEST_TIMEOUT" -q -rfE --junitxml="$junit" "${EXTRA_ARGS[@]}"
}
