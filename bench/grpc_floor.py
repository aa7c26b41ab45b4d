#!/usr/bin/env python3
"""The grpc.aio floor: how fast can a Python grpc.aio server answer etcd's KV at all?

    python bench/grpc_floor.py --reps 3 --total 4000 --clients 16,64

Runs the same load generator (raftkv.cli.loadgen, grpc driver) as bench/sidebyside.py against:

- `floor`: one grpc.aio server process (uvloop, the member's gRPC server options) exposing
  etcdserverpb.KV whose Put/Range/Txn answer at once with a canned response (a header; Range one
  256-byte kv): no raftkv logic at all, only Python gRPC's own cost;
- `floor-wN` (with --floor-workers N): N such processes sharing the port with SO_REUSEPORT;
- `etcd1`: one real etcd member (the installed binary);
- `etcd3`: a real 3-member etcd cluster (with --etcd3);
- `raftkv3`: a raftkv 3-member cluster (LocalCluster; --raftkv-args adds member flags).

Cases: put and linearizable range at each --clients (conns = clients/16, as the side-by-side),
each system in rotation per rep. Reported: medians over reps of throughput and p50/p99, the
server CPU (all server PIDs), the load generator's own CPU and whether it was saturated.
`--processes` overrides the generator's worker count (default: the side-by-side's, one per 16
clients, at most the cores), to check whether the generator is the limit.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raftkv.cli import bench as rbench  # noqa: E402
from raftkv.cli.local_cluster import LocalCluster, free_ports  # noqa: E402

VALUE = b"v" * 256


def _serve(port):
    """The floor server (child process): KV answers at once."""
    import grpc

    from raftkv.api.etcd.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc
    from raftkv.api.etcd.server import server_options

    header = rpc_pb2.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4)

    class FloorKV(rpc_pb2_grpc.KVServicer):
        async def Put(self, request, context):
            return rpc_pb2.PutResponse(header=header)

        async def Range(self, request, context):
            kv = kv_pb2.KeyValue(key=request.key, value=VALUE, create_revision=1,
                                  mod_revision=1, version=1)
            return rpc_pb2.RangeResponse(header=header, kvs=[kv], count=1)

        async def Txn(self, request, context):
            return rpc_pb2.TxnResponse(header=header, succeeded=True)

    async def main():
        opts = [o for o in server_options(1536 * 1024) if o[0] != "grpc.so_reuseport"]
        opts += [("grpc.so_reuseport", 1)] + [tuple(o) for o in json.loads(
            os.environ.get("GRPC_FLOOR_OPTIONS", "[]"))]
        if os.environ.get("GRPC_FLOOR_SWITCH_INTERVAL"):
            sys.setswitchinterval(float(os.environ["GRPC_FLOOR_SWITCH_INTERVAL"]))
        server = grpc.aio.server(options=opts)
        rpc_pb2_grpc.add_KVServicer_to_server(FloorKV(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(0.5)

    if os.environ.get("GRPC_FLOOR_LOOP", "uvloop") == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


class FloorServer:
    def __init__(self, workers=1):
        self.port = free_ports(1)[0]
        self.procs = []
        self.workers = workers

    @property
    def endpoints(self):
        return [f"127.0.0.1:{self.port}"]

    def pids(self):
        return [p.pid for p in self.procs if p.poll() is None]

    def start(self):
        for _ in range(self.workers):
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--serve", str(self.port)],
                stdin=subprocess.DEVNULL))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


class Sut:
    def __init__(self, name, obj, endpoints, pids, stop):
        self.name, self.obj, self.endpoints, self.pids, self.stop = (name, obj, endpoints,
                                                                    pids, stop)


def _wait_grpc(endpoints, timeout_s=60.0):
    """Until one serializable Range answers on every endpoint."""
    from raftkv.cli.loadgen_drivers import GrpcDriver

    async def probe():
        for ep in endpoints:
            d = GrpcDriver(ep, 0)
            try:
                await asyncio.wait_for(d.connect(), timeout_s)
            finally:
                await d.close()

    asyncio.run(probe())


def _median(xs):
    return rbench._median(xs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--total", type=int, default=4000)
    p.add_argument("--clients", default="16,64")
    p.add_argument("--workloads", default="put,range")
    p.add_argument("--processes", type=int, default=0,
                   help="load generator worker processes (default: the side-by-side's)")
    p.add_argument("--floor-workers", default="1",
                   help="comma list: one floor system per N (N processes on one port)")
    p.add_argument("--no-etcd1", action="store_true")
    p.add_argument("--etcd3", action="store_true", help="also a 3-member etcd cluster")
    p.add_argument("--no-raftkv", action="store_true")
    p.add_argument("--raftkv-args", default="", help="extra member flags, space separated")
    p.add_argument("--raftkv-workers", default="0",
                   help="comma list: one raftkv cluster per N (--grpc-workers N; 0 = none)")
    p.add_argument("--raftkv-base", default="",
                   help="also a raftkv cluster run from this source tree (before/after)")
    p.add_argument("--etcd-binary", default="etcd")
    p.add_argument("--json", help="write all rows here")
    args = p.parse_args(argv)
    if args.serve:
        _serve(args.serve)
        return 0

    tmp = tempfile.mkdtemp(prefix="grpc-floor-")
    suts = []
    try:
        for n in [int(x) for x in args.floor_workers.split(",") if x]:
            f = FloorServer(n)
            f.start()
            suts.append(Sut("floor" if n == 1 else f"floor-w{n}", f, f.endpoints, f.pids,
                            f.stop))
        if not args.no_etcd1:
            e1 = rbench.EtcdCluster(os.path.join(tmp, "etcd1"), members=1,
                                    binary=args.etcd_binary)
            e1.start()
            suts.append(Sut("etcd1", e1, e1.endpoints, lambda e=e1: e.pids, e1.stop))
        if args.etcd3:
            e3 = rbench.EtcdCluster(os.path.join(tmp, "etcd3"), members=3,
                                    binary=args.etcd_binary)
            e3.start()
            suts.append(Sut("etcd3", e3, e3.endpoints, lambda e=e3: e.pids, e3.stop))
        for n in ([] if args.no_raftkv else
                  [int(x) for x in args.raftkv_workers.split(",") if x]):
            name = "raftkv3" if n == 0 else f"raftkv3-w{n}"
            extra = args.raftkv_args.split() + (["--grpc-workers", str(n)] if n else [])
            rk = LocalCluster(os.path.join(tmp, name), members=3, extra_args=extra)
            rk.start()
            rk.wait_listening()
            suts.append(Sut(name, rk, rk.endpoints, _member_pids(rk), rk.stop))
        if args.raftkv_base:
            rk = _TreeCluster(args.raftkv_base, os.path.join(tmp, "raftkv-base"), members=3,
                              extra_args=args.raftkv_args.split())
            rk.start()
            rk.wait_listening()
            suts.append(Sut("raftkv3-base", rk, rk.endpoints, _member_pids(rk), rk.stop))
        for s in suts:
            _wait_grpc(s.endpoints)
        for s in suts:
            if s.name == "etcd3" or s.name.startswith("raftkv3"):  # a leader first
                rbench.leader_index(s.endpoints, timeout_s=60.0)
        print(f"# uptime at start: {_uptime()}", flush=True)
        rows = []
        clients = [int(c) for c in args.clients.split(",")]
        for rep in range(args.reps):
            order = suts if rep % 2 == 0 else suts[::-1]
            for wl in args.workloads.split(","):
                for c in clients:
                    for s in order:
                        pids = s.pids()
                        before = rbench.cpu_of(pids)
                        row, _ = rbench.run_workload(
                            wl, "grpc", s.endpoints, clients=c, conns=max(1, c // 16),
                            processes=args.processes, total=args.total)
                        cpu = rbench.cpu_delta(before, pids)
                        row.update({"system": s.name, "case": f"{wl}-c{c}", "rep": rep,
                                    "server_cpu_s": cpu, "load1": round(os.getloadavg()[0], 2)})
                        rows.append(row)
                        print(f"rep {rep} {row['case']:10} {s.name:9} "
                              f"{row['throughput_per_s']:8.0f}/s p50 {row['p50_ms']:6.1f} "
                              f"p99 {row['p99_ms']:6.1f} ms  srv cpu {cpu:5.2f}s "
                              f"client cpu {row['client_cpu_s']:5.2f}s/"
                              f"{row['elapsed_s']:.2f}s x{row['processes']} "
                              f"sat={row['client_saturated']} err={row['errors']} "
                              f"load1 {row['load1']}", flush=True)
        print(f"# uptime at end: {_uptime()}", flush=True)
        _table(rows, suts, clients, args.workloads.split(","))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
    finally:
        for s in suts:
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001
                print(f"stopping {s.name}: {exc}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)  # the clusters' data dirs (stopped by now)
    return 0


class _TreeCluster(LocalCluster):
    """A LocalCluster whose members run the raftkv package of another source tree."""

    def __init__(self, tree, *a, **kw):
        super().__init__(*a, **kw)
        self.tree = os.path.abspath(tree)

    def command(self, m, state="new"):
        cmd = super().command(m, state)
        boot = (f"import sys, runpy; sys.path.insert(0, {self.tree!r}); "
                "runpy.run_module('raftkv', run_name='__main__', alter_sys=True)")
        return [cmd[0], "-c", boot, *cmd[3:]]


def _member_pids(cluster):
    def pids():
        members = [m.pid for m in cluster.members if m.alive()]
        return members + _children(members)
    return pids


def _children(pids):
    """PIDs of the direct children of pids (grpc worker processes of a member)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def _uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _table(rows, suts, clients, workloads):
    print("\n| case | system | ops/s | p50 ms | p99 ms | server CPU us/op | client CPU / wall "
          "| load1 |")
    print("|---|---|--:|--:|--:|--:|--:|--:|")
    for wl in workloads:
        for c in clients:
            case = f"{wl}-c{c}"
            for s in suts:
                rs = [r for r in rows if r["case"] == case and r["system"] == s.name]
                if not rs:
                    continue
                tp = _median([r["throughput_per_s"] for r in rs])
                us = _median([1e6 * r["server_cpu_s"] / max(1, r["requests"]) for r in rs])
                busy = _median([r["client_cpu_s"] / max(1e-9, r["elapsed_s"]) for r in rs])
                print(f"| {case} | {s.name} | {tp:.0f} | "
                      f"{_median([r['p50_ms'] for r in rs]):.1f} | "
                      f"{_median([r['p99_ms'] for r in rs]):.1f} | {us:.0f} | "
                      f"{busy:.2f} (x{rs[0]['processes']}) | "
                      f"{_median([r['load1'] for r in rs]):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
