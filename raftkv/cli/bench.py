"""raftkv-bench: etcd-benchmark-style workloads against raftkv or any etcd, and a side-by-side.

    raftkv-bench put --endpoints 127.0.0.1:2379 --protocol grpc --clients 16 --total 10000
    raftkv-bench range --consistency s --clients 16 --duration 10
    raftkv-bench txn-put | mixed --read-ratio 0.9 | watch --total 1000
    raftkv-bench sidebyside --reps 3 --total 2000 --out bench-results/sbs
    raftkv-bench micro            # the pytest-benchmark suites in bench/, results autosaved

Each workload runs on the load generator engine (raftkv.cli.loadgen): worker processes, each
with its share of the clients and connections. Every report says whether a client process was
CPU-saturated (then the figures describe the client, not the server: add --processes).
The grpc protocol speaks etcd's v3 API with the generated stubs, so it also measures real etcd;
native speaks raftkv's own pipelined msgpack protocol. See bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from raftkv.cli import loadgen
from raftkv.cli.benchstats import Histogram, format_rows, summary

WORKLOADS = ("put", "range", "txn-put", "mixed")
WATCH_PREFIX = b"bench-watch/"
ETCD_STOP_GRACE_S = 2.0
REJOIN_TIMEOUT_S = 30.0  # after a fault run: how long the faulted member gets to rejoin


def default_processes(clients):
    """One worker process per 16 clients, at most the number of cores (one is enough below)."""
    return max(1, min(os.cpu_count() or 1, (clients + 15) // 16))


def driver_spec(protocol, endpoints):
    if protocol not in ("native", "grpc"):
        raise ValueError(f"unknown protocol {protocol!r} (native or grpc)")
    return f"{protocol}:{','.join(endpoints)}"


def run_workload(name, protocol, endpoints, clients=1, conns=1, processes=0, user="", **kw):
    """One load generator run; returns (summary row, histogram). kw: Workload fields; user:
    "name:password" to authenticate as, "" for none."""
    w = loadgen.Workload(name=name, **kw)
    spec = loadgen.RunSpec(w, driver_spec(protocol, endpoints), clients=clients, conns=conns,
                           processes=processes or default_processes(clients), user=user)
    row, hist = loadgen.run(spec)
    row["protocol"] = protocol
    return row, hist


# Watch latency: one watcher stream on a fresh prefix, one writer putting keys one at a time;
# each event's latency is from just before its put was sent to its arrival on the watch.


async def _open_watch(protocol, endpoints, user=""):
    if protocol == "grpc":
        from raftkv.cli.loadgen_drivers import GrpcDriver

        d = GrpcDriver(",".join(endpoints), 0, loadgen.split_user(user) if user else None)
        await d.connect()
        it = await d.watch_keys(WATCH_PREFIX)
        return it, d.close
    from raftkv.client import AsyncClient

    auth = dict(zip(("user", "password"), loadgen.split_user(user))) if user else {}
    c = AsyncClient(endpoints, timeout=10.0, **auth)
    events, cancel = await c.watch_prefix(WATCH_PREFIX)

    async def keys():
        async for ev in events:
            yield ev.key

    async def close():
        await cancel()
        await c.close()
    return keys(), close


async def _watch_latency(protocol, endpoints, total, value_size, user=""):
    from raftkv.cli.loadgen import _make_driver

    stream, close_watch = await _open_watch(protocol, endpoints, user)
    writer = _make_driver(driver_spec(protocol, endpoints), 1, user)
    await writer.connect()
    nonce = os.urandom(4).hex().encode()
    sent, hist, value = {}, Histogram(), b"v" * value_size

    async def consume():
        async for key in stream:
            t0 = sent.pop(key, None)
            if t0 is not None:
                hist.record(time.perf_counter() - t0)
            if hist.count >= total:
                return

    reader = asyncio.ensure_future(consume())
    await asyncio.sleep(0.2)  # the watch is registered before the first put
    errors, t_start = 0, time.perf_counter()
    for i in range(total):
        key = WATCH_PREFIX + nonce + b"/%08d" % i
        sent[key] = time.perf_counter()
        try:
            await writer.put(key, value)
        except Exception:  # noqa: BLE001 -- counted, the run goes on
            errors += 1
            sent.pop(key, None)
    try:
        await asyncio.wait_for(reader, timeout=10.0)
    except asyncio.TimeoutError:
        errors += len(sent)
    elapsed = time.perf_counter() - t_start
    await writer.close()
    await close_watch()
    extra = {"clients": 1, "protocol": protocol, "lost_events": len(sent)}
    return summary("watch", hist, max(elapsed, 1e-9), errors, extra), hist


def run_watch(protocol, endpoints, total, value_size=256, user=""):
    return asyncio.run(_watch_latency(protocol, endpoints, total, value_size, user))


# The command line.


def _add_common(p):
    p.add_argument("--endpoints", default="127.0.0.1:2379",
                   help="comma-separated host:port list (gRPC client or native endpoints; "
                        "native also takes unix://PATH)")
    p.add_argument("--protocol", choices=("grpc", "native"), default="grpc",
                   help="grpc: etcd v3 API (raftkv or any etcd); native: raftkv's protocol")
    p.add_argument("--clients", type=int, default=1, help="concurrent clients (default 1)")
    p.add_argument("--conns", type=int, default=1, help="connections shared by the clients")
    p.add_argument("--processes", type=int, default=0,
                   help="client worker processes (default: one per 16 clients, <= cores)")
    p.add_argument("--key-size", type=int, default=8)
    p.add_argument("--val-size", type=int, default=256)
    p.add_argument("--key-space-size", type=int, default=10_000)
    p.add_argument("--sequential-keys", action="store_true", help="keys in order (else random)")
    p.add_argument("--total", type=int, default=0, help="total operations over all clients")
    p.add_argument("--duration", type=float, default=0.0, help="seconds (instead of --total)")
    p.add_argument("--rate", type=float, default=0.0, help="ops/s over all clients (0: max)")
    p.add_argument("--user", default="", metavar="NAME:PASSWORD",
                   help="authenticate as this user (etcdctl's --user): gRPC sends the token as "
                        "metadata, native as a body field")
    p.add_argument("-w", "--output", choices=("table", "json", "csv"), default="table")


def _parse(argv):
    p = argparse.ArgumentParser(prog="raftkv-bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in WORKLOADS + ("watch",):
        sp = sub.add_parser(name, help=f"the {name} workload")
        _add_common(sp)
        if name in ("range", "mixed"):
            sp.add_argument("--consistency", choices=("l", "s"), default="l",
                            help="l: linearizable reads, s: serializable")
        if name == "mixed":
            sp.add_argument("--read-ratio", type=float, default=0.5)
    _add_sidebyside_parser(sub)
    mp = sub.add_parser("micro", help="run the pytest-benchmark suites in bench/ (autosave)")
    mp.add_argument("--repo", default=".", help="the raftkv checkout (default: .)")
    mp.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    mp.set_defaults(func=run_micro)
    return p.parse_args(argv)


def _workload_kw(args):
    kw = {"key_size": args.key_size, "value_size": args.val_size,
          "key_space": args.key_space_size, "sequential_keys": args.sequential_keys,
          "total": args.total, "duration_s": args.duration, "rate": args.rate}
    if getattr(args, "consistency", "l") == "s":
        kw["serializable"] = True
    if args.cmd == "mixed":
        kw["read_ratio"] = args.read_ratio
    return kw


def _report(row, fmt):
    print(format_rows([row], fmt).rstrip("\n"))
    if row.get("client_saturated") and fmt == "table":
        print("warning: a client process was CPU-saturated: these figures describe the client; "
              "rerun with more --processes", file=sys.stderr)


def main(argv=None):
    args = _parse(argv)
    if args.cmd in ("sidebyside", "micro"):
        return args.func(args)
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if args.cmd == "watch" and args.total <= 0:
        print("raftkv-bench watch: give --total", file=sys.stderr)
        return 2
    try:
        if args.user:
            loadgen.split_user(args.user)
        if args.cmd == "watch":
            row, _ = run_watch(args.protocol, endpoints, args.total, args.val_size, args.user)
        else:
            row, _ = run_workload(args.cmd, args.protocol, endpoints, args.clients, args.conns,
                                  args.processes, user=args.user, **_workload_kw(args))
    except ValueError as exc:
        print(f"raftkv-bench: {exc}", file=sys.stderr)
        return 2
    _report(row, args.output)
    return 1 if row["requests"] == 0 else 0


def run_micro(args):
    """All pytest-benchmark suites in bench/, autosaved under .benchmarks/ for comparison."""
    root = args.repo
    if not os.path.isdir(os.path.join(root, "bench")):
        print(f"raftkv-bench micro: no bench/ directory under {root}", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "pytest", "bench", "-p", "no:cacheprovider",
           "--benchmark-only", "--benchmark-autosave"] + list(args.pytest_args)
    print("+ " + " ".join(cmd))
    return subprocess.call(cmd, cwd=root)



# Servers for the side-by-side: a raftkv LocalCluster and an etcd cluster of the same shape.


class EtcdCluster:
    """N etcd members (the installed `etcd` binary) on fresh 127.0.0.1 ports, data under
    data_root; every process is recorded and stopped by its PID."""

    def __init__(self, data_root, members=3, binary="etcd", extra_args=()):
        from raftkv.cli.local_cluster import free_ports

        self.data_root = os.path.abspath(data_root)
        self.binary = binary
        self.extra_args = list(extra_args)
        ports = free_ports(2 * members)
        self.names = [f"e{i + 1}" for i in range(members)]
        self.client_ports = ports[0::2]
        self.peer_ports = ports[1::2]
        self.procs = [None] * members

    @property
    def endpoints(self):
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    @property
    def pids(self):
        return [p.pid for p in self.procs if p is not None and p.poll() is None]

    def _command(self, i):
        peers = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names,
                                                                       self.peer_ports))
        client = f"http://127.0.0.1:{self.client_ports[i]}"
        peer = f"http://127.0.0.1:{self.peer_ports[i]}"
        return [self.binary, "--name", self.names[i],
                "--data-dir", os.path.join(self.data_root, f"{self.names[i]}.etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", peers, "--initial-cluster-state", "new",
                "--initial-cluster-token", "raftkv-bench-etcd", *self.extra_args]

    def start(self):
        os.makedirs(self.data_root, exist_ok=True)
        for i, name in enumerate(self.names):
            with open(os.path.join(self.data_root, f"{name}.log"), "ab") as log:
                self.procs[i] = subprocess.Popen(self._command(i), stdout=log,
                                                 stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL)

    def pid_of(self, i):
        return self.procs[i].pid

    def restart(self, i):
        """Start member i again on its data (after a kill): reap the old process first."""
        if self.procs[i] is not None:
            self.procs[i].wait(timeout=10)
        with open(os.path.join(self.data_root, f"{self.names[i]}.log"), "ab") as log:
            self.procs[i] = subprocess.Popen(self._command(i), stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self, grace_s=ETCD_STOP_GRACE_S):
        """SIGTERM each member by PID, SIGKILL whatever is left after grace_s (the data is
        thrown away: a clean etcd shutdown, with its leader hand-over, takes ~7 s here)."""
        import signal

        for p in self.procs:
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)  # a SIGSTOPped member must be able to exit
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


class System:
    """One system under test as the side-by-side sees it: endpoints, member PIDs, restart."""

    def __init__(self, name, cluster):
        self.name = name
        self.cluster = cluster
        if isinstance(cluster, EtcdCluster):
            self.grpc_endpoints, self.native_endpoints = cluster.endpoints, None
        else:
            self.grpc_endpoints = cluster.endpoints
            self.native_endpoints = cluster.native_endpoints

    @property
    def protocols(self):
        return ("grpc",) if self.native_endpoints is None else ("grpc", "native")

    def endpoints(self, protocol):
        return self.native_endpoints if protocol == "native" else self.grpc_endpoints

    def pids(self):
        if isinstance(self.cluster, EtcdCluster):
            return self.cluster.pids
        return [m.pid for m in self.cluster.members if m.alive()]

    def pid_of(self, i):
        if isinstance(self.cluster, EtcdCluster):
            return self.cluster.pid_of(i)
        return self.cluster.members[i].pid

    def restart(self, i):
        if isinstance(self.cluster, EtcdCluster):
            self.cluster.restart(i)
        else:
            m = self.cluster.members[i]
            self.cluster.kill(m)
            self.cluster.start_member(m)


def proc_cpu_s(pid):
    """utime + stime of a live process in seconds (/proc/PID/stat), 0 if it is gone."""
    return sum(proc_user_sys_s(pid))


def proc_user_sys_s(pid):
    """(utime, stime) of a live process in seconds (/proc/PID/stat), zeros if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def proc_hwm_kb(pid):
    """Peak resident set size (VmHWM) of a live process in KiB, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_of(pids):
    return {pid: proc_cpu_s(pid) for pid in pids}


def cpu_delta(before, pids):
    """CPU seconds used since `before` by the processes in pids (summed over members)."""
    return round(sum(proc_cpu_s(p) - before.get(p, 0.0) for p in pids), 3)


async def _statuses(endpoints):
    """[(member_id, leader_id) or None] for each endpoint (Maintenance.Status over gRPC)."""
    from raftkv.cli.loadgen_drivers import GrpcDriver

    out = []
    for ep in endpoints:
        d = GrpcDriver(ep, 0)
        try:
            await d._open()
            out.append(await d.status())
        except Exception:  # noqa: BLE001 -- not up yet, stopped or killed: no answer
            out.append(None)
        finally:
            await d.close()
    return out


async def _leader_index(endpoints, timeout_s=30.0, require_all=True):
    """The index of the member named as leader by every member (require_all) or by a majority
    of them; waits up to timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        sts = await _statuses(endpoints)
        ids = [st[0] if st else None for st in sts]
        named = [st[1] for st in sts if st and st[1]]
        for leader in set(named):
            agreed = named.count(leader) == len(endpoints) if require_all else (
                named.count(leader) > len(endpoints) // 2)
            if agreed and leader in ids:
                return ids.index(leader)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no agreed leader among {endpoints}: {sts}")
        await asyncio.sleep(0.1)


def leader_index(endpoints, timeout_s=30.0, require_all=True):
    return asyncio.run(_leader_index(endpoints, timeout_s, require_all))


# Fault runs: writes from `clients` coroutines in this process, every success time-stamped; the
# leader is SIGKILLed or SIGSTOPped at fault_at_s. The unavailability window is the longest gap
# without a successful write after the fault; the spike is the worst latency after it.


async def _fault_client(driver, t0, end, records, errors, n):
    value = b"f" * 256
    i = 0
    while time.perf_counter() < end:
        key = b"bench-fault/%d/%d" % (n, i)
        i += 1
        s = time.perf_counter()
        try:
            await driver.put(key, value)
        except Exception:  # noqa: BLE001 -- counted; back off a little so errors do not spin
            errors[0] += 1
            errors[1] = max(errors[1], time.perf_counter() - s)
            await asyncio.sleep(0.01)
            continue
        done = time.perf_counter()
        records.append((done - t0, done - s))


async def _fault_run(protocol, endpoints, clients, duration_s, fault_at_s, inject):
    spec = driver_spec(protocol, endpoints)
    drivers = [loadgen._make_driver(spec, i) for i in range(min(clients, len(endpoints)))]
    for d in drivers:
        await d.connect()
    records, errors = [], [0, 0.0]  # failed calls: count, longest duration
    t0 = time.perf_counter()
    end = t0 + duration_s

    async def fault():
        await asyncio.sleep(fault_at_s)
        inject()
        return time.perf_counter() - t0

    tasks = [_fault_client(drivers[i % len(drivers)], t0, end, records, errors, i)
             for i in range(clients)]
    fault_t, *_ = await asyncio.gather(fault(), *tasks)
    for d in drivers:
        await d.close()
    return records, errors, fault_t


def fault_stats(records, errors, fault_t, duration_s, max_failed_s=0.0):
    """Unavailability window and latency spike from the (done_s, latency_s) records of the
    successful writes; errors failed calls, the longest of them max_failed_s."""
    records = sorted(records)
    before = [lat for t, lat in records if t < fault_t]
    after = [(t, lat) for t, lat in records if t >= fault_t]
    times = [fault_t] + [t for t, _ in after] + [duration_s]
    gap = max(b - a for a, b in zip(times, times[1:]))
    base_gap = max((b - a for (a, _), (b, _) in zip(records, records[1:]) if b < fault_t),
                   default=0.0)
    hb, ha = Histogram(), Histogram()
    for lat in before:
        hb.record(lat)
    for _, lat in after:
        ha.record(lat)
    return {
        "fault_at_s": round(fault_t, 3), "writes": len(records), "errors": errors,
        "recovered": bool(after), "unavailable_s": round(gap, 3),
        "max_gap_before_fault_s": round(base_gap, 3),
        "p99_before_ms": round(hb.percentile_us(99) / 1000, 3),
        "p99_after_ms": round(ha.percentile_us(99) / 1000, 3),
        "max_after_ms": round(ha.max_us / 1000, 3),
        "max_failed_call_ms": round(max_failed_s * 1000, 3),
    }


def run_fault(system, protocol, kind, clients, duration_s, fault_at_s,
              rejoin_timeout_s=REJOIN_TIMEOUT_S):
    """One fault run on system; the faulted member is resumed or restarted afterwards."""
    import signal

    grpc_eps = system.grpc_endpoints
    victim = leader_index(grpc_eps, require_all=False)
    pid = system.pid_of(victim)
    sig = signal.SIGKILL if kind == "leader-kill" else signal.SIGSTOP
    records, errors, fault_t = asyncio.run(_fault_run(
        protocol, system.endpoints(protocol), clients, duration_s, fault_at_s,
        lambda: os.kill(pid, sig)))
    t_back = time.monotonic()
    if sig == signal.SIGSTOP:
        os.kill(pid, signal.SIGCONT)
    else:
        system.restart(victim)
    try:
        leader_index(grpc_eps, timeout_s=rejoin_timeout_s)
        rejoined = round(time.monotonic() - t_back, 2)
    except TimeoutError:
        rejoined = None  # the faulted member does not name the leader: reported as such
    row = {"system": system.name, "protocol": protocol, "fault": kind, "clients": clients,
           "victim": victim, "victim_rejoined_s": rejoined}
    row.update(fault_stats(records, errors[0], fault_t, duration_s, errors[1]))
    return row, records


# The side-by-side runner.

# (case, workload, clients, extra Workload fields). put-c1 uses sequential keys: it is the
# sequential put latency case and the 1-client point of the throughput curve.
SBS_CASES = (
    ("put-c1", "put", 1, {"sequential_keys": True}),
    ("put-c16", "put", 16, {}),
    ("put-c64", "put", 64, {}),
    ("range-l-c16", "range", 16, {}),
    ("txn-put-c16", "txn-put", 16, {}),
    ("watch", "watch", 1, {}),
)
THROUGHPUT_CASES = ("put-c1", "put-c16", "put-c64")


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return 0.0
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _run_case(system, protocol, case, total, user=""):
    name, workload, clients, extra = case
    eps = system.endpoints(protocol)
    pids = system.pids()
    before = cpu_of(pids)
    if workload == "watch":
        row, hist = run_watch(protocol, eps, total, user=user)
    else:
        row, hist = run_workload(workload, protocol, eps, clients=clients,
                                 conns=max(1, clients // 16), total=total, user=user, **extra)
    cpu = cpu_delta(before, pids)
    row.update({"case": name, "system": system.name, "server_cpu_s": cpu,
                "server_cpu_us_per_op": round(1e6 * cpu / max(1, row["requests"]), 1),
                "load1": round(os.getloadavg()[0], 2)})
    return row, hist


def _run_bulk(system, total):
    """raftkv's native bulk load: Client.put_many of total x 256 B values."""
    from raftkv.client import Client

    pids = system.pids()
    before = cpu_of(pids)
    nonce = os.urandom(4).hex()
    items = ((f"bench-bulk/{nonce}/{i:09d}".encode(), b"b" * 256) for i in range(total))
    c = Client(system.native_endpoints, timeout=30.0)
    try:
        res = c.put_many(items)
    finally:
        c.close()
    cpu = cpu_delta(before, pids)
    return {"case": "bulk-put_many", "system": system.name, "protocol": "native",
            "requests": res.done, "errors": res.failed, "elapsed_s": round(res.elapsed_s, 3),
            "throughput_per_s": round(res.done / max(res.elapsed_s, 1e-9), 1),
            "server_cpu_s": cpu, "load1": round(os.getloadavg()[0], 2)}


def _cases(args):
    wanted = args.cases.split(",") if args.cases else [c[0] for c in SBS_CASES]
    unknown = set(wanted) - {c[0] for c in SBS_CASES}
    if unknown:
        raise ValueError(f"unknown cases {sorted(unknown)}; known: {[c[0] for c in SBS_CASES]}")
    return [c for c in SBS_CASES if c[0] in wanted]


def _run_reps(systems, args, log):
    """Every case on every system and protocol, alternating which system goes first."""
    rows, hists = [], {}
    for rep in range(args.reps):
        order = systems if rep % 2 == 0 else systems[::-1]
        for case in _cases(args):
            for system in order:
                for protocol in system.protocols:
                    row, hist = _run_case(system, protocol, case, args.total)
                    row["rep"] = rep
                    rows.append(row)
                    key = (case[0], system.name, protocol)
                    hists.setdefault(key, Histogram()).merge(hist)
                    log(f"rep {rep} {case[0]:12} {system.name:6} {protocol:6} "
                        f"{row['throughput_per_s']:>9}/s p50 {row['p50_ms']} ms "
                        f"p99 {row['p99_ms']} ms err {row['errors']} "
                        f"sat {row.get('client_saturated', False)} load {row['load1']}")
        if args.bulk_total and systems[0].native_endpoints is not None:
            row = _run_bulk(systems[0], args.bulk_total)
            row["rep"] = rep
            rows.append(row)
            log(f"rep {rep} bulk put_many {row['throughput_per_s']}/s err {row['errors']}")
    return rows, hists


MEDIAN_FIELDS = ("throughput_per_s", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms",
                 "server_cpu_s", "server_cpu_us_per_op")


def medians(rows):
    """One row per (case, system, protocol): medians over the repetitions."""
    groups = {}
    for r in rows:
        groups.setdefault((r["case"], r["system"], r["protocol"]), []).append(r)
    out = []
    for (case, system, protocol), rs in groups.items():
        m = {"case": case, "system": system, "protocol": protocol, "reps": len(rs)}
        for f in MEDIAN_FIELDS:
            if f in rs[0]:
                m[f] = round(_median([r[f] for r in rs]), 3)
        m["errors"] = sum(r.get("errors", 0) for r in rs)
        m["client_saturated"] = any(r.get("client_saturated", False) for r in rs)
        m["load1"] = round(_median([r["load1"] for r in rs]), 2)
        out.append(m)
    return out


def ratios(med):
    """raftkv/etcd of the medians, per case: raftkv over gRPC and over native vs etcd gRPC."""
    by = {(m["case"], m["system"], m["protocol"]): m for m in med}
    out = []
    for (case, system, protocol), m in by.items():
        e = by.get((case, "etcd", "grpc"))
        if system != "raftkv" or e is None:
            continue
        r = {"case": case, "raftkv_protocol": protocol}
        for f in ("throughput_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_op"):
            if e.get(f):
                r[f"{f}_ratio"] = round(m[f] / e[f], 3)
        out.append(r)
    return out


def _plot(path_png, draw):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)
    plt.close(fig)
    return path_png


def plot_cdfs(hists, out_dir, cases=("put-c1", "put-c16", "put-c64")):
    cases = [c for c in cases if any(k[0] == c for k in hists)]

    def draw(plt):
        fig, axes = plt.subplots(1, max(1, len(cases)), figsize=(5 * max(1, len(cases)), 4))
        axes = axes if len(cases) > 1 else [axes]
        for ax, case in zip(axes, cases):
            for (c, system, protocol), h in sorted(hists.items()):
                if c == case and h.count:
                    xs, ys = zip(*h.cdf())
                    ax.step([x / 1000 for x in xs], ys, where="post",
                            label=f"{system} {protocol}")
            ax.set_xscale("log")
            ax.set_xlabel("latency (ms, log)")
            ax.set_ylabel("fraction of requests <= x")
            ax.set_title(f"{case}: latency CDF")
            ax.grid(True, alpha=0.3)
            ax.legend()
        return fig
    return _plot(os.path.join(out_dir, "latency_cdf.png"), draw)


def plot_throughput(med, out_dir):
    def draw(plt):
        fig, ax = plt.subplots(figsize=(6, 4))
        series = {}
        for m in med:
            if m["case"] in THROUGHPUT_CASES:
                clients = int(m["case"].split("-c")[1])
                series.setdefault((m["system"], m["protocol"]), []).append(
                    (clients, m["throughput_per_s"]))
        for (system, protocol), pts in sorted(series.items()):
            xs, ys = zip(*sorted(pts))
            ax.plot(xs, ys, marker="o", label=f"{system} {protocol}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("clients")
        ax.set_ylabel("puts/s (median over reps)")
        ax.set_title("put throughput vs clients (3 members)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        return fig
    return _plot(os.path.join(out_dir, "throughput_vs_clients.png"), draw)


def plot_faults(fault_runs, out_dir):
    def draw(plt):
        fig, ax = plt.subplots(figsize=(8, 4))
        for row, records in fault_runs:
            if row.get("rep", 0):
                continue  # one run per system and protocol: the first
            if records:
                ts, lats = zip(*sorted(records))
                ax.plot(ts, [x * 1000 for x in lats], ".", markersize=2,
                        label=f"{row['system']} {row['protocol']} ({row['fault']})")
            ax.axvline(row["fault_at_s"], color="grey", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("time since start (s); dashed: fault injected")
        ax.set_ylabel("put latency (ms, log)")
        ax.set_title("writes through a leader fault")
        ax.grid(True, alpha=0.3)
        ax.legend(markerscale=5)
        return fig
    return _plot(os.path.join(out_dir, "fault_timeline.png"), draw)


def _start_systems(data_root, with_etcd, log, only=None, extra_args=()):
    """Fresh 3-member clusters; extra_args go to every member of both (flags they share)."""
    from raftkv.cli.local_cluster import LocalCluster

    systems = []
    if only in (None, "raftkv"):
        systems.append(System("raftkv", LocalCluster(os.path.join(data_root, "raftkv"), 3,
                                                     extra_args=extra_args)))
    if with_etcd and only in (None, "etcd"):
        systems.append(System("etcd", EtcdCluster(os.path.join(data_root, "etcd"), 3,
                                                  extra_args=extra_args)))
    try:
        for s in systems:
            s.cluster.start()
        for s in systems:
            i = leader_index(s.grpc_endpoints, timeout_s=60.0)
            log(f"{s.name}: 3 members up, pids {s.pids()}, leader {s.grpc_endpoints[i]}")
    except BaseException:
        for s in systems:
            s.cluster.stop()
        raise
    return systems


def _peak_rss(systems):
    out = {}
    for s in systems:
        kb = [proc_hwm_kb(p) for p in s.pids()]
        out[s.name] = {"sum_vmhwm_mib": round(sum(kb) / 1024, 1),
                       "max_vmhwm_mib": round(max(kb, default=0) / 1024, 1)}
    return out


def _run_faults(names, data_root, args, log):
    """--fault-reps runs per system and protocol, each on a fresh cluster (a fault run leaves
    its cluster with a restarted member: the next run would not start from the same state)."""
    runs = []
    for rep in range(args.fault_reps):
        for n, (name, protocol) in enumerate(names):
            root = os.path.join(data_root, f"fault{rep}-{n}")
            (s,) = _start_systems(root, True, log, only=name)
            try:
                row, records = run_fault(s, protocol, args.fault, args.fault_clients,
                                         args.fault_duration, args.fault_duration / 4,
                                         args.rejoin_timeout)
            finally:
                s.cluster.stop()
            row.update({"rep": rep, "load1": round(os.getloadavg()[0], 2)})
            runs.append((row, records))
            log(f"fault {args.fault} {name} {protocol}: unavailable {row['unavailable_s']} s, "
                f"p99 {row['p99_before_ms']} -> {row['p99_after_ms']} ms, "
                f"max {row['max_after_ms']} ms, errors {row['errors']} "
                f"(longest {row['max_failed_call_ms']} ms), "
                f"victim rejoined after {row['victim_rejoined_s']} s")
    return runs


def fault_medians(fault_rows):
    """Per system and protocol: the median unavailability and spike over the fault reps."""
    groups = {}
    for r in fault_rows:
        groups.setdefault((r["system"], r["protocol"], r["fault"]), []).append(r)
    out = []
    for (system, protocol, fault), rs in groups.items():
        m = {"system": system, "protocol": protocol, "fault": fault, "reps": len(rs)}
        for f in ("unavailable_s", "max_after_ms", "max_failed_call_ms", "errors"):
            m[f"median_{f}"] = round(_median([r[f] for r in rs]), 3)
        m["max_unavailable_s"] = max(r["unavailable_s"] for r in rs)
        m["all_recovered"] = all(r["recovered"] for r in rs)
        out.append(m)
    return out


def _environment():
    import platform

    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine(), "loadavg_start": os.getloadavg(),
            "etcd": _etcd_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def _etcd_version(binary="etcd"):
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.splitlines()[0] if out.stdout else None


def run_sidebyside(args):
    """raftkv and etcd, 3 members each, fresh: every case on each in alternation, then faults."""
    import json
    import shutil
    import tempfile

    def log(msg):
        print(f"[sbs {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    with_etcd = shutil.which("etcd") is not None and not args.no_etcd
    if not with_etcd:
        log("etcd binary not found (or --no-etcd): raftkv only, no ratios")
    os.makedirs(args.out, exist_ok=True)
    data_root = tempfile.mkdtemp(prefix="raftkv-sbs-")
    env = _environment()
    systems = []
    try:
        systems = _start_systems(data_root, with_etcd, log)
        rows, hists = _run_reps(systems, args, log)
        rss = _peak_rss(systems)
        names = [(s.name, p) for s in systems for p in s.protocols]
        for s in systems:
            s.cluster.stop()
        faults = _run_faults(names, data_root, args, log) if args.fault != "none" else []
    finally:
        for s in systems:
            s.cluster.stop()
        shutil.rmtree(data_root, ignore_errors=True)
    env["loadavg_end"] = os.getloadavg()
    med = medians([r for r in rows if r["case"] != "bulk-put_many"])
    bulk = [r for r in rows if r["case"] == "bulk-put_many"]
    result = {"environment": env, "args": {k: v for k, v in vars(args).items() if k != "func"},
              "medians": med, "ratios": ratios(med), "bulk": bulk, "peak_rss": rss,
              "faults": [r for r, _ in faults],
              "fault_medians": fault_medians([r for r, _ in faults]), "runs": rows}
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    pngs = [os.path.join(args.out, "results.json")] + _plots(hists, med, faults, args.out, log)
    _print_sidebyside(result, pngs, args.output)
    return 0


def _plots(hists, med, faults, out_dir, log):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        log("matplotlib is not installed (pip install 'raftkv[bench]'): no plots")
        return []
    pngs = [plot_cdfs(hists, out_dir), plot_throughput(med, out_dir)]
    if faults:
        pngs.append(plot_faults(faults, out_dir))
    return pngs


def _print_sidebyside(result, pngs, fmt):
    cols = ("case", "system", "protocol", "reps", "throughput_per_s", "p50_ms", "p99_ms",
            "p99.9_ms", "max_ms", "errors", "server_cpu_us_per_op", "client_saturated", "load1")
    print(format_rows([{c: m.get(c, "") for c in cols} for m in result["medians"]], fmt))
    if result["ratios"]:
        print("\nraftkv / etcd (ratio of medians; throughput > 1 and latency < 1 favour raftkv)")
        print(format_rows(result["ratios"], fmt))
    for title in ("bulk", "faults", "fault_medians"):
        if result[title]:
            print(f"\n{title}")
            print(format_rows(result[title], fmt))
    print("\npeak RSS (VmHWM, MiB): " + ", ".join(
        f"{k}: sum {v['sum_vmhwm_mib']} max {v['max_vmhwm_mib']}"
        for k, v in result["peak_rss"].items()))
    print("loadavg start %s end %s on %s cpus" % (result["environment"]["loadavg_start"],
                                                  result["environment"]["loadavg_end"],
                                                  result["environment"]["cpus"]))
    print("wrote " + ", ".join(pngs))


def _add_sidebyside_parser(sub):
    sp = sub.add_parser("sidebyside", help="fresh 3-member raftkv and etcd clusters, compared")
    sp.add_argument("--reps", type=int, default=3,
                    help="repetitions of the cases (alternating systems; 0: faults only)")
    sp.add_argument("--total", type=int, default=2000, help="operations per case and run")
    sp.add_argument("--cases", default="",
                    help="comma-separated subset of: " + ",".join(c[0] for c in SBS_CASES))
    sp.add_argument("--bulk-total", type=int, default=20_000,
                    help="keys for raftkv's native put_many bulk load (0: skip)")
    sp.add_argument("--fault", choices=("none", "leader-kill", "leader-stop"),
                    default="leader-kill", help="fault injected once per system at the end")
    sp.add_argument("--fault-duration", type=float, default=20.0,
                    help="seconds of each fault run (the fault comes at 1/4)")
    sp.add_argument("--fault-clients", type=int, default=8)
    sp.add_argument("--fault-reps", type=int, default=1,
                    help="fault runs per system and protocol (each on a fresh cluster)")
    sp.add_argument("--rejoin-timeout", type=float, default=REJOIN_TIMEOUT_S,
                    help="seconds the faulted member gets to name the leader again")
    sp.add_argument("--no-etcd", action="store_true", help="raftkv only")
    sp.add_argument("--out", default="bench-results/sidebyside",
                    help="directory for results.json and the PNG plots")
    sp.add_argument("-w", "--output", choices=("table", "json", "csv"), default="table")
    sp.set_defaults(func=run_sidebyside)


if __name__ == "__main__":
    sys.exit(main())
