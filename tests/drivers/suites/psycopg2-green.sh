# psycopg2's suite in "green" mode (PSYCOPG2_TEST_GREEN=1): every
# connection uses libpq's non-blocking calls through a wait callback
# (psycopg2.extras.wait_select), the path coroutine libraries (gevent,
# eventlet) use. Same sdist, venv and database as the psycopg2 suite.

# shellcheck source=psycopg2.sh
source "$(dirname "${BASH_SOURCE[0]}")/psycopg2.sh"
export PSYCOPG2_TEST_GREEN=1
