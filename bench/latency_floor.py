#!/usr/bin/env python3
"""What a sequential put cannot go below on this machine, next to raftkv's and etcd's put.

    python bench/latency_floor.py --reps 3 --total 2000

A put acknowledged by a 3-member cluster crosses four process boundaries (client -> leader ->
follower -> leader -> client, i.e. two round trips) and waits for a sync of the log on the
leader and on one follower, which run at the same time on the same disk. This measures those
parts alone, with no Raft and no store, and the two systems' sequential put p50 beside them:

- `hop_rtt`: one round trip between two uvloop processes on loopback (an echo of 300 bytes);
- `sync_1` / `sync_3`: one 400-byte pwrite + fdatasync in a preallocated file under the data
  root, one writer alone and three at once (median of the three writers' p50s);
- `raftkv_status`: a native status request to the leader (client and server, no Raft);
- `c_put`: the whole message pattern of a put in C (bench/put_floor.c, built here with gcc):
  client -> leader -> two followers, a 300-byte entry written and fdatasynced by each, the
  response once the leader's sync and one follower's ack are in; no store, no Raft logic, no
  interpreter. No implementation of this pattern on this machine goes below it;
- `raftkv_put`, `etcd_put`: a sequential put with 256-byte values from one client to the
  leader (raftkv's native protocol; etcd's gRPC through the same load generator as
  bench/sidebyside.py, which connects to the leader too).

`floor` = 2 x hop_rtt + sync_3: a put served with zero CPU anywhere but with uvloop's hops
(what the Python per-message path cannot go below). The issue's target for raftkv (at most
half of etcd's p50) is printed beside it. Each figure is the median over reps;
systems alternate within a rep. Nothing here is a pass/fail test.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raftkv.cli import bench as rbench  # noqa: E402
from raftkv.cli.local_cluster import LocalCluster  # noqa: E402

ECHO_BYTES = 300
SYNC_BYTES = 400
SYNC_FILE_BYTES = 16 << 20


def _p50(xs):
    return statistics.median(xs)


# ---------------------------------------------------------------- child modes

def _echo_server():
    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until EOF

    uvloop.run(main())


def _sync_writer(path, total, start_at):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, SYNC_FILE_BYTES)
        os.fsync(fd)
        while time.time() < start_at:  # the writers start together
            time.sleep(0.001)
        lat, off, data = [], 0, b"x" * SYNC_BYTES
        for _ in range(total):
            t = time.perf_counter()
            os.pwrite(fd, data, off)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
            off = (off + SYNC_BYTES) % SYNC_FILE_BYTES
        print(json.dumps(_p50(lat)))
    finally:
        os.close(fd)
        os.unlink(path)


# ---------------------------------------------------------------- measurements

def hop_rtt(total):
    """Median round trip to an echo server in another process (uvloop both sides)."""
    import uvloop

    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--echo-server"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())

        async def main():
            loop = asyncio.get_running_loop()
            waiter = None

            class Client(asyncio.Protocol):
                def data_received(self, data):
                    if not waiter.done():
                        waiter.set_result(data)

            transport, _ = await loop.create_connection(Client, "127.0.0.1", port)
            lat = []
            for _ in range(total):
                waiter = loop.create_future()
                t = time.perf_counter()
                transport.write(b"x" * ECHO_BYTES)
                await waiter
                lat.append(time.perf_counter() - t)
            transport.close()
            return _p50(lat)
        return uvloop.run(main())
    finally:
        server.stdin.close()  # it exits at EOF
        _reap(server)


def sync_p50(root, writers, total):
    """Median over `writers` concurrent processes of each one's fdatasync p50."""
    start_at = time.time() + 0.5
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--sync-writer",
                               os.path.join(root, f"sync-probe-{i}"), str(total),
                               repr(start_at)], stdout=subprocess.PIPE, text=True)
             for i in range(writers)]
    out = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=300)
            if p.returncode != 0:
                raise RuntimeError(f"sync writer exited with {p.returncode}")
            out.append(json.loads(stdout))
    finally:
        for p in procs:
            _reap(p)
    return _p50(out)


def _reap(proc, grace_s=10.0):
    """Wait for a child this script started; SIGKILL it by its PID if it does not exit."""
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def build_put_floor(root):
    """bench/put_floor.c built with gcc into `root`; None (with a note) without a compiler."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "put_floor.c")
    exe = os.path.join(root, "put_floor")
    cc = shutil.which(os.environ.get("CC", "gcc"))
    if cc is None:
        print("latency_floor: no C compiler, c_put is left out", file=sys.stderr)
        return None
    subprocess.run([cc, "-O2", "-o", exe, src], check=True)
    return exe


def c_put(exe, root, total):
    """p50 of bench/put_floor.c's sequential puts (four processes it forks itself)."""
    scratch = tempfile.mkdtemp(prefix="put-floor-", dir=root)
    try:
        out = subprocess.run([exe, scratch, str(total)], check=True, timeout=300,
                             stdout=subprocess.PIPE, text=True).stdout
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return json.loads(out)["p50_ms"] / 1e3


def raftkv_status_rtt(endpoint, total):
    from raftkv.client import AsyncClient

    async def main():
        async with AsyncClient([endpoint], timeout=10.0) as c:
            await c.status()
            lat = []
            for _ in range(total):
                t = time.perf_counter()
                await c.call("status", {})
                lat.append(time.perf_counter() - t)
            return _p50(lat)
    return asyncio.run(main())


def put_p50(protocol, endpoints, total):
    row, _ = rbench.run_workload("put", protocol, endpoints, clients=1, total=total,
                                 value_size=256)
    return row["p50_ms"] / 1e3


# ---------------------------------------------------------------- the run

def run(args):
    root = tempfile.mkdtemp(prefix="latency-floor-", dir=args.data_root)
    raftkv = LocalCluster(os.path.join(root, "raftkv"), 3)
    etcd = None if args.no_etcd else rbench.EtcdCluster(os.path.join(root, "etcd"), 3)
    samples = {k: [] for k in ("hop_rtt", "sync_1", "sync_3", "raftkv_status", "c_put",
                               "raftkv_put", "etcd_put")}
    try:
        floor_exe = build_put_floor(root)
        raftkv.start()
        if etcd is not None:
            etcd.start()
        native = raftkv.native_endpoints
        grpc = [m.grpc_endpoint for m in raftkv.members]
        for rep in range(args.reps):
            samples["hop_rtt"].append(hop_rtt(args.total))
            samples["sync_1"].append(sync_p50(root, 1, args.total))
            samples["sync_3"].append(sync_p50(root, 3, args.total))
            leader = native[rbench.leader_index(grpc, timeout_s=60.0)]
            samples["raftkv_status"].append(raftkv_status_rtt(leader, args.total))
            if floor_exe is not None:
                samples["c_put"].append(c_put(floor_exe, root, args.total))
            samples["raftkv_put"].append(put_p50("native", native, args.total))
            if etcd is not None:
                samples["etcd_put"].append(put_p50("grpc", etcd.endpoints, args.total))
            print(f"rep {rep}: " + ", ".join(f"{k} {v[-1] * 1e3:.3f} ms"
                                             for k, v in samples.items() if v),
                  file=sys.stderr, flush=True)
    finally:
        raftkv.stop()
        if etcd is not None:
            etcd.stop()
        shutil.rmtree(root, ignore_errors=True)  # the clusters' data dirs
    med = {k: _p50(v) * 1e3 for k, v in samples.items() if v}
    med["floor"] = 2 * med["hop_rtt"] + med["sync_3"]
    if "etcd_put" in med:
        med["target"] = med["etcd_put"] / 2
    return {"reps": args.reps, "total": args.total, "median_ms": med,
            "loadavg_end": os.getloadavg()}


def _print(result):
    med = result["median_ms"]
    notes = {
        "hop_rtt": "round trip between two uvloop processes",
        "sync_1": "400 B pwrite + fdatasync, one writer",
        "sync_3": "the same, three writers at once (three members)",
        "raftkv_status": "native status request to the leader (no Raft)",
        "c_put": "the put's messages and syncs in C, nothing else (put_floor.c)",
        "raftkv_put": "raftkv native sequential put, client on the leader",
        "etcd_put": "etcd gRPC sequential put, client on the leader",
        "floor": "2 x hop_rtt + sync_3: zero CPU but uvloop's hops",
        "target": "etcd_put / 2: the issue's target for raftkv_put",
    }
    print(f"medians over {result['reps']} reps of {result['total']} operations each")
    for key, note in notes.items():
        if key in med:
            print(f"{key:14} {med[key]:8.3f} ms   {note}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--echo-server"]:
        return _echo_server()
    if argv[:1] == ["--sync-writer"]:
        return _sync_writer(argv[1], int(argv[2]), float(argv[3]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--total", type=int, default=2000, help="operations per measurement")
    p.add_argument("--no-etcd", action="store_true", help="raftkv only")
    p.add_argument("--data-root", default=None, help="where the clusters and probes write "
                                                     "(default: the system's temp dir)")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    result = run(args)
    _print(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
