"""pytest plugin: writes when each test starts and ends (UTC, like pgveil's
log) to the file named by $DRIVERS_TIMELINE, to match pgveil log lines to
the test that caused them. Loaded by run.sh with -p timeline."""

import datetime
import os

_path = os.environ.get("DRIVERS_TIMELINE")


def _write(line):
    if _path:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with open(_path, "a", encoding="utf-8") as f:
            f.write(f"{now} {line}\n")


def pytest_runtest_logstart(nodeid, location):
    _write(f"START {nodeid}")


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _write(f"{report.when.upper()} {report.outcome} {report.nodeid}")
