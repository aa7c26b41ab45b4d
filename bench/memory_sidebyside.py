#!/usr/bin/env python3
"""Memory per stored key, raftkv beside etcd, both given the same keys.

    python bench/memory_sidebyside.py --keys 200000 --reps 2 [--json out.json]

Each run starts a fresh 3-member cluster (raftkv.cli.bench._start_systems: raftkv's
LocalCluster or the installed etcd, data in a temp dir), waits `--settle` seconds, reads every
member's VmRSS, RssAnon, RssFile and VmHWM from /proc/PID/status, loads `--keys` distinct
16-byte keys with `--value-size`-byte values, waits `--settle` seconds again, reads the
counters again and counts the keys with a count-only range over gRPC (and, for raftkv, over
the native protocol). Three series:

- `raftkv-native`: raftkv, one `Client.put_many` over the native protocol;
- `raftkv-grpc`: raftkv, the load generator over etcd's gRPC API (as etcd below);
- `etcd-grpc`: etcd, the load generator over gRPC (`--clients` clients on clients/16
  connections, `--processes` worker processes, sequential keys).

All three write exactly the same keys: the load generator's sequential keys (worker i numbers
its operations from i * loadgen.SEQUENTIAL_KEY_STRIDE) with a key space large enough that the
workers do not overlap, and put_many the same list. Within a rep the series alternate (rep 0
in the order above, rep 1 reversed, ...). Reported per series: RssAnon growth per member
(median over members and reps), that growth per key, the RssFile and VmRSS growth, VmHWM
summed over the members after the load (median over reps) and the load time. Every member is
stopped by its PID and the data dirs are removed at the end. Nothing here is pass/fail.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raftkv.cli import bench as rbench  # noqa: E402
from raftkv.cli import loadgen  # noqa: E402

SERIES = ("raftkv-native", "raftkv-grpc", "etcd-grpc")
FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
KEY_SIZE = 16
PREFIX = b"bench/"  # loadgen.Workload's key prefix


def log(msg):
    print(f"[mem {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_status_kb(pid):
    """The FIELDS of /proc/PID/status in KiB (0 for a process that is gone)."""
    out = dict.fromkeys(FIELDS, 0)
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in out:
                    out[name] = int(rest.split()[0])
    except OSError:
        pass
    return out


def workload(keys, value_size, processes):
    """The load generator's workload that writes `keys` distinct sequential keys."""
    key_space = processes * loadgen.SEQUENTIAL_KEY_STRIDE
    if keys > loadgen.SEQUENTIAL_KEY_STRIDE:
        raise ValueError(f"at most {loadgen.SEQUENTIAL_KEY_STRIDE} keys per worker process")
    return loadgen.Workload(name="put", total=keys, key_size=KEY_SIZE, value_size=value_size,
                            key_space=key_space, sequential_keys=True)


def key_list(w, processes):
    """Exactly the keys the load generator writes for w: worker i's quota, numbered from
    i * SEQUENTIAL_KEY_STRIDE (see loadgen._worker_main and loadgen._key)."""
    out = []
    for i, quota in enumerate(loadgen._split(w.total, processes)):
        base = i * loadgen.SEQUENTIAL_KEY_STRIDE
        out.extend(loadgen._key(w, None, base + n) for n in range(quota))
    return out


def _prefix_end(prefix):
    return prefix[:-1] + bytes([prefix[-1] + 1])


async def _grpc_count(endpoints):
    from raftkv.cli.loadgen_drivers import GrpcDriver

    d = GrpcDriver(",".join(endpoints), 0)
    await d.connect()
    try:
        r = await d.kv.Range(d.pb.RangeRequest(key=PREFIX, range_end=_prefix_end(PREFIX),
                                               count_only=True), timeout=60.0)
        return r.count
    finally:
        await d.close()


def grpc_count(endpoints):
    """Keys under the bench prefix, by a linearizable count-only range over gRPC."""
    return asyncio.run(_grpc_count(endpoints))


def native_count(endpoints):
    from raftkv.client import Client

    c = Client(endpoints, timeout=60.0)
    try:
        return c.get_response(PREFIX, range_end=_prefix_end(PREFIX), count_only=True)["count"]
    finally:
        c.close()


def load_native(system, keys, value):
    from raftkv.client import Client

    c = Client(system.native_endpoints, timeout=60.0)
    try:
        res = c.put_many((k, value) for k in keys)
    finally:
        c.close()
    return {"done": res.done, "errors": res.failed, "load_s": res.elapsed_s}


def load_grpc(system, w, args):
    row, _ = rbench.run_workload(
        "put", "grpc", system.grpc_endpoints, clients=args.clients,
        conns=max(1, args.clients // 16), processes=args.processes, total=w.total,
        key_size=w.key_size, value_size=w.value_size, key_space=w.key_space,
        sequential_keys=True)
    return {"done": row["requests"], "errors": row["errors"], "load_s": row["elapsed_s"],
            "client_saturated": row["client_saturated"]}


def one_run(series, rep, data_root, w, keys, args):
    system_name = series.split("-")[0]
    root = tempfile.mkdtemp(prefix=f"{series}-{rep}-", dir=data_root)
    (s,) = rbench._start_systems(root, True, log, only=system_name)
    try:
        pids = s.pids()
        time.sleep(args.settle)
        before = {p: proc_status_kb(p) for p in pids}
        if series == "raftkv-native":
            load = load_native(s, keys, b"v" * w.value_size)
        else:
            load = load_grpc(s, w, args)
        time.sleep(args.settle)
        after = {p: proc_status_kb(p) for p in pids}
        counts = {"grpc": grpc_count(s.grpc_endpoints)}
        if s.native_endpoints is not None:
            counts["native"] = native_count(s.native_endpoints)
    finally:
        s.cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    members = [{"pid": p, "before_kb": before[p], "after_kb": after[p],
                "growth_kb": {f: after[p][f] - before[p][f] for f in FIELDS}} for p in pids]
    row = {"series": series, "rep": rep, "keys": w.total, "value_size": w.value_size,
           "counts": counts, "members": members, "load1": round(os.getloadavg()[0], 2),
           "vmhwm_sum_mib": round(sum(after[p]["VmHWM"] for p in pids) / 1024, 1), **load}
    anon = [m["growth_kb"]["RssAnon"] / 1024 for m in members]
    log(f"{series} rep {rep}: {load['done']} puts in {load['load_s']:.1f} s, "
        f"errors {load['errors']}, counts {counts}, RssAnon growth per member "
        f"{', '.join(f'{a:.1f}' for a in anon)} MiB, VmHWM sum {row['vmhwm_sum_mib']} MiB")
    return row


def summarize(rows):
    out = []
    for series in SERIES:
        rs = [r for r in rows if r["series"] == series]
        if not rs:
            continue
        keys = rs[0]["keys"]

        def med_growth(field):
            return statistics.median(m["growth_kb"][field] for r in rs for m in r["members"])
        anon_kb = med_growth("RssAnon")
        out.append({
            "series": series, "reps": len(rs), "keys": keys,
            "keys_counted": sorted({c for r in rs for c in r["counts"].values()}),
            "errors": sum(r["errors"] for r in rs),
            "rss_anon_growth_mib": round(anon_kb / 1024, 1),
            "bytes_per_key": round(anon_kb * 1024 / keys, 1),
            "rss_file_growth_mib": round(med_growth("RssFile") / 1024, 1),
            "vm_rss_growth_mib": round(med_growth("VmRSS") / 1024, 1),
            "vmhwm_sum_mib": round(statistics.median(r["vmhwm_sum_mib"] for r in rs), 1),
            "load_s": round(statistics.median(r["load_s"] for r in rs), 2),
            "load1": [r["load1"] for r in rs],
        })
    return out


def print_table(summary):
    print("| series | reps | keys counted | RssAnon growth / member (MiB) | bytes/key | "
          "RssFile growth / member (MiB) | VmRSS growth / member (MiB) | VmHWM sum (MiB) | "
          "load s | load1 |")
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|---|")
    for s in summary:
        print(f"| {s['series']} | {s['reps']} | {','.join(map(str, s['keys_counted']))} | "
              f"{s['rss_anon_growth_mib']} | {s['bytes_per_key']:.0f} | "
              f"{s['rss_file_growth_mib']} | {s['vm_rss_growth_mib']} | {s['vmhwm_sum_mib']} | "
              f"{s['load_s']} | {', '.join(map(str, s['load1']))} |")


def run(args):
    series = [s for s in args.series.split(",") if s]
    unknown = set(series) - set(SERIES)
    if unknown:
        raise SystemExit(f"unknown series {sorted(unknown)}; known: {', '.join(SERIES)}")
    if args.no_etcd or shutil.which("etcd") is None:
        if "etcd-grpc" in series:
            log("etcd binary not found (or --no-etcd): raftkv only")
        series = [s for s in series if s != "etcd-grpc"]
    w = workload(args.keys, args.value_size, args.processes)
    keys = key_list(w, args.processes)
    assert len(set(keys)) == args.keys and all(len(k) == KEY_SIZE for k in keys)
    data_root = tempfile.mkdtemp(prefix="memory-sbs-", dir=args.data_root)
    rows = []
    try:
        for rep in range(args.reps):
            for name in (series if rep % 2 == 0 else series[::-1]):
                rows.append(one_run(name, rep, data_root, w, keys, args))
    finally:
        shutil.rmtree(data_root, ignore_errors=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=200_000, help="distinct keys per run")
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--series", default=",".join(SERIES), help="comma-separated subset of "
                   + ", ".join(SERIES))
    p.add_argument("--no-etcd", action="store_true", help="raftkv only")
    p.add_argument("--clients", type=int, default=64, help="load generator clients (gRPC)")
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds of idle before each reading of the counters")
    p.add_argument("--data-root", default=None, help="where the clusters write (a temp dir "
                   "under it is removed at the end)")
    p.add_argument("--json", default=None, help="also write every run and the summary here")
    args = p.parse_args(argv)
    load_start = os.getloadavg()
    rows = run(args)
    summary = summarize(rows)
    env = {"loadavg_start": load_start, "loadavg_end": os.getloadavg(),
           "cpus": os.cpu_count(), "etcd": rbench._etcd_version(),
           "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"{args.keys} keys x {args.value_size} B, {args.reps} rep(s); load average "
          f"{' / '.join(f'{x:.2f}' for x in load_start)} at the start, "
          f"{' / '.join(f'{x:.2f}' for x in env['loadavg_end'])} at the end")
    print_table(summary)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "environment": env, "summary": summary,
                       "runs": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
