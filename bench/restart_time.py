#!/usr/bin/env python3
"""How long a SIGKILLed follower takes to come back, as the stored history grows.

    python bench/restart_time.py --revs 10000,100000,500000 --shapes few,many --reps 3

For each data shape and size: a fresh 3-member cluster (LocalCluster, data in a temp dir) is
loaded with `--revs` revisions, either many puts to `--few-keys` keys ("few": the history grows,
the key count does not) or one put per distinct key ("many"), through the native client's
put_many (`--load bulk`: 1,000 puts per request and per Raft entry) or as single put requests
with `--load-window` of them in flight (`--load single`: a few puts per Raft entry, so
many more WAL records for the same revisions). No compaction. Then, per rep, a follower
is SIGKILLed (by PID), `--down-puts` puts are written through the leader while it is down
(the last one is the value to wait for), and the follower is started again. Timed from the
restart's Popen:

- native_s: its native port accepts a TCP connection (raftkv only);
- port_s: its client (gRPC) port accepts one (raftkv opens it last, after every listener);
- ready_s: over gRPC on that port, Maintenance.Status names a leader and a serializable Range
  of the key returns the value written while it was down.

With etcd installed (and not --no-etcd) an etcd 3.4 cluster of the same shape gets the same
treatment, in alternation with raftkv. etcd is loaded with KV.Txn requests of distinct keys
(up to --etcd-txn-puts puts each, which is one main revision with many sub-revisions rather
than one revision per put): the same number of stored key versions, loaded in far fewer
requests. --checkout DIR (repeatable) runs the raftkv members from another source tree (the
members are `python -m raftkv` started in that directory); several checkouts alternate rep by
rep, for A/B comparisons. Medians over reps; nothing here is pass/fail.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raftkv.cli import bench as rbench  # noqa: E402
from raftkv.cli.local_cluster import LocalCluster  # noqa: E402
from raftkv.client import AsyncClient  # noqa: E402

VALUE = b"v" * 100
POLL_S = 0.005  # between attempts while waiting for a port or an answer
READY_TIMEOUT_S = 120.0  # a restart that takes longer is reported as failed
LOAD_BATCH = 1000  # pairs per put_many batch (the server's chunk size)


def keys_of(shape, revs, few_keys):
    """The key of each of the revs puts of a shape, in order."""
    if shape == "few":
        return (b"few/%d" % (i % few_keys) for i in range(revs))
    return (b"many/%09d" % i for i in range(revs))


def latest_key(shape):
    return b"few/0" if shape == "few" else b"many/%09d" % 0


def _pb():
    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
    return rpc_pb2, rpc_pb2_grpc


class RaftkvSystem:
    """One raftkv cluster whose members run from `checkout` (their current directory)."""

    def __init__(self, root, checkout, label):
        self.label = label
        self.checkout = os.path.abspath(checkout)
        self.cluster = LocalCluster(os.path.join(root, label), 3)

    def _in_checkout(self, fn, *args):
        # `python -m raftkv` imports raftkv from its current directory first.
        here = os.getcwd()
        os.chdir(self.checkout)
        try:
            return fn(*args)
        finally:
            os.chdir(here)

    def start(self):
        self._in_checkout(self.cluster.start)
        self.cluster.wait_listening()

    @property
    def grpc_endpoints(self):
        return self.cluster.endpoints

    def native_port(self, i):
        return self.cluster.members[i].native_port

    def load(self, pairs, leader, single_window=0):
        """Write pairs through the leader: put_many, or single puts with single_window of them
        in flight."""
        endpoint = self.cluster.members[leader].native_endpoint

        async def bulk():
            async with AsyncClient([endpoint], timeout=60.0, prefer_leader=False) as c:
                res = await c.put_many(pairs, batch_max=LOAD_BATCH)
                assert res.failed == 0, res
                return res.done

        async def single():
            async with AsyncClient([endpoint], timeout=60.0, prefer_leader=False) as c:
                slots, tasks, done = asyncio.Semaphore(single_window), set(), 0

                async def one(key, value):
                    try:
                        await c.put(key, value)
                    finally:
                        slots.release()
                for key, value in pairs:
                    await slots.acquire()
                    t = asyncio.get_running_loop().create_task(one(key, value))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                    done += 1
                if tasks:
                    await asyncio.gather(*tasks)
                return done
        return asyncio.run(single() if single_window else bulk())

    def put(self, leader, items):
        endpoint = self.cluster.members[leader].native_endpoint

        async def go():
            async with AsyncClient([endpoint], timeout=30.0, prefer_leader=False) as c:
                await c.put_many(items, batch_max=LOAD_BATCH)
        asyncio.run(go())

    def kill(self, i):
        self.cluster.kill(self.cluster.members[i])

    def restart(self, i):
        return self._in_checkout(self.cluster.start_member, self.cluster.members[i])

    def stop(self):
        self.cluster.stop()


class EtcdSystem:
    label = "etcd"
    checkout = None

    def __init__(self, root, txn_puts):
        self.txn_puts = txn_puts
        self.cluster = rbench.EtcdCluster(os.path.join(root, "etcd"), 3,
                                          extra_args=["--max-txn-ops", str(txn_puts)])

    def start(self):
        self.cluster.start()
        for p in self.cluster.client_ports:
            wait_port(p, time.monotonic(), READY_TIMEOUT_S)

    @property
    def grpc_endpoints(self):
        return self.cluster.endpoints

    def native_port(self, i):
        return None

    def _txns(self, pairs, leader, window, per_txn):
        import grpc
        rpc_pb2, rpc_pb2_grpc = _pb()

        async def go():
            async with grpc.aio.insecure_channel(self.grpc_endpoints[leader]) as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                slots, tasks, done = asyncio.Semaphore(window), set(), 0

                async def one(ops):
                    try:
                        await kv.Txn(rpc_pb2.TxnRequest(success=ops), timeout=60.0)
                    finally:
                        slots.release()
                batch, seen = [], set()
                for key, value in pairs:
                    if key in seen or len(batch) >= per_txn:
                        await slots.acquire()
                        t = asyncio.get_running_loop().create_task(one(batch))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                        batch, seen = [], set()
                    seen.add(key)
                    batch.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                        key=key, value=value)))
                    done += 1
                if batch:
                    await slots.acquire()
                    await one(batch)
                if tasks:
                    await asyncio.gather(*tasks)
                return done
        return asyncio.run(go())

    def load(self, pairs, leader, single_window=0):
        if not single_window:
            return self._txns(pairs, leader, 32, self.txn_puts)
        return self._txns(pairs, leader, single_window, 1)

    def put(self, leader, items):
        self._txns(items, leader, 1, 1)  # one after another: the last is the value waited for

    def kill(self, i):
        os.kill(self.cluster.pid_of(i), signal.SIGKILL)
        self.cluster.procs[i].wait(timeout=10)

    def restart(self, i):
        self.cluster.restart(i)
        return self.cluster.pid_of(i)

    def stop(self):
        self.cluster.stop()


def wait_port(port, t0, timeout_s):
    """Seconds from t0 until 127.0.0.1:port accepts a TCP connection."""
    deadline = t0 + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic() - t0
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"port {port} did not open in {timeout_s} s")
            time.sleep(POLL_S)


async def wait_ready(endpoint, key, value, t0, timeout_s):
    """Seconds from t0 until the member at endpoint names a leader (Status) and a serializable
    Range of key returns value; also the seconds until it first named a leader."""
    import grpc
    rpc_pb2, rpc_pb2_grpc = _pb()
    deadline = t0 + timeout_s
    leader_s = None
    async with grpc.aio.insecure_channel(endpoint) as ch:
        maint, kv = rpc_pb2_grpc.MaintenanceStub(ch), rpc_pb2_grpc.KVStub(ch)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                if leader_s is None:
                    st = await maint.Status(rpc_pb2.StatusRequest(), timeout=1.0)
                    if st.leader:
                        leader_s = time.monotonic() - t0
                if leader_s is not None:
                    r = await kv.Range(rpc_pb2.RangeRequest(key=key, serializable=True),
                                       timeout=1.0)
                    if r.kvs and r.kvs[0].value == value:
                        return time.monotonic() - t0, leader_s
            await asyncio.sleep(POLL_S)
    raise TimeoutError(f"{endpoint} was not ready in {timeout_s} s")


def one_restart(system, shape, rep, down_puts, few_keys):
    """Kill a follower, write down_puts puts through the leader, restart it; the timings."""
    leader = rbench.leader_index(system.grpc_endpoints, timeout_s=60.0)
    follower = (leader + 1) % 3
    system.kill(follower)
    key = latest_key(shape)
    value = b"latest/%s/%d" % (system.label.encode(), rep)
    filler = [(b"down/%d" % (i % few_keys), VALUE) for i in range(down_puts - 1)]
    system.put(leader, filler + [(key, value)])
    t0 = time.monotonic()
    system.restart(follower)
    row = {"system": system.label, "rep": rep}
    native = system.native_port(follower)
    if native is not None:
        row["native_s"] = wait_port(native, t0, READY_TIMEOUT_S)
    port = int(system.grpc_endpoints[follower].rsplit(":", 1)[1])
    row["port_s"] = wait_port(port, t0, READY_TIMEOUT_S)
    row["ready_s"], row["leader_s"] = asyncio.run(wait_ready(
        system.grpc_endpoints[follower], key, value, t0, READY_TIMEOUT_S))
    row["loadavg"] = os.getloadavg()[0]
    return row


def run_case(args, shape, revs, log):
    root = tempfile.mkdtemp(prefix="restart-time-", dir=args.data_root)
    systems = [RaftkvSystem(root, c, label) for c, label in zip(args.checkout, args.labels)]
    if args.etcd:
        systems.append(EtcdSystem(root, args.etcd_txn_puts))
    rows = []
    try:
        for s in systems:
            s.start()
            leader = rbench.leader_index(s.grpc_endpoints, timeout_s=60.0)
            t = time.monotonic()
            pairs = ((k, VALUE) for k in keys_of(shape, revs, args.few_keys))
            n = s.load(pairs, leader, args.load_window if args.load == "single" else 0)
            log(f"{shape} {revs}: {s.label} loaded {n} puts in {time.monotonic() - t:.1f} s")
        for rep in range(args.reps):
            order = systems if rep % 2 == 0 else systems[::-1]
            for s in order:
                row = one_restart(s, shape, rep, args.down_puts, args.few_keys)
                row.update(shape=shape, revs=revs)
                rows.append(row)
                log(f"{shape} {revs} rep {rep} {s.label}: "
                    + ", ".join(f"{k} {row[k]:.3f}" for k in
                                ("native_s", "port_s", "leader_s", "ready_s", "loadavg")
                                if k in row))
    finally:
        for s in systems:
            s.stop()
        shutil.rmtree(root, ignore_errors=True)
    return rows


def medians(rows):
    out = {}
    for row in rows:
        out.setdefault((row["shape"], row["revs"], row["system"]), []).append(row)
    table = []
    for (shape, revs, system), rs in out.items():
        med = {k: statistics.median([r[k] for r in rs]) for k in
               ("native_s", "port_s", "leader_s", "ready_s", "loadavg") if k in rs[0]}
        table.append({"shape": shape, "revs": revs, "system": system, "reps": len(rs), **med})
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--revs", default="10000,100000,500000", help="comma-separated sizes")
    p.add_argument("--shapes", default="few,many", help="few (puts to --few-keys keys), many")
    p.add_argument("--few-keys", type=int, default=5)
    p.add_argument("--load", choices=("bulk", "single"), default="bulk",
                   help="bulk: put_many (etcd: KV.Txn of many puts); single: one put a request")
    p.add_argument("--load-window", type=int, default=8,
                   help="--load single: requests in flight")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--down-puts", type=int, default=1000,
                   help="puts written while the follower is down (the last is waited for)")
    p.add_argument("--checkout", action="append", default=None,
                   help="source tree the raftkv members run from (repeat to alternate)")
    p.add_argument("--no-etcd", dest="etcd", action="store_false")
    p.add_argument("--etcd-txn-puts", type=int, default=1000,
                   help="puts per KV.Txn when loading etcd (its --max-txn-ops)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None, help="also write every rep and the medians here")
    args = p.parse_args(argv)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args.checkout = args.checkout or [here]
    args.labels = (["raftkv"] if len(args.checkout) == 1 else
                   [f"raftkv:{os.path.basename(os.path.abspath(c))}" for c in args.checkout])
    args.etcd = args.etcd and shutil.which("etcd") is not None

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    rows = []
    for shape in args.shapes.split(","):
        for revs in (int(x) for x in args.revs.split(",")):
            rows += run_case(args, shape, revs, log)
    table = medians(rows)
    print(f"medians over {args.reps} reps; seconds from the restart (Popen) of a SIGKILLed "
          f"follower; {args.down_puts} puts written while it was down; load {args.load}")
    print(f"{'shape':6} {'revs':>8} {'system':22} {'native':>7} {'port':>7} {'leader':>7} "
          f"{'ready':>7} {'load':>5}")
    for r in table:
        native = f"{r['native_s']:7.3f}" if "native_s" in r else f"{'-':>7}"
        print(f"{r['shape']:6} {r['revs']:8d} {r['system']:22} {native} {r['port_s']:7.3f} "
              f"{r['leader_s']:7.3f} {r['ready_s']:7.3f} {r['loadavg']:5.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reps": rows, "medians": table}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
