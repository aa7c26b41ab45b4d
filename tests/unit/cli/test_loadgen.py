"""The load generator engine counts, limits and merges correctly (with the server-less driver)."""
import os
import queue
import signal
import threading
import time

import pytest

from raftkv.cli.loadgen import RunSpec, Workload, run


def test_total_is_split_exactly_across_processes_and_clients():
    spec = RunSpec(Workload(name="put", total=900), driver="null", clients=7, conns=3, processes=2)
    row, hist = run(spec)
    assert row["requests"] == 900 and hist.count == 900
    assert row["errors"] == 0
    assert row["processes"] == 2 and row["clients"] == 7


def test_rate_limit_bounds_throughput():
    spec = RunSpec(Workload(name="put", total=60, rate=200.0), driver="null", clients=4)
    t0 = time.monotonic()
    row, _ = run(spec)
    took = time.monotonic() - t0
    # 60 operations at 200/s need at least ~0.3 s of schedule; the limiter must not let them
    # all through at once (the upper bound is loose: process start-up is slow on 2 cores).
    assert row["requests"] == 60
    assert row["elapsed_s"] >= 0.25
    assert took < 60


def test_latency_of_a_slow_driver_is_measured():
    spec = RunSpec(Workload(name="mixed", total=40), driver="null:0.01", clients=4)
    row, hist = run(spec)
    assert hist.count == 40
    assert 9.0 <= row["p50_ms"] <= 200.0  # ~10 ms sleep; generous above for a loaded machine


def test_duration_mode_reports_the_saturation_flag():
    spec = RunSpec(Workload(name="put", duration_s=0.5), driver="null", clients=8)
    row, _ = run(spec)
    assert row["requests"] > 100
    assert isinstance(row["client_saturated"], bool)
    assert row["client_cpu_s"] > 0


def test_saturation_rule_on_worker_figures():
    """A worker busy on CPU for most of its wall time is saturated (deterministic: the rule is
    tested on given figures, not on how loaded this machine happens to be)."""
    from raftkv.cli import loadgen
    from raftkv.cli.benchstats import Histogram

    spec = RunSpec(Workload(name="put", total=10), driver="null")
    hist = Histogram().to_dict()
    busy = {"hist": hist, "errors": 0, "elapsed_s": 1.0,
            "cpu_s": loadgen.CLIENT_SATURATED_CPU_FRACTION + 0.01}
    idle = dict(busy, cpu_s=0.1)
    assert loadgen._merge(spec, [(0, busy)])[0]["client_saturated"] is True
    assert loadgen._merge(spec, [(0, idle)])[0]["client_saturated"] is False
    assert loadgen._merge(spec, [(0, idle), (1, busy)])[0]["client_saturated"] is True


def test_bad_specs_are_rejected():
    with pytest.raises(ValueError):
        run(RunSpec(Workload(name="nope", total=1), driver="null"))
    with pytest.raises(ValueError):
        run(RunSpec(Workload(name="put"), driver="null"))
    with pytest.raises(RuntimeError, match="unknown driver"):
        run(RunSpec(Workload(name="put", total=1), driver="bogus"))


def _run_in_thread(spec):
    out = {}

    def target():
        try:
            out["row"] = run(spec)
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            out["exc"] = exc
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


@pytest.mark.timeout(120)
def test_a_killed_worker_fails_the_run_instead_of_hanging():
    """A --total run whose worker is SIGKILLed (it never reports) raises promptly, naming the
    worker and its exit code, and the other worker is stopped too."""
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    # ~10^9 operations at 10 ms each: without the liveness check run() would wait forever.
    spec = RunSpec(Workload(name="put", total=10**9), driver="null:0.01", clients=2,
                   processes=2)
    t, out = _run_in_thread(spec)
    deadline = time.monotonic() + 60
    victims = []
    while len(victims) < 2 and time.monotonic() < deadline:
        victims = [p for p in multiprocessing.active_children() if p.pid not in before]
        time.sleep(0.05)
    assert len(victims) == 2, "the workers did not start"
    time.sleep(0.5)  # let them get going (dying while spawning is covered just the same)
    os.kill(victims[0].pid, signal.SIGKILL)
    t0 = time.monotonic()
    t.join(timeout=30)
    assert not t.is_alive(), "run() hung on a dead worker"
    assert time.monotonic() - t0 < 30
    exc = out.get("exc")
    assert isinstance(exc, RuntimeError), out
    assert f"pid {victims[0].pid}) exit code -9" in str(exc)
    assert "died without a result" in str(exc)
    for p in victims:  # the surviving worker was stopped, not left running
        p.join(timeout=10)
        assert p.exitcode is not None


class _FakeWorker:
    def __init__(self, pid, exitcode):
        self.pid, self.exitcode = pid, exitcode


def test_collect_reads_the_result_of_a_worker_that_exited_after_putting_it():
    from raftkv.cli import loadgen

    q = queue.Queue()
    q.put((1, {"r": 1}))
    q.put((0, {"r": 0}))
    # Both have exited already: their results are read, nothing is reported lost.
    got = loadgen._collect(q, [_FakeWorker(10, 0), _FakeWorker(11, 3)], None)
    assert sorted(got) == [(0, {"r": 0}), (1, {"r": 1})]


def test_collect_names_a_worker_that_exited_without_a_result():
    from raftkv.cli import loadgen

    q = queue.Queue()
    q.put((0, {"r": 0}))
    workers = [_FakeWorker(10, 0), _FakeWorker(11, 3), _FakeWorker(12, None)]
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"worker 1 \(pid 11\) exit code 3$"):
        loadgen._collect(q, workers, None)
    assert time.monotonic() - t0 < 10


def test_collect_keeps_the_per_result_budget():
    from raftkv.cli import loadgen

    q = queue.Queue()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"workers \[0\] sent no result within"):
        loadgen._collect(q, [_FakeWorker(10, None)], 0.3)
    assert 0.25 <= time.monotonic() - t0 < 10


# --user: the drivers authenticate as etcd's clients do (against a fake etcd, no cluster).


def test_user_is_split_at_the_first_colon_and_checked_before_the_run():
    from raftkv.cli.loadgen import split_user

    assert split_user("alice:pw:with:colons") == ("alice", "pw:with:colons")
    assert split_user("bob:") == ("bob", "")
    for bad in ("alice", ":pw", ""):
        with pytest.raises(ValueError, match="NAME:PASSWORD"):
            split_user(bad)
    with pytest.raises(ValueError, match="NAME:PASSWORD"):
        run(RunSpec(Workload(name="put", total=1), driver="null", user="nopassword"))


def test_a_user_reaches_every_worker_driver():
    spec = RunSpec(Workload(name="put", total=40), driver="null", clients=4, processes=2,
                   user="alice:pw")
    row, _ = run(spec)
    assert row["requests"] == 40 and row["errors"] == 0


class _FakeAsyncClient:
    made = []

    def __init__(self, endpoints, **kw):
        self.endpoints, self.kw, self.calls = endpoints, kw, []
        self.made.append(self)

    async def status(self):
        return {}

    async def call(self, op, body):
        self.calls.append((op, body))
        return {}

    async def close(self):
        return None


@pytest.mark.parametrize("user", [None, ("alice", "pw")])
def test_native_driver_gives_the_user_to_its_client(monkeypatch, user):
    import asyncio

    from raftkv.cli import loadgen_drivers

    monkeypatch.setattr(loadgen_drivers, "AsyncClient", _FakeAsyncClient)
    _FakeAsyncClient.made.clear()
    d = loadgen_drivers.NativeDriver("127.0.0.1:1,127.0.0.1:2", 1, user)

    async def go():
        await d.connect()
        await d.put(b"k", b"v")
        await d.close()
    asyncio.run(go())
    (c,) = _FakeAsyncClient.made
    assert c.endpoints == ["127.0.0.1:2", "127.0.0.1:1"]
    expected = {} if user is None else {"user": "alice", "password": "pw"}
    assert {k: v for k, v in c.kw.items() if k != "timeout"} == expected
    assert c.calls == [("put", {"key": b"k", "value": b"v"})]  # the token is the client's job


class _FakeEtcd:
    """etcdserverpb Auth.Authenticate and KV.Put/Range on 127.0.0.1 (an OS-assigned port),
    serving from its own thread. Tokens are "t1", "t2", ...; expire() makes the current one
    invalid, as a member restart or the TTL would. Records each call's token metadata."""

    def __init__(self):
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.valid, self.issued, self.calls = set(), 0, []
        self.port = self._run(self._start())

    def _run(self, coro):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self):
        import grpc

        from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

        fake = self

        def token_of(context):
            return dict(context.invocation_metadata() or ()).get("token")

        async def check(context, method):
            token = token_of(context)
            fake.calls.append((method, token))
            if token is not None and token not in fake.valid:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "etcdserver: invalid auth token")

        class Auth(rpc_pb2_grpc.AuthServicer):
            async def Authenticate(self, request, context):
                assert (request.name, request.password) == ("alice", "pw")
                fake.issued += 1
                token = f"t{fake.issued}"
                fake.valid.add(token)
                fake.calls.append(("Authenticate", token_of(context)))
                return rpc_pb2.AuthenticateResponse(token=token)

        class KV(rpc_pb2_grpc.KVServicer):
            async def Put(self, request, context):
                await check(context, "Put")
                return rpc_pb2.PutResponse()

            async def Range(self, request, context):
                await check(context, "Range")
                return rpc_pb2.RangeResponse()

        self.server = grpc.aio.server()
        rpc_pb2_grpc.add_AuthServicer_to_server(Auth(), self.server)
        rpc_pb2_grpc.add_KVServicer_to_server(KV(), self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    def expire(self):
        self.loop.call_soon_threadsafe(self.valid.clear)

    def stop(self):
        self._run(self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def fake_etcd():
    f = _FakeEtcd()
    try:
        yield f
    finally:
        f.stop()


@pytest.mark.timeout(60)
def test_grpc_driver_authenticates_once_and_sends_the_token_on_every_call(fake_etcd):
    import asyncio

    from raftkv.cli.loadgen_drivers import GrpcDriver

    async def go():
        d = GrpcDriver(f"127.0.0.1:{fake_etcd.port}", 0, ("alice", "pw"))
        await d.connect()
        for i in range(5):
            await d.put(b"bench/%d" % i, b"v")
        await d.get(b"bench/0", False)
        await d.close()
        return d.authentications
    assert asyncio.run(go()) == 1
    assert fake_etcd.calls == [("Authenticate", None)] + [("Put", "t1")] * 5 + [("Range", "t1")]


@pytest.mark.timeout(60)
def test_grpc_driver_without_a_user_sends_no_token(fake_etcd):
    import asyncio

    from raftkv.cli.loadgen_drivers import GrpcDriver

    async def go():
        d = GrpcDriver(f"127.0.0.1:{fake_etcd.port}", 0)
        await d.connect()
        await d.put(b"bench/1", b"v")
        await d.close()
    asyncio.run(go())
    assert fake_etcd.calls == [("Range", None), ("Put", None)]  # the warm-up read, the put


@pytest.mark.timeout(60)
def test_grpc_driver_reauthenticates_once_for_all_calls_failing_on_the_same_token(fake_etcd):
    """An expired token fails the calls in flight with "invalid auth token": one Authenticate
    serves them all, and each is retried with the new token (none counts as an error)."""
    import asyncio

    from raftkv.cli.loadgen_drivers import GrpcDriver

    async def go():
        d = GrpcDriver(f"127.0.0.1:{fake_etcd.port}", 0, ("alice", "pw"))
        await d.connect()
        await d.put(b"bench/0", b"v")
        fake_etcd.expire()
        await asyncio.sleep(0.1)  # the fake's loop has run the expiry
        await asyncio.gather(*(d.put(b"bench/%d" % i, b"v") for i in range(8)))
        await d.put(b"bench/9", b"v")
        await d.close()
        return d.authentications
    assert asyncio.run(go()) == 2
    puts = [token for method, token in fake_etcd.calls if method == "Put"]
    assert puts[0] == "t1" and puts[-1] == "t2"
    assert puts.count("t1") == 9 and puts.count("t2") == 9  # 8 failed, 8 retried, 1 more
    assert fake_etcd.issued == 2  # connect, and one for the 8 failed calls


@pytest.mark.timeout(60)
def test_grpc_driver_gives_up_when_a_fresh_token_is_refused_too(fake_etcd):
    import asyncio

    import grpc

    from raftkv.cli.loadgen_drivers import GrpcDriver

    async def go():
        d = GrpcDriver(f"127.0.0.1:{fake_etcd.port}", 0, ("alice", "pw"))
        await d.connect()
        # From here on no token is valid, not even a fresh one.
        fake_etcd.loop.call_soon_threadsafe(setattr, fake_etcd, "valid", _Refuses())
        await asyncio.sleep(0.1)
        with pytest.raises(grpc.aio.AioRpcError, match="invalid auth token"):
            await d.put(b"bench/0", b"v")
        await d.close()
        return d.authentications
    assert asyncio.run(go()) == 2  # connect, then the one re-authentication


class _Refuses(set):
    def add(self, token):
        return None  # no token is ever valid


@pytest.mark.timeout(120)
def test_a_grpc_run_with_a_user_authenticates_per_connection(fake_etcd):
    """The whole engine (2 worker processes, 3 connections): one Authenticate per connection,
    every put with a token."""
    spec = RunSpec(Workload(name="put", total=60), driver=f"grpc:127.0.0.1:{fake_etcd.port}",
                   clients=6, conns=3, processes=2, user="alice:pw")
    row, _ = run(spec)
    assert row["requests"] == 60 and row["errors"] == 0
    assert fake_etcd.issued == 3
    puts = [token for method, token in fake_etcd.calls if method == "Put"]
    assert len(puts) == 60 and set(puts) <= {"t1", "t2", "t3"}
