#!/usr/bin/env python3
"""What one sequential put costs each member of a local 3-member raftkv cluster.

    python bench/put_cost.py --reps 3 --total 2000
    python bench/put_cost.py --reps 3 --total 2000 --grpc [--clients 16]

Starts a fresh cluster (LocalCluster, data in a temp dir), warms it up, then per rep sends
`--total` sequential 256-byte puts from one native client (`--grpc`: one grpc.aio channel, as
etcd's clients, to the client URL; `--clients N`: N such callers at once, each a share of the
total) straight to the leader and reads,
from /proc, each member's user and system CPU, its voluntary and involuntary context switches
and its run-queue wait (time its threads were ready to run but waited for a core,
/proc/PID/task/TID/schedstat) over the rep, divided by the number of puts; the run-queue wait
of the client (this process) too. Also the put latency p50 and mean. The
members are whatever `python -m raftkv` imports from the current directory, so running this
from another checkout's root measures that checkout's members (the client is always this
one's). Medians over reps; nothing here is pass/fail.
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
from raftkv.cli.local_cluster import LocalCluster  # noqa: E402
from raftkv.client import AsyncClient  # noqa: E402

VALUE = b"v" * 256
WARMUP_PUTS = 300


def proc_counters(pid):
    """(user s, system s, voluntary, involuntary context switches, run-queue wait s) summed
    over pid's threads."""
    user, system = rbench.proc_user_sys_s(pid)
    vol = invol = 0
    runq_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                runq_ns += int(f.read().split()[1])  # on-CPU ns, run-queue wait ns, slices
        except FileNotFoundError:  # a thread ended meanwhile
            continue
    return user, system, vol, invol, runq_ns / 1e9


async def sequential_puts(endpoint, total, prefix):
    async with AsyncClient([endpoint], timeout=10.0) as client:
        lat = []
        for i in range(total):
            t = time.perf_counter()
            await client.put(prefix + b"%d" % i, VALUE)
            lat.append(time.perf_counter() - t)
        return lat


async def grpc_puts(endpoint, total, prefix, clients=1):
    """total puts over one gRPC channel by `clients` callers at once; their latencies."""
    import grpc

    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

    lat = []
    async with grpc.aio.insecure_channel(endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)

        async def caller(c):
            for i in range(c, total, clients):
                t = time.perf_counter()
                await kv.Put(rpc_pb2.PutRequest(key=prefix + b"%d" % i, value=VALUE),
                             timeout=10.0)
                lat.append(time.perf_counter() - t)
        await asyncio.gather(*(caller(c) for c in range(clients)))
    return lat


def puts(args, leader, total, prefix):
    if args.grpc:
        return asyncio.run(grpc_puts(leader.grpc_endpoint, total, prefix, args.clients))
    assert args.clients == 1, "--clients needs --grpc"
    return asyncio.run(sequential_puts(leader.native_endpoint, total, prefix))


def run(args):
    root = tempfile.mkdtemp(prefix="put-cost-", dir=args.data_root)
    cluster = LocalCluster(os.path.join(root, "raftkv"), 3)
    reps = []
    try:
        cluster.start()
        grpc = [m.grpc_endpoint for m in cluster.members]
        leader_i = rbench.leader_index(grpc, timeout_s=60.0)
        leader = cluster.members[leader_i]
        puts(args, leader, WARMUP_PUTS, b"warm/")
        for rep in range(args.reps):
            before = {m.name: proc_counters(m.pid) for m in cluster.members}
            client_before = proc_counters(os.getpid())
            t0 = time.perf_counter()
            lat = puts(args, leader, args.total, b"rep%d/" % rep)
            elapsed = time.perf_counter() - t0
            client_after = proc_counters(os.getpid())
            row = {"p50_ms": statistics.median(lat) * 1e3, "puts_per_s": args.total / elapsed,
                   "mean_ms": statistics.fmean(lat) * 1e3, "members": {},
                   "client_runq_us": (client_after[4] - client_before[4]) / args.total * 1e6,
                   "client_cpu_us": sum(client_after[:2]) - sum(client_before[:2])}
            row["client_cpu_us"] *= 1e6 / args.total
            for m in cluster.members:
                b, a = before[m.name], proc_counters(m.pid)
                d = [(x - y) / args.total for x, y in zip(a, b)]
                row["members"][m.name] = {
                    "role": "leader" if m is leader else "follower",
                    "user_us": d[0] * 1e6, "sys_us": d[1] * 1e6,
                    "ctx_voluntary": d[2], "ctx_involuntary": d[3], "runq_us": d[4] * 1e6}
            row["cpu_us_all"] = sum(v["user_us"] + v["sys_us"]
                                    for v in row["members"].values())
            row["loadavg"] = os.getloadavg()[0]
            reps.append(row)
            print(f"rep {rep}: p50 {row['p50_ms']:.3f} ms, member CPU {row['cpu_us_all']:.0f} "
                  f"us per put, load {row['loadavg']:.2f}", file=sys.stderr, flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)  # the cluster's data dir
    return reps


def summarize(reps):
    med = lambda xs: statistics.median(xs)  # noqa: E731
    out = {"p50_ms": med([r["p50_ms"] for r in reps]),
           "puts_per_s": med([r["puts_per_s"] for r in reps]),
           "mean_ms": med([r["mean_ms"] for r in reps]),
           "cpu_us_all": med([r["cpu_us_all"] for r in reps]),
           "client_cpu_us": med([r["client_cpu_us"] for r in reps]),
           "client_runq_us": med([r["client_runq_us"] for r in reps]), "roles": {}}
    for role in ("leader", "follower"):
        rows = [v for r in reps for v in r["members"].values() if v["role"] == role]
        out["roles"][role] = {k: med([v[k] for v in rows])
                              for k in ("user_us", "sys_us", "ctx_voluntary",
                                        "ctx_involuntary", "runq_us")}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--total", type=int, default=2000, help="sequential puts per rep")
    p.add_argument("--grpc", action="store_true", help="puts over etcd's gRPC API")
    p.add_argument("--clients", type=int, default=1, help="concurrent callers (--grpc)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None, help="also write every rep and the medians here")
    args = p.parse_args(argv)
    reps = run(args)
    s = summarize(reps)
    how = f"gRPC, {args.clients} caller(s)" if args.grpc else "native"
    print(f"medians over {len(reps)} reps of {args.total} puts to the leader ({how})")
    print(f"put p50 {s['p50_ms']:.3f} ms, mean {s['mean_ms']:.3f} ms, "
          f"{s['puts_per_s']:.0f} puts/s; "
          f"member CPU {s['cpu_us_all']:.0f} us per put (all three)")
    for role, v in s["roles"].items():
        print(f"{role:9} user {v['user_us']:6.0f} us  sys {v['sys_us']:5.0f} us  "
              f"context switches {v['ctx_voluntary']:.1f} voluntary, "
              f"{v['ctx_involuntary']:.1f} involuntary, run-queue wait {v['runq_us']:.0f} us "
              f"(per put)")
    print(f"client    CPU {s['client_cpu_us']:6.0f} us  "
          f"run-queue wait {s['client_runq_us']:.0f} us (per put)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reps": reps, "medians": s}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
