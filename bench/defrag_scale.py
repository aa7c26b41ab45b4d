#!/usr/bin/env python3
"""What an online defrag costs writers at a realistic store size, raftkv beside etcd.

    python bench/defrag_scale.py --keys 330000 [--data-root DIR] [--systems raftkv,etcd] \
        [--raftkv-protocol native|grpc] [--json out.json]

For each system: a fresh 3-member cluster (raftkv.cli.bench._start_systems: raftkv's
LocalCluster or the installed etcd, both with --quota-backend-bytes `--quota`), loaded with
`--keys` keys `ds/NNNNNNNN` of `--min-value`..`--max-value`-byte values (seeded, the same for
both systems), then every other key overwritten with a new value of the same size range, then
a physical compaction to the current revision: the overwritten versions' pages are free and
the file keeps them. raftkv is loaded with the native Client.put_many; etcd with Txns of
`--etcd-txn-puts` puts, `--etcd-in-flight` of them in flight on one gRPC channel to the leader
(each put is a record of its own either way).

Then one writer does sequential 256-byte puts to the leader (raftkv: `--raftkv-protocol`,
native by default; etcd: gRPC) for the whole measurement, each with a `--put-timeout` client
deadline, recording each put's start, latency and error. After `--gap` s a follower is
defragmented (Maintenance.Defragment over gRPC, what `etcdctl defrag` sends), after another
`--gap` s the leader, and the writer stops `--gap` s later. Per defrag: its wall time, the
member's dbSize (Maintenance.Status) before and after, the longest put in flight during it,
the puts that failed from its start to 1 s after its end (and their errors), and whether a
leader election happened (the leader or any member's Raft term changed). The clusters' data
is in a temp dir under `--data-root` (330,000 keys: ~1.8 GB per member before the defrag,
~1.2 GB after, plus the WALs: give it ~15 GB). Every member is stopped by its PID, and the data
dirs are removed unless `--keep`. Nothing here is pass/fail.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raftkv.cli import bench as rbench  # noqa: E402

WRITER_VALUE = b"w" * 256
MIB = 1 << 20


def log(msg):
    print(f"[defrag {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _pb():
    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

    return rpc_pb2, rpc_pb2_grpc


def items(args, phase):
    """The (key, value) pairs of one load phase: "fill" writes every key, "overwrite" every
    other one. Values are slices of one random buffer, sizes seeded (the same for both
    systems)."""
    rng = random.Random(f"{args.seed}/{phase}")
    pool = random.Random(args.seed).randbytes(args.max_value * 4)
    step = 1 if phase == "fill" else 2
    for i in range(0, args.keys, step):
        size = rng.randint(args.min_value, args.max_value)
        start = rng.randrange(0, len(pool) - size)
        yield b"ds/%08d" % i, pool[start:start + size]


async def status(endpoint, timeout=10.0):
    """Maintenance.Status of one member: dict of member_id, leader, raft_term, db_size,
    revision; None if it does not answer."""
    import grpc

    pb, pb_grpc = _pb()
    async with grpc.aio.insecure_channel(endpoint) as ch:
        try:
            r = await pb_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=timeout)
        except grpc.aio.AioRpcError:
            return None
    return {"member_id": r.header.member_id, "leader": r.leader, "raft_term": r.raftTerm,
            "db_size": r.dbSize, "revision": r.header.revision}


async def statuses(endpoints):
    return [await status(ep) for ep in endpoints]


def leader_of(sts):
    ids = [st["member_id"] if st else None for st in sts]
    leaders = {st["leader"] for st in sts if st}
    assert len(leaders) == 1, sts
    return ids.index(leaders.pop())


# Loading.


def load_raftkv(system, args):
    from raftkv.client import Client

    c = Client(system.native_endpoints, timeout=120.0)
    out = {}
    try:
        for phase in ("fill", "overwrite"):
            res = c.put_many(items(args, phase))
            log(f"raftkv {phase}: {res.done} puts, {res.failed} failed, {res.elapsed_s:.1f} s")
            assert res.failed == 0, res
            out[phase] = {"puts": res.done, "s": round(res.elapsed_s, 1)}
    finally:
        c.close()
    return out


async def _load_etcd(endpoint, args):
    import grpc

    pb, pb_grpc = _pb()
    out = {}
    async with grpc.aio.insecure_channel(
            endpoint, options=[("grpc.max_send_message_length", 64 * MIB)]) as ch:
        kv = pb_grpc.KVStub(ch)
        for phase in ("fill", "overwrite"):
            t0, done = time.monotonic(), 0
            slots = asyncio.Semaphore(args.etcd_in_flight)
            tasks = set()

            async def send(ops):
                try:
                    await kv.Txn(pb.TxnRequest(success=ops), timeout=120.0)
                finally:
                    slots.release()
            batch = []
            for key, value in items(args, phase):
                batch.append(pb.RequestOp(request_put=pb.PutRequest(key=key, value=value)))
                if len(batch) == args.etcd_txn_puts:
                    await slots.acquire()
                    t = asyncio.ensure_future(send(batch))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    done += len(batch)
                    batch = []
            if batch:
                await slots.acquire()
                tasks.add(asyncio.ensure_future(send(batch)))
                done += len(batch)
            await asyncio.gather(*tasks)
            s = time.monotonic() - t0
            log(f"etcd {phase}: {done} puts, {s:.1f} s")
            out[phase] = {"puts": done, "s": round(s, 1)}
    return out


async def compact(endpoint, revision):
    import grpc

    pb, pb_grpc = _pb()
    async with grpc.aio.insecure_channel(endpoint) as ch:
        await pb_grpc.KVStub(ch).Compact(pb.CompactionRequest(revision=revision, physical=True),
                                         timeout=600.0)


# The measurement: one writer, two defrags.


class Writer:
    """Sequential puts to one endpoint until stopped; every put's (start, latency, error)."""

    def __init__(self, protocol, endpoint, put_timeout):
        self.protocol, self.endpoint, self.put_timeout = protocol, endpoint, put_timeout
        self.records = []  # (start, latency s, error text or None), time.monotonic() based
        self.stopping = False

    async def run(self):
        if self.protocol == "native":
            from raftkv.client import AsyncClient

            client = AsyncClient([self.endpoint], timeout=self.put_timeout,
                                 prefer_leader=False)
            await client.status()

            async def put(key):
                await client.put(key, WRITER_VALUE)

            async def close():
                await client.close()
        else:
            import grpc

            pb, pb_grpc = _pb()
            ch = grpc.aio.insecure_channel(self.endpoint)
            kv = pb_grpc.KVStub(ch)

            async def put(key):
                await kv.Put(pb.PutRequest(key=key, value=WRITER_VALUE),
                             timeout=self.put_timeout, wait_for_ready=True)

            async def close():
                await ch.close()
        i = 0
        try:
            while not self.stopping:
                t = time.monotonic()
                err = None
                try:
                    await put(b"w/%08d" % i)
                except Exception as exc:  # noqa: BLE001 -- recorded, the writer goes on
                    err = f"{type(exc).__name__}: {_error_text(exc)}"
                    await asyncio.sleep(0.01)
                self.records.append((t, time.monotonic() - t, err))
                i += 1
        finally:
            await close()

    def window(self, start, end):
        """Stats of the puts in flight at any time in [start, end]."""
        rs = [r for r in self.records if r[0] <= end and r[0] + r[1] >= start]
        failed = [r for r in rs if r[2] is not None]
        return {"puts": len(rs), "max_put_s": round(max((r[1] for r in rs), default=0.0), 3),
                "failed": len(failed),
                "errors": dict(collections.Counter(r[2] for r in failed))}


def _error_text(exc):
    details = getattr(exc, "details", None)
    if callable(details):
        return f"{exc.code().name} {details()}"
    return str(exc)[:200]


async def defragment(endpoint):
    import grpc

    pb, pb_grpc = _pb()
    async with grpc.aio.insecure_channel(endpoint) as ch:
        t = time.monotonic()
        err = None
        try:
            await pb_grpc.MaintenanceStub(ch).Defragment(pb.DefragmentRequest(), timeout=600.0)
        except grpc.aio.AioRpcError as exc:
            err = _error_text(exc)
        return t, time.monotonic(), err


async def measure(system, protocol, args):
    eps = system.grpc_endpoints
    sts = await statuses(eps)
    leader = leader_of(sts)
    follower = (leader + 1) % len(eps)
    target = (system.native_endpoints if protocol == "native" else eps)[leader]
    writer = Writer(protocol, target, args.put_timeout)
    task = asyncio.ensure_future(writer.run())
    rows = []
    try:
        for role, i in (("follower", follower), ("leader", leader)):
            await asyncio.sleep(args.gap)
            before = await statuses(eps)
            log(f"{system.name}: defragmenting the {role} {eps[i]} "
                f"(dbSize {before[i]['db_size'] / MIB:.0f} MiB)")
            t0, t1, err = await defragment(eps[i])
            await asyncio.sleep(1.0)
            after = await statuses(eps)
            elected = (leader_of(after) != leader_of(before) or
                       any(a and b and a["raft_term"] != b["raft_term"]
                           for a, b in zip(after, before)))
            row = {"system": system.name, "writer": protocol, "role": role,
                   "defrag_s": round(t1 - t0, 2), "error": err,
                   "db_before_mib": round(before[i]["db_size"] / MIB, 1),
                   "db_after_mib": round(after[i]["db_size"] / MIB, 1) if after[i] else None,
                   "election": elected, "loadavg": os.getloadavg()[0],
                   **writer.window(t0, t1 + 1.0)}
            log(f"{system.name}: {row}")
            rows.append(row)
        await asyncio.sleep(args.gap)
    finally:
        writer.stopping = True
        await task
    lat = sorted(r[1] for r in writer.records if r[2] is None)
    summary = {"puts": len(writer.records), "failed": sum(r[2] is not None
                                                          for r in writer.records),
               "p50_ms": round(lat[len(lat) // 2] * 1e3, 2) if lat else None}
    return rows, summary


def run_system(name, top, args):
    root = os.path.join(top, name)
    (s,) = rbench._start_systems(root, True, log, only=name,
                                 extra_args=["--quota-backend-bytes", str(args.quota)])
    out = {"system": name, "loadavg_start": os.getloadavg()}
    try:
        if name == "raftkv":
            out["load"] = load_raftkv(s, args)
        else:
            eps = s.grpc_endpoints
            out["load"] = asyncio.run(_load_etcd(eps[asyncio.run(_leader(eps))], args))
        sts = asyncio.run(statuses(s.grpc_endpoints))
        rev = max(st["revision"] for st in sts)
        t = time.monotonic()
        asyncio.run(compact(s.grpc_endpoints[leader_of(sts)], rev))
        out["compact"] = {"revision": rev, "s": round(time.monotonic() - t, 1)}
        time.sleep(args.settle)
        sts = asyncio.run(statuses(s.grpc_endpoints))
        out["db_mib_after_compact"] = [round(st["db_size"] / MIB, 1) for st in sts]
        log(f"{name}: compacted to {rev}; dbSize {out['db_mib_after_compact']} MiB")
        protocol = args.raftkv_protocol if name == "raftkv" else "grpc"
        out["defrags"], out["writer"] = asyncio.run(measure(s, protocol, args))
    finally:
        s.cluster.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    out["loadavg_end"] = os.getloadavg()
    return out


async def _leader(eps):
    return leader_of(await statuses(eps))


def print_table(results):
    print("| system | writer | defrag of | wall s | dbSize before -> after MiB | longest put s "
          "| puts failed (error) | election | load |")
    print("|---|---|---|--:|--:|--:|---|---|--:|")
    for res in results:
        for r in res["defrags"]:
            errs = "; ".join(f"{n} x {e}" for e, n in r["errors"].items())
            print(f"| {r['system']} | {r['writer']} | {r['role']} | {r['defrag_s']:.2f} | "
                  f"{r['db_before_mib']:.0f} -> {r['db_after_mib']:.0f} | {r['max_put_s']:.2f} | "
                  f"{r['failed']}{' (' + errs + ')' if errs else ''} | "
                  f"{'yes' if r['election'] else 'no'} | {r['loadavg']:.1f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=330000)
    p.add_argument("--min-value", type=int, default=1024)
    p.add_argument("--max-value", type=int, default=4096)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--systems", default="raftkv,etcd")
    p.add_argument("--raftkv-protocol", choices=("native", "grpc"), default="native")
    p.add_argument("--quota", type=int, default=6 << 30, help="--quota-backend-bytes of both")
    p.add_argument("--etcd-txn-puts", type=int, default=64)
    p.add_argument("--etcd-in-flight", type=int, default=8)
    p.add_argument("--put-timeout", type=float, default=30.0,
                   help="the writer's client deadline per put (s)")
    p.add_argument("--gap", type=float, default=3.0, help="s of writes around each defrag")
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--data-root", default=None, help="where the temp dir of the clusters' "
                   "data is made (default: the system's temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the data dirs")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    results = []
    top = tempfile.mkdtemp(prefix="defrag-scale-", dir=args.data_root)
    try:
        for name in args.systems.split(","):
            results.append(run_system(name, top, args))
            log(f"{name}: done, load {results[-1]['loadavg_end']}")
    finally:
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)
        else:
            log(f"data kept in {top}")
    print_table(results)
    for res in results:
        print(f"{res['system']}: load {res['load']}, compact {res['compact']}, dbSize after "
              f"compaction {res['db_mib_after_compact']} MiB, writer {res['writer']}, load "
              f"average {res['loadavg_start'][0]:.2f} at start, {res['loadavg_end'][0]:.2f} "
              f"at end")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
