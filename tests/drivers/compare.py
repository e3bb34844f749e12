#!/usr/bin/env python3
"""Compares two JUnit XML reports: the suite run directly and through pgveil.

Prints the counts and every test that passed directly but did not pass
through pgveil. Exit 0 when each such test is in the allow-list, else 1.

    compare.py [--allow FILE] DIRECT.xml PROXY.xml
    compare.py --single RUN.xml      # just the counts of one run
    compare.py --list-regressions [--allow FILE] DIRECT.xml PROXY.xml
                                     # pytest node ids of the tests that
                                     # differ and are not allow-listed
    compare.py --reruns FILE ...     # FILE: lines "proxy|direct RERUN.xml";
                                     # a differing test that passed every
                                     # re-run through pgveil is FLAKY and
                                     # does not fail the run (unless --strict)

The allow-list has one test id per line, then '#' and the reason; blank
lines and lines starting with '#' are ignored.
"""

import argparse
import sys
import xml.etree.ElementTree as ET


NODEIDS = {}


def results(path):
    """Maps test id -> (status, message) for each testcase in a report."""
    out = {}
    for case in ET.parse(path).iter("testcase"):
        tid = f"{case.get('classname', '')}::{case.get('name', '')}"
        NODEIDS.setdefault(tid, nodeid(case))
        status, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                status = child.tag
                message = (child.get("message") or child.text or "").strip()
                break
            if child.tag == "skipped":
                status = "skipped"
                message = (child.get("message") or "").strip()
        # A test can be reported twice (a failing teardown is a second
        # entry); the worst outcome counts.
        if tid in out and out[tid][0] in ("failure", "error"):
            continue
        out[tid] = (status, message)
    return out


def counts(res):
    c = {"passed": 0, "failure": 0, "error": 0, "skipped": 0}
    for status, _ in res.values():
        c[status] += 1
    return c


def load_allow(path):
    allow = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                tid, _, reason = line.partition("#")
                allow[tid.strip()] = reason.strip()
    except FileNotFoundError:
        pass
    return allow


def short(message, limit=300):
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--allow")
    ap.add_argument("--single", action="store_true")
    ap.add_argument("--list-regressions", action="store_true")
    ap.add_argument("--reruns")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("reports", nargs="*")
    args = ap.parse_args()


    if args.single:
        res = results(args.reports[0])
        c = counts(res)
        print(f"total {len(res)}: passed {c['passed']}, failed {c['failure']}, "
              f"errors {c['error']}, skipped {c['skipped']}")
        for tid, (status, message) in sorted(res.items()):
            if status in ("failure", "error"):
                print(f"  {status.upper():7} {tid}\n          {short(message)}")
        return 0

    direct, proxy = results(args.reports[0]), results(args.reports[1])
    allow = load_allow(args.allow) if args.allow else {}
    cd, cp = counts(direct), counts(proxy)
    passed_direct = {t for t, (s, _) in direct.items() if s == "passed"}
    passed_proxy = {t for t, (s, _) in proxy.items() if s == "passed"}
    regressions = sorted(passed_direct - passed_proxy)
    bad = [t for t in regressions if t not in allow]
    allowed = [t for t in regressions if t in allow]
    only_proxy = sorted(passed_proxy - passed_direct)
    if args.list_regressions:
        for t in bad:
            print(NODEIDS[t])
        return 0

    # Re-run tallies: id -> {"proxy": [passes, runs], "direct": [...]}.
    reruns = {}
    if args.reruns:
        with open(args.reruns, encoding="utf-8") as f:
            for line in f:
                label, _, path = line.strip().partition(" ")
                try:
                    res = results(path)
                except (OSError, ET.ParseError):
                    continue
                for t in bad:
                    tally = reruns.setdefault(t, {"proxy": [0, 0], "direct": [0, 0]})
                    tally[label][1] += 1
                    if res.get(t, ("missing",))[0] == "passed":
                        tally[label][0] += 1
    flaky = [t for t in bad if t in reruns and reruns[t]["proxy"][1] > 0
             and reruns[t]["proxy"][0] == reruns[t]["proxy"][1]]
    failing = [t for t in bad if args.strict or t not in flaky]

    print("=" * 72)
    print(f"total tests:            {len(set(direct) | set(proxy))}")
    print(f"passed directly:        {len(passed_direct)}  "
          f"(failed {cd['failure']}, errors {cd['error']}, skipped {cd['skipped']})")
    print(f"passed through pgveil:  {len(passed_proxy)}  "
          f"(failed {cp['failure']}, errors {cp['error']}, skipped {cp['skipped']})")
    print(f"pass directly, not through pgveil: {len(regressions)} "
          f"({len(allowed)} allow-listed, {len(bad)} not)")
    for t in bad:
        status, message = proxy.get(t, ("missing", ""))
        tag = "FLAKY" if t in flaky else "FAIL"
        print(f"  {tag}  {t}  [{status}]\n        {short(message)}")
        if t in reruns:
            p, d = reruns[t]["proxy"], reruns[t]["direct"]
            print(f"        re-runs: through pgveil passed {p[0]}/{p[1]}, "
                  f"directly passed {d[0]}/{d[1]}")
    for t in allowed:
        print(f"  ALLOWED  {t}  # {allow[t]}")
    if only_proxy:
        print(f"pass through pgveil, not directly: {len(only_proxy)}")
        for t in only_proxy:
            print(f"  {t}  [direct: {direct.get(t, ('missing', ''))[0]}]")
    stale = sorted(t for t in allow if t not in regressions)
    if stale:
        print(f"allow-listed, no difference this run: {', '.join(stale)}")
    print("=" * 72)
    print(f"{'OK' if not failing else 'FAILED'}: {len(failing)} test(s) pass directly "
          f"but fail through pgveil"
          + (f" ({len(flaky)} more flaky: failed once, passed every re-run)"
             if flaky and not args.strict else ""))
    return 1 if failing else 0


def nodeid(case):
    """The pytest node id of a junit testcase (xunit1 has its file)."""
    classname, name, path = case.get("classname", ""), case.get("name", ""), case.get("file")
    if not path:
        module, _, cls = classname.rpartition(".")
        return f"{module.replace('.', '/')}.py::{cls}::{name}"
    module = path[:-3].replace("/", ".")
    if classname == module:
        return f"{path}::{name}"
    return f"{path}::{classname[len(module) + 1:].replace('.', '::')}::{name}"


if __name__ == "__main__":
    sys.exit(main())
