"""Bulk put_many into a fresh 3-member LocalCluster (raftkv only): puts/s, member and client CPU.

    python bench/bulk_put_many.py TOTAL [--profile SECONDS]    (from the repo root)

After a 2000-put warm-up, one Client.put_many of TOTAL x 256 B values. --profile: py-spy
records every member and this client for SECONDS (raw stacks in /tmp/bulk/<name>.txt). The
cluster's data dir (under /tmp/bulk) is removed at the end.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())

from raftkv.cli.bench import proc_cpu_s  # noqa: E402
from raftkv.cli.local_cluster import LocalCluster  # noqa: E402
from raftkv.client import Client  # noqa: E402

OUT = "/tmp/bulk"


def _py_spy(pid, name, seconds):
    cmd = ["py-spy", "record", "-o", f"{OUT}/{name}.txt", "-f", "raw", "--pid", str(pid),
           "--duration", str(seconds), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    total = int(sys.argv[1])
    prof = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--profile" else 0
    os.makedirs(OUT, exist_ok=True)
    data = tempfile.mkdtemp(prefix="bulk-", dir=OUT)
    try:
        run(data, total, prof)
    finally:
        shutil.rmtree(data, ignore_errors=True)  # the members are stopped by then


def run(data, total, prof):
    with LocalCluster(data) as cl:
        cl.start()
        cl.wait_listening()
        c = Client(cl.native_endpoints, timeout=30.0)
        for _ in range(100):
            try:
                c.put(b"warm", b"x")
                break
            except Exception:  # noqa: BLE001 -- no leader yet
                time.sleep(0.2)
        c.put_many((f"w/{i}".encode(), b"b" * 256) for i in range(2000))
        spies = []
        if prof:
            spies = [_py_spy(m.pid, m.name, prof) for m in cl.members]
            spies.append(_py_spy(os.getpid(), "client", prof))
            time.sleep(1)
        t0, c0 = os.times(), [proc_cpu_s(m.pid) for m in cl.members]
        nonce = os.urandom(4).hex()
        res = c.put_many((f"bench-bulk/{nonce}/{i:09d}".encode(), b"b" * 256)
                         for i in range(total))
        t1, c1 = os.times(), [proc_cpu_s(m.pid) for m in cl.members]
        server = [round(b - a, 2) for a, b in zip(c0, c1)]
        client = round(t1.user + t1.system - t0.user - t0.system, 2)
        print(f"done={res.done} failed={res.failed} elapsed={res.elapsed_s:.2f}s "
              f"rate={res.done / res.elapsed_s:.0f}/s server_cpu={server} client_cpu={client} "
              f"load={os.getloadavg()[0]:.2f} errors={res.errors[:2]}", flush=True)
        for p in spies:
            p.wait()
        c.close()


if __name__ == "__main__":
    main()
