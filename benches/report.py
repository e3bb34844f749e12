#!/usr/bin/env python3
"""Bookkeeping for benches/e2e.sh: record pgbench runs, summarise them.

  report.py record  --raw RUNS.jsonl --round N --target T --workload W
                    --log PGBENCH.log --rc RC [--cpu-ticks TICKS]
                    [--txlog-prefix PREFIX] [--syscalls PERF-STAT.csv]
      Parses one pgbench output and appends one JSON line to RUNS.jsonl.
      With --syscalls, also the proxy's system calls during the run
      (`perf stat -x,` of syscalls:sys_enter_* tracepoints), per
      transaction.
      With --txlog-prefix, also reads pgbench's per-transaction logs
      (PREFIX.*, from pgbench -l), keeps their p50 and p99 latency, and
      deletes them.

  report.py summary --raw RUNS.jsonl --out RESULT.json [--meta K=V ...]
                    [--memory TARGET=FILE ...] [--ratio A/B ...]
                    [--latency-base TARGET=BASE ...]
      Prints the table of median tps per workload and target, the ratios,
      proxy CPU time per transaction, its system calls per transaction
      where counted, the latency each proxy adds (its p50
      and p99 minus those of direct, or of BASE, within one round) and
      idle-connection memory, and writes
      everything (including every raw run) to RESULT.json.

Standard library only.
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

# Default ratios: pgveil against the two baselines. Later targets (pgveil
# with an encryption policy, with the audit log) add theirs with --ratio.
DEFAULT_RATIOS = ["pgveil/direct", "pgveil/pgbouncer"]


def parse_pgbench(text: str) -> dict:
    """The numbers pgbench prints at the end of a run (PostgreSQL 15)."""

    def find(pattern, cast=float):
        m = re.search(pattern, text, re.MULTILINE)
        return cast(m.group(1)) if m else None

    return {
        "tps": find(r"^tps = ([0-9.]+) \(without initial connection time\)"),
        "transactions": find(r"^number of transactions actually processed: (\d+)", int),
        "failed": find(r"^number of failed transactions: (\d+)", int),
        "latency_ms": find(r"^latency average = ([0-9.]+) ms"),
        "initial_connection_ms": find(r"^initial connection time = ([0-9.]+) ms"),
        "aborted": "Run was aborted" in text,
    }


def cmd_record(args) -> int:
    with open(args.log, encoding="utf-8", errors="replace") as f:
        text = f.read()
    run = {
        "round": args.round,
        "target": args.target,
        "workload": args.workload,
        "exit_code": args.rc,
        **parse_pgbench(text),
    }
    if args.cpu_ticks is not None and run["transactions"]:
        ticks_per_sec = os.sysconf("SC_CLK_TCK")
        run["proxy_cpu_seconds"] = args.cpu_ticks / ticks_per_sec
        run["proxy_cpu_us_per_tx"] = round(
            run["proxy_cpu_seconds"] * 1e6 / run["transactions"], 2)
    if args.txlog_prefix:
        run.update(txlog_percentiles(args.txlog_prefix))
    if args.syscalls and run["transactions"]:
        run["syscalls_per_tx"] = {
            name: round(count / run["transactions"], 3)
            for name, count in perf_stat_counts(args.syscalls).items()}
    # A run counts as failed when pgbench said so in any way.
    run["ok"] = bool(args.rc == 0 and run["tps"] and not run["failed"]
                     and not run["aborted"])
    if not run["ok"]:
        # Keep pgbench's own error lines for the report.
        run["errors"] = [l for l in text.splitlines()
                         if "error" in l.lower() or "abort" in l.lower()][:5]
    with open(args.raw, "a", encoding="utf-8") as f:
        f.write(json.dumps(run) + "\n")
    status = "ok" if run["ok"] else "FAILED"
    tps = f"{run['tps']:.0f}" if run["tps"] else "-"
    cpu = (f", proxy {run['proxy_cpu_us_per_tx']} us CPU/tx"
           if "proxy_cpu_us_per_tx" in run else "")
    print(f"    {args.target:<10} {tps:>9} tps  {status}{cpu}", flush=True)
    return 0


def perf_stat_counts(path: str) -> dict:
    """System call name -> count, from `perf stat -x,` output of
    syscalls:sys_enter_NAME tracepoints (count first, event third); empty,
    with a warning, when perf wrote nothing (it could not attach)."""
    counts = {}
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        print(f"    no system call counts: {e}", file=sys.stderr)
        return counts
    with f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) >= 3 and fields[0].isdigit() \
                    and fields[2].startswith("syscalls:sys_enter_"):
                counts[fields[2][len("syscalls:sys_enter_"):]] = int(fields[0])
    return counts


def txlog_percentiles(prefix: str) -> dict:
    """p50 and p99 of the per-transaction latencies (microseconds) in
    pgbench's logs PREFIX.* (one per thread; the third field of each line
    is the latency, or "failed"/"skipped"), then deletes the logs."""
    latencies = []
    files = sorted(glob.glob(glob.escape(prefix) + ".*"))
    for path in files:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
        os.remove(path)
    if not latencies:
        return {"latency_samples": 0}
    latencies.sort()

    def pct(p):
        # Nearest rank.
        return latencies[min(len(latencies) - 1, max(0, round(p / 100 * len(latencies)) - 1))]

    return {"latency_samples": len(latencies), "latency_p50_us": pct(50),
            "latency_p99_us": pct(99)}


def added_latency(runs, workload, target, base, key):
    """The median over rounds of the latency percentile `key` of `target`
    minus that of `base` in the same round."""
    per_round = {}
    for r in runs:
        if r["workload"] == workload and r["ok"] and r["target"] in (target, base) \
                and r.get(key) is not None:
            per_round.setdefault(r["round"], {})[r["target"]] = r[key]
    return median(v[target] - v[base] for v in per_round.values()
                  if target in v and base in v)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def paired_ratio(runs, workload, a, b):
    """The median over rounds of tps(a) / tps(b) within each round: the two
    runs of a round are minutes apart at most, so the ratio does not move
    with the machine's speed over the whole benchmark, which drifts by more
    than the differences measured."""
    tps = {}
    for r in runs:
        if r["workload"] == workload and r["ok"] and r["target"] in (a, b):
            tps.setdefault(r["round"], {})[r["target"]] = r["tps"]
    return median(t[a] / t[b] for t in tps.values() if a in t and b in t)


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def cmd_summary(args) -> int:
    with open(args.raw, encoding="utf-8") as f:
        runs = [json.loads(line) for line in f if line.strip()]
    # Keep first-seen order so the table follows the harness's lists.
    workloads = list(dict.fromkeys(r["workload"] for r in runs))
    targets = list(dict.fromkeys(r["target"] for r in runs))
    ratios = args.ratio or DEFAULT_RATIOS

    medians, cpu = {}, {}
    for w in workloads:
        for t in targets:
            sel = [r for r in runs if r["workload"] == w and r["target"] == t and r["ok"]]
            if sel:
                medians.setdefault(w, {})[t] = round(median(r["tps"] for r in sel), 1)
            c = median(r.get("proxy_cpu_us_per_tx") for r in sel)
            if c is not None:
                cpu.setdefault(w, {})[t] = round(c, 2)

    ratio_values = {}
    for w in workloads:
        for spec in ratios:
            r = paired_ratio(runs, w, *spec.split("/"))
            if r is not None:
                ratio_values.setdefault(w, {})[spec] = round(r, 3)

    meta = dict(kv.split("=", 1) for kv in (args.meta or []))
    rounds = max((r["round"] for r in runs), default=0)
    print()
    print(f"Median tps over {rounds} round(s)"
          + (f", {meta['duration']} s each" if "duration" in meta else "")
          + (f" ({meta['date']})" if "date" in meta else ""))
    print()
    # The ratios this run measured (its targets may be a subset).
    ratios = [s for s in ratios if any(s in v for v in ratio_values.values())]
    header = ["workload"] + targets + ratios
    rows = []
    for w in workloads:
        row = [w] + [fmt(medians.get(w, {}).get(t), ".0f") for t in targets]
        row += [fmt(ratio_values.get(w, {}).get(s), ".2f") for s in ratios]
        rows.append(row)
    print_table(header, rows)
    print()
    print("Each ratio is the median over rounds of the ratio within one round.")

    if cpu:
        proxies = [t for t in targets if any(t in v for v in cpu.values())]
        print()
        print("Proxy CPU time per transaction (user+system, microseconds, median)")
        print()
        print_table(["workload"] + proxies,
                    [[w] + [fmt(cpu.get(w, {}).get(t), ".1f") for t in proxies]
                     for w in workloads if w in cpu])

    syscalls = {}
    for w in workloads:
        for t in targets:
            sel = [r["syscalls_per_tx"] for r in runs if r["workload"] == w
                   and r["target"] == t and r["ok"] and r.get("syscalls_per_tx")]
            for name in dict.fromkeys(n for s in sel for n in s):
                syscalls.setdefault(w, {}).setdefault(t, {})[name] = \
                    median(s.get(name, 0) for s in sel)
    if syscalls:
        names = list(dict.fromkeys(n for v in syscalls.values()
                                   for per in v.values() for n in per))
        print()
        print("Proxy system calls per transaction (perf stat, median over rounds)")
        print()
        print_table(["workload", "target"] + names,
                    [[w, t] + [fmt(per.get(n), ".2f") for n in names]
                     for w, v in syscalls.items() for t, per in v.items()])

    bases = dict(kv.split("=", 1) for kv in (args.latency_base or []))
    latency = {}
    for w in workloads:
        for t in targets:
            sel = [r for r in runs if r["workload"] == w and r["target"] == t and r["ok"]
                   and r.get("latency_p50_us") is not None]
            if not sel:
                continue
            base = bases.get(t, "direct")
            entry = {"p50_us": median(r["latency_p50_us"] for r in sel),
                     "p99_us": median(r["latency_p99_us"] for r in sel)}
            if t != base and t not in bases.values():
                entry["base"] = base
                entry["added_p50_us"] = added_latency(runs, w, t, base, "latency_p50_us")
                entry["added_p99_us"] = added_latency(runs, w, t, base, "latency_p99_us")
            latency.setdefault(w, {})[t] = entry
    if latency:
        print()
        print("Latency per transaction (microseconds, from pgbench's per-transaction log;")
        print("added = the target's minus its base's in the same round, median over rounds)")
        print()
        lrows = []
        for w, per_target in latency.items():
            for t, e in per_target.items():
                lrows.append([w, t, fmt(e["p50_us"], ".0f"), fmt(e["p99_us"], ".0f"),
                              e.get("base", "-"), fmt(e.get("added_p50_us"), ".0f"),
                              fmt(e.get("added_p99_us"), ".0f")])
        print_table(["workload", "target", "p50", "p99", "base", "added p50",
                     "added p99"], lrows)

    memory = {}
    for spec in args.memory or []:
        target, path = spec.split("=", 1)
        try:
            with open(path, encoding="utf-8") as f:
                memory[target] = json.load(f)
        except (OSError, ValueError) as e:
            memory[target] = {"error": str(e)}
    if memory:
        print()
        print("Resident memory with idle client connections (VmRSS)")
        print()
        mrows = []
        for t, m in memory.items():
            mrows.append([t, fmt(m.get("connections"), "d"),
                          fmt(m.get("rss_before_kib"), "d"),
                          fmt(m.get("rss_with_connections_kib"), "d"),
                          fmt(m.get("kib_per_connection"), ".1f"),
                          fmt(m.get("failed"), "d")])
        print_table(["target", "idle conns", "RSS before KiB",
                     "RSS held KiB", "KiB/conn", "failed"], mrows)

    failed = [r for r in runs if not r["ok"]]
    print()
    if failed:
        print(f"FAILED RUNS: {len(failed)}")
        for r in failed:
            print(f"  round {r['round']} {r['target']} {r['workload']}: "
                  f"exit {r['exit_code']}, failed tx {r.get('failed')}, "
                  f"{'; '.join(r.get('errors', []))}")
    else:
        print(f"All {len(runs)} pgbench runs succeeded with no failed transactions.")

    goals = check_goals(ratio_values, memory, latency)
    if goals:
        print()
        print("Goals (informational; a single noisy run can miss):")
        for line in goals:
            print("  " + line)

    result = {"meta": meta, "medians_tps": medians, "ratios": ratio_values,
              "proxy_cpu_us_per_tx": cpu, "syscalls_per_tx": syscalls,
              "latency": latency, "idle_memory": memory,
              "failed_runs": len(failed), "runs": runs}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print()
    print(f"Raw results: {args.out}")
    return 0


# The issues' goals for ratios: (workloads, ratio, goal, aim or None).
SELECT_C8 = ("select-simple-c8", "select-prepared-c8")
RATIO_GOALS = [
    # Issue 19: at least 1.3x PgBouncer, never below 1.0 in a run.
    (SELECT_C8, "pgveil/pgbouncer", 1.3, None),
    (SELECT_C8, "pgveil-audit/pgveil", 0.95, None),
    (SELECT_C8, "pgveil-tls/pgbouncer-tls", 1.0, None),
    (("select-tls-simple-c8", "select-tls-prepared-c8"), "pgveil-tls/pgbouncer-tls", 1.0, None),
    # Revealing: the pages read as plaintext against the same pages read as
    # ciphertext through pass-through pgveil.
    (("crm-page5-c8",), "pgveil-policy/pgveil-ciphertext", 0.85, None),
    # Encrypting writes: the INSERT with five protected values against the
    # same INSERT of plaintext through pass-through pgveil.
    (("crm-insert-c8",), "pgveil-policy/pgveil", 0.9, None),
    # The same, into a table without the ciphertext guards: pgveil's part.
    (("crm-insert-c8",), "pgveil-policy-unguarded/pgveil", 0.9, None),
]


def check_goals(ratio_values, memory, latency):
    """The issues' targets, where this run measured them."""
    out = []
    # pgveil adds no more latency than PgBouncer, at p50 and p99.
    for w, per_target in latency.items():
        mine, theirs = per_target.get("pgveil", {}), per_target.get("pgbouncer", {})
        for key in ("added_p50_us", "added_p99_us"):
            a, b = mine.get(key), theirs.get(key)
            if a is None or b is None:
                continue
            verdict = "met" if a <= b else "MISSED"
            out.append(f"{w}: pgveil {key} {a:.0f} us, pgbouncer {b:.0f} us "
                       f"(goal: no more than pgbouncer): {verdict}")
    for workloads, spec, goal, aim in RATIO_GOALS:
        for w in workloads:
            r = ratio_values.get(w, {}).get(spec)
            if r is None:
                continue
            verdict = "met" if r >= goal else "MISSED"
            target = f"goal >= {goal:.2f}" + (f", aim {aim:.2f}" if aim else "")
            # Three decimals, so that a ratio just under 1 does not print as 1.00.
            out.append(f"{w}: {spec} {r:.3f} ({target}): {verdict}")
    m = memory.get("pgveil", {})
    if m.get("kib_per_connection") is not None:
        k = m["kib_per_connection"]
        verdict = "met" if k <= 32 else "MISSED"
        out.append(f"idle memory: {k:.1f} KiB per connection (goal <= 32): {verdict}")
    return out


def print_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(
        str(c).ljust(w) if i == 0 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    print(line(header))
    print("|" + "|".join(("-" * (w + 1)) + (":" if i else "-")
                         for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(line(r))


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--raw", required=True)
    rec.add_argument("--round", type=int, required=True)
    rec.add_argument("--target", required=True)
    rec.add_argument("--workload", required=True)
    rec.add_argument("--log", required=True)
    rec.add_argument("--rc", type=int, required=True)
    rec.add_argument("--cpu-ticks", type=int)
    rec.add_argument("--txlog-prefix")
    rec.add_argument("--syscalls")
    summ = sub.add_parser("summary")
    summ.add_argument("--raw", required=True)
    summ.add_argument("--out", required=True)
    summ.add_argument("--meta", action="append")
    summ.add_argument("--memory", action="append")
    summ.add_argument("--ratio", action="append")
    summ.add_argument("--latency-base", action="append")
    args = ap.parse_args()
    return cmd_record(args) if args.cmd == "record" else cmd_summary(args)


if __name__ == "__main__":
    sys.exit(main())
