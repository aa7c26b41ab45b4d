#!/usr/bin/env python3
"""`etcdctl check perf` side by side: fresh 3-member raftkv and etcd clusters, the same etcdctl
(Debian's 3.4.23) run against each at the given loads, alternating systems.

    python bench/check_perf.py --loads s,m --reps 1 [--json out.json]

Each run is etcdctl's own 60 s workload (load s: 50 clients at up to 150 puts/s; m: 200 clients
at up to 1,000 puts/s) and its own verdict. Printed per run: PASS/FAIL, etcdctl's throughput,
slowest request and stddev lines, and the load average; then the medians.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from raftkv.cli.bench import _start_systems

RUN_TIMEOUT_S = 180


def parse(out):
    """etcdctl's check perf report -> dict (missing lines give None)."""
    def num(pattern):
        m = re.search(pattern, out)
        return float(m.group(1)) if m else None
    return {
        "pass": out.rstrip().endswith("PASS"),
        "throughput_per_s": num(r"Throughput (?:is|too low:) (\d+) writes/s"),
        "slowest_s": num(r"Slowest request took(?: too long:)? ([\d.]+)s"),
        "stddev_s": num(r"Stddev (?:is|too high:) ([\d.]+)s"),
    }


def run_one(endpoints, load, prefix):
    env = dict(os.environ, ETCDCTL_API="3")
    proc = subprocess.run(
        ["etcdctl", "--endpoints", ",".join(endpoints), "check", "perf", f"--load={load}",
         f"--prefix={prefix}"], capture_output=True, text=True, env=env,
        timeout=RUN_TIMEOUT_S)
    row = parse(proc.stdout)
    row["exit_code"] = proc.returncode
    row["load1"] = os.getloadavg()[0]
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loads", default="s,m")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--json", help="write every run and the medians here")
    args = p.parse_args(argv)
    loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    root = tempfile.mkdtemp(prefix="raftkv-check-perf-")
    systems = _start_systems(root, True, lambda msg: print(msg, file=sys.stderr))
    runs = []
    try:
        for rep in range(args.reps):
            for load in loads:
                for s in systems:
                    row = run_one(s.grpc_endpoints, load, f"/check-perf-{load}-{rep}/")
                    row.update(system=s.name, load=load, rep=rep)
                    runs.append(row)
                    print(json.dumps(row), flush=True)
                    time.sleep(2)
    finally:
        for s in systems:
            s.cluster.stop()
        shutil.rmtree(root, ignore_errors=True)  # the clusters' data dirs
    medians = []
    for load in loads:
        for s in systems:
            rows = [r for r in runs if r["system"] == s.name and r["load"] == load]
            med = {"system": s.name, "load": load, "runs": len(rows),
                   "passed": sum(r["pass"] for r in rows)}
            for k in ("throughput_per_s", "slowest_s", "stddev_s", "load1"):
                vals = [r[k] for r in rows if r[k] is not None]
                med[k] = statistics.median(vals) if vals else None
            medians.append(med)
    print("\n| load | system | passed | throughput/s | slowest s | stddev s | load1 |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for m in medians:
        print(f"| {m['load']} | {m['system']} | {m['passed']}/{m['runs']} | "
              f"{m['throughput_per_s']} | {m['slowest_s']} | {m['stddev_s']} | "
              f"{m['load1']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "medians": medians}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
