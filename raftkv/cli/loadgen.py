"""The load generator engine: worker processes, clients, rate limits, histograms, CPU checks.

A run is `processes` worker processes, each with its share of `clients` concurrent client
coroutines on its own event loop and its share of `conns` driver connections. Each client loops:
wait for a rate-limit token, build the next operation, time the driver call, record the latency.
Workers send back a histogram, an error count and their own CPU seconds; the parent merges them.

The generator must not be the bottleneck: each worker measures its CPU time, and a worker busy
for more than CLIENT_SATURATED_CPU_FRACTION of the wall time is reported as saturated, so the
report says when the figures describe the client rather than the server. The `null` driver
(no server at all) measures the generator's own ceiling.

Drivers are async classes created from a URL-ish spec inside each worker: see DRIVERS.
"""
from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import queue
import random
import resource
import time

from raftkv.cli.benchstats import Histogram, summary

CLIENT_SATURATED_CPU_FRACTION = 0.9  # a worker this busy is itself the bottleneck
WORKER_JOIN_GRACE_S = 30.0  # beyond the run's duration, for connect and drain
WORKER_POLL_S = 0.2  # how often the parent checks that the workers it waits for are alive
DEAD_WORKER_DRAIN_S = 1.0  # for the result a worker put just before it exited
# Worker i numbers its operations from i * SEQUENTIAL_KEY_STRIDE: with --sequential-keys and a
# key space above processes * stride, the workers' keys are distinct (a key space that divides
# the stride, e.g. 200,000, makes every worker write the same keys).
SEQUENTIAL_KEY_STRIDE = 10_000_000


@dataclasses.dataclass
class Workload:
    name: str = "put"  # put | range | txn-put | mixed
    key_size: int = 8
    value_size: int = 256
    key_space: int = 10_000  # distinct keys (random) or wrap-around point (sequential)
    sequential_keys: bool = False
    total: int = 0  # total operations over all clients (0: use duration_s)
    duration_s: float = 0.0
    rate: float = 0.0  # operations per second over all clients (0: as fast as possible)
    read_ratio: float = 0.5  # for mixed
    serializable: bool = False  # for range and mixed reads
    key_prefix: bytes = b"bench/"

    def validate(self):
        if self.name not in ("put", "range", "txn-put", "mixed"):
            raise ValueError(f"unknown workload {self.name!r}")
        if self.total <= 0 and self.duration_s <= 0:
            raise ValueError("give --total or --duration")
        if self.key_size < 1 or self.value_size < 0 or self.key_space < 1:
            raise ValueError("key size and key space must be positive, value size not negative")
        if not 0.0 <= self.read_ratio <= 1.0:
            raise ValueError("--read-ratio must be between 0 and 1")


@dataclasses.dataclass
class RunSpec:
    workload: Workload
    driver: str  # e.g. "null", "null:0.001", "native:http://127.0.0.1:2379,..."
    clients: int = 1
    conns: int = 1
    processes: int = 1
    seed: int = 0
    user: str = ""  # "name:password" to authenticate as (etcdctl's --user); "": no auth


class NullDriver:
    """No server: an optional fixed await per call. Measures the generator itself (a user is
    accepted and ignored)."""

    def __init__(self, arg, conn_index, user=None):
        self.delay_s = float(arg) if arg else 0.0

    async def connect(self):
        return None

    async def _op(self):
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        else:
            await asyncio.sleep(0)

    async def put(self, key, value):
        await self._op()

    async def get(self, key, serializable):
        await self._op()

    async def txn_put(self, key, value):
        await self._op()

    async def close(self):
        return None


DRIVERS = {"null": NullDriver}


def register_driver(scheme, cls):
    DRIVERS[scheme] = cls


def _make_driver(spec, conn_index, user=""):
    """A driver for spec; with user ("name:password") it authenticates as that user. A driver
    without auth support is made exactly as before when no user is given."""
    scheme, _, arg = spec.partition(":")
    if scheme not in DRIVERS:
        if scheme in ("native", "grpc"):
            _load_builtin_drivers()
        if scheme not in DRIVERS:
            raise ValueError(f"unknown driver {scheme!r}; known: {sorted(DRIVERS)}")
    if user:
        return DRIVERS[scheme](arg, conn_index, user=split_user(user))
    return DRIVERS[scheme](arg, conn_index)


def split_user(user):
    """The (name, password) of "name:password", read as etcdctl reads its --user (the first
    colon splits: a password may hold colons)."""
    name, sep, password = user.partition(":")
    if not sep or not name:
        raise ValueError(f"--user must be NAME:PASSWORD, not {user!r}")
    return name, password


def _load_builtin_drivers():
    """Drivers that need raftkv's client or the etcd protos are imported only when asked for."""
    import importlib

    try:
        importlib.import_module("raftkv.cli.loadgen_drivers")  # registers native and grpc
    except ImportError:
        pass


class _Limiter:
    """A shared token schedule: operation n may start at start + n / rate."""

    def __init__(self, rate):
        self.rate = rate
        self.start = time.monotonic()
        self.issued = 0

    async def wait(self):
        if self.rate <= 0:
            return
        at = self.start + self.issued / self.rate
        self.issued += 1
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def _key(w, rng, n):
    idx = n % w.key_space if w.sequential_keys else rng.randrange(w.key_space)
    body = str(idx).encode().rjust(max(1, w.key_size - len(w.key_prefix)), b"0")
    return w.key_prefix + body


async def _client(w, driver, limiter, rng, quota, deadline, hist, errors, counter):
    value = os.urandom(w.value_size // 2 + 1).hex().encode()[: w.value_size]
    while True:
        if quota is not None:
            if counter[0] >= quota:
                return
            counter[0] += 1
        elif time.monotonic() >= deadline:
            return
        await limiter.wait()
        key = _key(w, rng, counter[1])
        counter[1] += 1
        t0 = time.perf_counter()
        try:
            if w.name == "put" or (w.name == "mixed" and rng.random() >= w.read_ratio):
                await driver.put(key, value)
            elif w.name == "txn-put":
                await driver.txn_put(key, value)
            else:
                await driver.get(key, w.serializable)
        except Exception:  # noqa: BLE001 -- every failure is counted, the run goes on
            errors[0] += 1
            continue
        hist.record(time.perf_counter() - t0)


async def _worker_main(spec, worker_index, n_clients, n_conns, quota, conn_offset=0):
    w = spec.workload
    rng = random.Random(spec.seed * 1000 + worker_index)
    # Connections are numbered across all workers (a driver starts at endpoint n mod len), so
    # e.g. 4 connections from 2 workers go to endpoints 0, 1, 2, 0 rather than 0, 1, 1, 2.
    drivers = [_make_driver(spec.driver, conn_offset + i, spec.user) for i in range(n_conns)]
    for d in drivers:
        await d.connect()
    hist, errors, counter = Histogram(), [0], [0, worker_index * SEQUENTIAL_KEY_STRIDE]
    per_worker_rate = w.rate / spec.processes if w.rate else 0.0
    limiter = _Limiter(per_worker_rate)
    t0 = time.monotonic()
    deadline = t0 + w.duration_s if w.duration_s else None
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(
        _client(w, drivers[i % n_conns], limiter, rng, quota, deadline, hist, errors, counter)
        for i in range(n_clients)
    ))
    elapsed = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    for d in drivers:
        await d.close()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"hist": hist.to_dict(), "errors": errors[0], "elapsed_s": elapsed, "cpu_s": cpu}


def _worker_entry(spec, worker_index, n_clients, n_conns, quota, out_queue, conn_offset=0):
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        res = runner(_worker_main(spec, worker_index, n_clients, n_conns, quota, conn_offset))
    except Exception as exc:  # noqa: BLE001 -- reported to the parent, which fails the run
        res = {"error": f"{type(exc).__name__}: {exc}"}
    out_queue.put((worker_index, res))


def _split(total, parts):
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(spec):
    """Run the workload; returns the summary row (see benchstats.summary) plus client CPU.

    A worker that exits without reporting (killed, crashed, failed to start) fails the run with
    RuntimeError as soon as the parent sees it gone; the other workers are then stopped."""
    spec.workload.validate()
    if spec.user:
        split_user(spec.user)  # a malformed --user fails here, not in every worker
    if spec.clients < 1 or spec.conns < 1 or spec.processes < 1:
        raise ValueError("--clients, --conns and processes must be at least 1")
    procs = min(spec.processes, spec.clients)
    spec = dataclasses.replace(spec, processes=procs)
    clients = _split(spec.clients, procs)
    conns = [max(1, c) for c in _split(max(spec.conns, procs), procs)]
    quotas = _split(spec.workload.total, procs) if spec.workload.total else [None] * procs
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    workers = [
        ctx.Process(target=_worker_entry,
                    args=(spec, i, clients[i], conns[i], quotas[i], q, sum(conns[:i])))
        for i in range(procs)
    ]
    budget = (spec.workload.duration_s or 0) + WORKER_JOIN_GRACE_S
    if spec.workload.total and not spec.workload.duration_s:
        budget = None  # a --total run ends when its operations are done
    try:
        for p in workers:
            p.start()
        results = _collect(q, workers, budget)
    except BaseException:
        _stop_workers(workers)  # e.g. the others, when one died: they would run on unseen
        raise
    for p in workers:
        p.join(timeout=WORKER_JOIN_GRACE_S)
    return _merge(spec, results)


def _collect(q, workers, budget):
    """Each worker's (index, result) from q, in arrival order. Waits at most `budget` seconds
    for each next result (None: no limit), and fails the run with RuntimeError as soon as a
    worker has exited without putting its result (killed, crashed, or failed to start), after
    reading whatever result it did put before exiting."""
    results = {}
    deadline = None if budget is None else time.monotonic() + budget
    while len(results) < len(workers):
        wait = WORKER_POLL_S
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        try:
            i, res = q.get(timeout=wait)
        except queue.Empty:
            pass
        else:
            results[i] = res
            if deadline is not None:
                deadline = time.monotonic() + budget
            continue
        dead = [i for i, p in enumerate(workers) if i not in results and p.exitcode is not None]
        if dead:
            _drain(q, results, dead)
            lost = [i for i in dead if i not in results]
            if lost:
                raise RuntimeError("load generator worker died without a result: " + "; ".join(
                    f"worker {i} (pid {workers[i].pid}) exit code {workers[i].exitcode}"
                    for i in lost))
        elif deadline is not None and time.monotonic() >= deadline:
            waiting = [i for i in range(len(workers)) if i not in results]
            raise RuntimeError(f"load generator workers {waiting} sent no result within "
                               f"{budget:.0f} s")
    return [(i, results[i]) for i in results]


def _drain(q, results, dead):
    """Read results until every worker in `dead` has one or none comes: a worker that put
    its result and then exited has flushed it into the pipe before its exit."""
    end = time.monotonic() + DEAD_WORKER_DRAIN_S
    while any(i not in results for i in dead):
        try:
            i, res = q.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            return
        results[i] = res


def _stop_workers(workers):
    """SIGTERM, then SIGKILL, whichever of these started workers still runs (by PID)."""
    for p in workers:
        if p.pid is not None and p.exitcode is None:
            p.terminate()
    for p in workers:
        if p.pid is not None:
            p.join(timeout=5.0)
            if p.exitcode is None:
                p.kill()
                p.join(timeout=5.0)


def _merge(spec, results):
    failed = [r["error"] for _, r in results if "error" in r]
    if failed:
        raise RuntimeError("load generator worker failed: " + "; ".join(failed))
    hist = Histogram()
    errors, elapsed, cpu, saturated = 0, 0.0, 0.0, 0
    for _, r in results:
        hist.merge(Histogram.from_dict(r["hist"]))
        errors += r["errors"]
        elapsed = max(elapsed, r["elapsed_s"])
        cpu += r["cpu_s"]
        if r["cpu_s"] >= CLIENT_SATURATED_CPU_FRACTION * r["elapsed_s"]:
            saturated += 1
    extra = {
        "clients": spec.clients, "conns": spec.conns, "processes": spec.processes,
        "client_cpu_s": round(cpu, 3),
        "client_saturated": saturated > 0,
    }
    return summary(spec.workload.name, hist, max(elapsed, 1e-9), errors, extra), hist
