# psycopg2's own test suite (tests/ of the psycopg2 sdist), run with pytest.
# Sourced by run.sh. Pinned version; override with PSYCOPG2_VERSION.

PSYCOPG2_VERSION="${PSYCOPG2_VERSION:-2.9.13}"
SUITE_DB=psycopg2_test
SUITE_USER=psycopg2
SUITE_PASSWORD=psycopg2-pw

suite_prepare() {
    local dir="$DRIVERS_CACHE/psycopg2-$PSYCOPG2_VERSION"
    SUITE_SRC="$dir/src/psycopg2-$PSYCOPG2_VERSION"
    SUITE_VENV="$dir/venv"
    if [[ ! -f "$dir/.ready" ]]; then
        log "preparing psycopg2 $PSYCOPG2_VERSION in $dir"
        rm -rf "$dir"
        mkdir -p "$dir/src"
        python3 -m venv "$SUITE_VENV"
        "$SUITE_VENV/bin/pip" download -q --no-deps --no-binary :all: \
            -d "$dir" "psycopg2==$PSYCOPG2_VERSION" >&2
        tar -xzf "$dir/psycopg2-$PSYCOPG2_VERSION.tar.gz" -C "$dir/src"
        # The driver is built from the same sdist as the tests, against the
        # system libpq (libpq-dev).
        "$SUITE_VENV/bin/pip" install -q --no-binary psycopg2 \
            "$dir/psycopg2-$PSYCOPG2_VERSION.tar.gz" "pytest>=8,<9" "pytest-timeout>=2,<3" >&2
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
    # The tests' own conftest-free layout: pytest collects the unittest
    # classes; python_functions is cleared so the modules' test_suite()
    # helpers are not collected as tests.
    PSYCOPG2_TESTDB="$SUITE_DB" \
    PSYCOPG2_TESTDB_HOST=127.0.0.1 \
    PSYCOPG2_TESTDB_PORT="$port" \
    PSYCOPG2_TESTDB_USER="$SUITE_USER" \
    PSYCOPG2_TESTDB_PASSWORD="$SUITE_PASSWORD" \
    PSYCOPG2_TEST_REPL_DSN="" \
    timeout --kill-after=30 1200 \
    "$SUITE_VENV/bin/python" -m pytest "${TARGETS[@]}" -p no:cacheprovider -p timeline \
        -o python_functions=__none__ -o junit_family=xunit1 \
        --timeout="$TEST_TIMEOUT" -q -rfE --junitxml="$junit" "${EXTRA_ARGS[@]}"
}
