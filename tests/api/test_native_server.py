"""The native front end against FakeService on port 0, spoken to with raw frames.

Covers pipelining (many requests in flight on one connection, answers matched by id), error
mapping, connection-fatal frames (garbage, truncated, oversized, no hello) that close only
their own connection, batch, watch streaming and cancel, and per-connection back-pressure.
"""
from __future__ import annotations

import asyncio
import random
import socket
import struct

import pytest

from raftkv.api import wire
from raftkv.api.native import start_native_server
from raftkv.client import AsyncClient
from raftkv.errors import RaftkvError
from raftkv.server import leaderless
from tests.api.fake_service import FakeService

TEST_TIMEOUT_S = 20.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


class RawConn:
    """A test client that writes raw bytes and reads decoded frames."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.decoder = wire.FrameDecoder(wire.RESPONSE_FRAME_BYTES_MAX)
        self.frames = []

    @classmethod
    async def open(cls, port, hello=True):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = cls(reader, writer)
        if hello:
            conn.send(wire.hello())
            reply = await conn.recv()
            assert wire.check_hello(reply, reply=True)["max_frame_bytes"] > 0
        return conn

    def send(self, obj):
        self.writer.write(wire.frame(obj))

    def request(self, request_id, op, body, idem=None):
        self.send(wire.request(request_id, op, body, idem))

    async def recv(self):
        while not self.frames:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    async def recv_until_eof(self):
        out = []
        try:
            while True:
                out.append(await self.recv())
        except (EOFError, ConnectionResetError):
            return out

    async def close(self):
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


class SlowService(FakeService):
    """Answers after a random delay, so completion order differs from request order."""

    def __init__(self, seed=1):
        super().__init__()
        self.rng = random.Random(seed)

    async def call(self, op, body):
        await asyncio.sleep(self.rng.random() * 0.02)
        return await super().call(op, body)


class BrokenService(FakeService):
    async def call(self, op, body):
        if body.get("key") == b"boom":
            raise ValueError("a bug in the service")
        if body.get("key") == b"leader":
            raise RaftkvError("NOT_LEADER")
        return await super().call(op, body)


async def _serve(service, **kw):
    return await start_native_server(service, "127.0.0.1", 0, **kw)


def test_pipelined_requests_are_matched_by_id():
    async def main():
        server, port = await _serve(SlowService())
        async with server:
            conn = await RawConn.open(port)
            n = 300
            for i in range(1, n + 1):
                conn.request(i, "put", {"key": b"k%d" % i, "value": b"v%d" % i})
            answers = [await conn.recv() for _ in range(n)]
            ids = [a[0] for a in answers]
            assert sorted(ids) == list(range(1, n + 1))
            assert ids != sorted(ids), "responses should come in completion order"
            assert all(a[1] == wire.STATUS_OK for a in answers)
            for i in range(1, n + 1):
                conn.request(n + i, "range", {"key": b"k%d" % i})
            for _ in range(n):
                rid, status, payload = await conn.recv()
                assert status == wire.STATUS_OK
                assert payload["kvs"][0]["value"] == b"v%d" % (rid - n)
            await conn.close()

    run(main())


def test_request_errors_fail_only_their_request():
    async def main():
        server, port = await _serve(BrokenService())
        async with server:
            conn = await RawConn.open(port)
            conn.request(1, "no_such_op", {})
            conn.request(2, "put", {"key": "str-not-bytes", "value": b"v"})
            conn.request(3, "put", {"key": b"", "value": b"v"})
            conn.request(4, "put", {"key": b"boom"})
            conn.request(5, "put", {"key": b"leader"})
            conn.request(6, "put", [1, 2])
            conn.request(7, "put", {"key": b"ok", "value": b"v"})
            got = {}
            for _ in range(7):
                rid, status, payload = await conn.recv()
                got[rid] = (status, payload)
            codes = {rid: p["code"] for rid, (s, p) in got.items() if s == wire.STATUS_ERROR}
            assert codes == {1: "UNKNOWN_OP", 2: "BAD_REQUEST", 3: "EMPTY_KEY", 4: "INTERNAL",
                             5: "NOT_LEADER", 6: "BAD_REQUEST"}
            assert got[5][1]["message"] == "etcdserver: not leader"
            assert got[7][0] == wire.STATUS_OK
            await conn.close()

    run(main())


async def _check_fatal(port, raw_bytes, code, hello=True):
    bad = await RawConn.open(port, hello=hello)
    good = await RawConn.open(port)
    bad.writer.write(raw_bytes)
    frames = await bad.recv_until_eof()
    assert frames, "an error frame comes before the close"
    rid, status, payload = frames[-1]
    assert (rid, status, payload["code"]) == (0, wire.STATUS_ERROR, code)
    good.request(1, "put", {"key": b"still", "value": b"up"})
    assert (await good.recv())[:2] == [1, wire.STATUS_OK]
    await bad.close()
    await good.close()


def test_garbage_truncated_and_oversized_frames_close_only_their_connection():
    async def main():
        server, port = await _serve(FakeService(), max_frame_bytes=1024)
        async with server:
            # 0xc1 is never used by msgpack.
            await _check_fatal(port, b"\x00\x00\x00\x04\xc1\xc1\xc1\xc1", "BAD_REQUEST")
            body = wire.encode([1, "put", {"key": b"k", "value": b"v"}])
            short = wire.FRAME_HEADER.pack(len(body) - 3) + body  # frame cut before its end
            await _check_fatal(port, short, "BAD_REQUEST")
            await _check_fatal(port, wire.FRAME_HEADER.pack(1025) + b"x" * 10,
                               "REQUEST_TOO_LARGE")
            await _check_fatal(port, wire.frame([1, "put", {"value": b"x" * 2000}]),
                               "REQUEST_TOO_LARGE")
            await _check_fatal(port, wire.frame(["not", "an", "envelope", "!", "!"]),
                               "BAD_REQUEST")
            await _check_fatal(port, wire.frame([1, "status", {}]), "BAD_REQUEST", hello=False)
            await _check_fatal(port, wire.frame(["raftkv", 99]), "BAD_REQUEST", hello=False)

    run(main())


def test_truncated_frame_at_eof_is_reported():
    async def main():
        server, port = await _serve(FakeService())
        async with server:
            conn = await RawConn.open(port)
            conn.writer.write(wire.frame([1, "status", {}])[:-2])
            conn.writer.write_eof()
            frames = await conn.recv_until_eof()
            assert frames[-1][2]["code"] == "BAD_REQUEST"
            await conn.close()

    run(main())


def test_half_close_still_gets_answers():
    async def main():
        server, port = await _serve(SlowService())
        async with server:
            conn = await RawConn.open(port)
            for i in range(1, 11):
                conn.request(i, "put", {"key": b"k", "value": b"v"})
            conn.writer.write_eof()
            frames = await conn.recv_until_eof()
            assert sorted(f[0] for f in frames) == list(range(1, 11))
            await conn.close()

    run(main())


def test_watch_streams_and_cancels():
    async def main():
        service = FakeService()
        server, port = await _serve(service)
        async with server:
            conn = await RawConn.open(port)
            conn.request(7, "watch", {"key": b"w/", "range_end": b"w0"})
            rid, status, payload = await conn.recv()  # registered: writes from now on reach it
            assert (rid, status, payload["created"]) == (7, wire.STATUS_ITEM, True)
            for i in range(3):
                conn.request(100 + i, "put", {"key": b"w/%d" % i, "value": b"x"})
            items, oks = [], 0
            while len(items) < 3 or oks < 3:
                rid, status, payload = await conn.recv()
                if rid == 7:
                    assert status == wire.STATUS_ITEM
                    items.extend(payload["events"])
                else:
                    oks += 1
            assert [e["kv"]["key"] for e in items] == [b"w/0", b"w/1", b"w/2"]
            conn.request(8, "watch_cancel", {"watch_id": 7})
            got = {tuple((await conn.recv())[:2]) for _ in range(2)}
            assert got == {(8, wire.STATUS_OK), (7, wire.STATUS_END)}
            assert service._watchers == []
            conn.request(9, "watch_cancel", {"watch_id": 7})
            assert (await conn.recv())[2] == {"canceled": False}
            await conn.close()

    run(main())


def test_watches_end_when_the_connection_closes():
    async def main():
        service = FakeService()
        server, port = await _serve(service)
        async with server:
            conn = await RawConn.open(port)
            conn.request(1, "watch", {"key": b"a"})
            await asyncio.sleep(0.05)
            assert len(service._watchers) == 1
            await conn.close()
            for _ in range(100):
                if not service._watchers:
                    break
                await asyncio.sleep(0.01)
            assert service._watchers == []

    run(main())


def test_batch_applies_each_item_and_reports_per_item_errors():
    async def main():
        service = FakeService()
        server, port = await _serve(service)
        async with server:
            conn = await RawConn.open(port)
            reqs = [{"request_put": {"key": b"b%d" % i, "value": b"v"}} for i in range(50)]
            reqs.append({"request_put": {"key": b"", "value": b"v"}})
            reqs.append({"request_delete_range": {"key": b"b0"}})
            conn.request(1, "batch", {"requests": reqs}, idem=[12345, 1])
            rid, status, payload = await conn.recv()
            assert (rid, status) == (1, wire.STATUS_OK)
            resps = payload["responses"]
            assert len(resps) == 52
            assert all("response_put" in r for r in resps[:50])
            assert resps[50]["error"]["code"] == "EMPTY_KEY"
            assert resps[51]["response_delete_range"]["deleted"] == 1
            assert len(service.kvs) == 49
            conn.request(2, "batch", {"requests": [{"request_range": {"key": b"x"}}]})
            assert (await conn.recv())[2]["code"] == "BAD_REQUEST"
            await conn.close()

    run(main())


def test_idempotency_id_reaches_the_service():
    async def main():
        service = FakeService()
        server, port = await _serve(service)
        async with server:
            conn = await RawConn.open(port)
            conn.request(1, "put", {"key": b"k", "value": b"v"}, idem=[2 ** 64 - 1, 42])
            conn.request(2, "put", {"key": b"k", "value": b"v"}, idem=[-1, 42])
            got = {f[0]: f for f in [await conn.recv(), await conn.recv()]}
            assert got[1][1] == wire.STATUS_OK
            assert got[2][2]["code"] == "BAD_REQUEST"
            assert service.calls[-1][1]["request_id"] == [2 ** 64 - 1, 42]
            await conn.close()

    run(main())


class GatedService(FakeService):
    def __init__(self):
        super().__init__()
        self.gate = asyncio.Event()
        self.running = 0
        self.running_max = 0

    async def call(self, op, body):
        self.running += 1
        self.running_max = max(self.running_max, self.running)
        await self.gate.wait()
        self.running -= 1
        return await super().call(op, body)


def test_inflight_per_connection_is_bounded():
    async def main():
        service = GatedService()
        server, port = await _serve(service, inflight_max=4)
        async with server:
            conn = await RawConn.open(port)
            for i in range(1, 21):
                conn.request(i, "put", {"key": b"k", "value": b"v"})
            await asyncio.sleep(0.1)
            assert service.running == 4
            service.gate.set()
            ids = sorted([(await conn.recv())[0] for _ in range(20)])
            assert ids == list(range(1, 21))
            assert service.running_max <= 4
            await conn.close()

    run(main())


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_decoder_handles_any_split(chunk):
    frames = [[i, "put", {"key": b"k" * i, "value": b"v" * (i * 37)}] for i in range(1, 30)]
    data = b"".join(wire.frame(f) for f in frames)
    dec = wire.FrameDecoder()
    out = []
    for i in range(0, len(data), chunk):
        out.extend(dec.feed(data[i:i + chunk]))
    assert out == frames
    assert not dec.pending


class SnapshotService(FakeService):
    async def snapshot(self, who=None):
        for chunk in (b"abc", memoryview(b"defg"), b"h"):
            yield chunk
            await asyncio.sleep(0)


def test_snapshot_streams_the_service_chunks_as_bytes():
    """The "snapshot" stream op (used by the --grpc-workers processes): one ITEM per chunk of
    service.snapshot(), as bytes, then END."""
    async def main():
        server, port = await _serve(SnapshotService())
        async with server:
            conn = await RawConn.open(port)
            conn.request(5, "snapshot", {})
            frames = [await conn.recv() for _ in range(4)]
            assert frames == [[5, wire.STATUS_ITEM, b"abc"], [5, wire.STATUS_ITEM, b"defg"],
                              [5, wire.STATUS_ITEM, b"h"], [5, wire.STATUS_END, None]]
            await conn.close()

    run(main())


class FastService(FakeService):
    """A service with start_write (the member's task-free write path): answers later from a
    timer, as the member's apply would, or refuses at once; None falls back to call()."""

    def __init__(self):
        super().__init__()
        self.started, self.cancelled = [], []

    def start_write(self, op, body, done, fail_fast=False):
        from raftkv.server.proposals import Reply

        key = body.get("key")
        if key == b"boom":
            raise ValueError("a bug in start_write")
        if key == b"refused":
            raise RaftkvError("NO_LEADER")
        if key == b"slow-path":
            return None
        self.started.append(key)
        cancelled = self.cancelled

        class Tracked(Reply):
            __slots__ = ()

            def cancel(self):
                cancelled.append(key)
                super().cancel()
        reply = Tracked(done)
        loop = asyncio.get_running_loop()
        if key == b"fails":
            loop.call_later(0.01, reply.set_exception, RaftkvError("LEADER_CHANGED"))
        elif key != b"never":
            loop.call_later(0.01, reply.set_result, {"header": {"revision": 7}})
        return reply


def test_task_free_writes_answer_fail_and_fall_back():
    async def main():
        svc = FastService()
        server, port = await _serve(svc)
        async with server:
            conn = await RawConn.open(port)
            for rid, key in enumerate([b"a", b"boom", b"refused", b"slow-path", b"fails"], 1):
                conn.request(rid, "put", {"key": key, "value": b"v"})
            got = {}
            for _ in range(5):
                rid, status, payload = await conn.recv()
                got[rid] = payload["code"] if status == wire.STATUS_ERROR else "ok"
            assert got == {1: "ok", 2: "INTERNAL", 3: "NO_LEADER", 4: "ok",
                           5: "LEADER_CHANGED"}
            assert svc.kvs[b"slow-path"]["value"] == b"v"  # call() ran for the fallback
            # A write still in flight when the connection is reset is forgotten, not answered
            # (a half-close, by contrast, still gets its outstanding answers).
            conn.request(6, "put", {"key": b"never", "value": b"v"})
            await asyncio.sleep(0.05)
            sock = conn.writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.writer.transport.abort()  # with linger 0: a reset
            for _ in range(100):
                if svc.cancelled:
                    break
                await asyncio.sleep(0.01)
            assert svc.cancelled == [b"never"]
            # The server is fine: a new connection writes.
            conn = await RawConn.open(port)
            conn.request(1, "put", {"key": b"b", "value": b"v"})
            assert (await conn.recv())[:2] == [1, wire.STATUS_OK]
            await conn.close()

    run(main())


def test_the_workers_port_wants_their_secret_and_trusts_their_certificate_names():
    """The member's native port for its gRPC workers: a hello without the secret (or with
    another) is refused; a worker's requests keep the certificate CN it passes on, which the
    public port always replaces with its own connection's (none here)."""
    async def main():
        service = FakeService()
        workers, wport = await _serve(service, worker_secret="s3cret")
        public, pport = await _serve(service)
        async with workers, public:
            for options in (None, {"worker_secret": "guess"}, {"worker_secret": 5}):
                conn = await RawConn.open(wport, hello=False)
                conn.send(wire.hello(options))
                rid, status, payload = await conn.recv()
                assert (rid, status) == (wire.CONNECTION_REQUEST_ID, wire.STATUS_ERROR)
                assert "gRPC workers" in payload["message"]
                with pytest.raises(EOFError):
                    await conn.recv()
            conn = await RawConn.open(wport, hello=False)
            conn.send(wire.hello({"worker_secret": "s3cret"}))
            assert wire.check_hello(await conn.recv(), reply=True)
            conn.request(1, "range", {"key": b"k", "_cert_user": "alice"})
            await conn.recv()
            assert service.calls[-1] == ("range", {"key": b"k", "_cert_user": "alice"})
            await conn.close()
            conn = await RawConn.open(pport)
            conn.request(1, "range", {"key": b"k", "_cert_user": "alice"})
            await conn.recv()
            assert service.calls[-1] == ("range", {"key": b"k"})
            await conn.close()

    run(main())


class LeaderlessProbe(FakeService):
    """Records, for each request, whether its task runs with leaderless.FAIL_FAST set, and for
    each plain write the fail_fast the task-free path (start_write) was given."""

    def __init__(self):
        super().__init__()
        self.fail_fast = []
        self.started_fail_fast = []

    async def call(self, op, body):
        self.fail_fast.append(leaderless.FAIL_FAST.get())
        return await super().call(op, body)

    def start_write(self, op, body, done, fail_fast=False):
        self.started_fail_fast.append(fail_fast)
        return None  # take the task path (call)


def test_hello_option_leaderless_fail_marks_that_connections_requests_only():
    """A client that fails over by itself says so in its hello ({"leaderless": "fail"}): its
    requests run with FAIL_FAST set (refused at once by a member without a leader), and its
    plain writes reach start_write with fail_fast; other connections' requests, and requests
    after them, are held as before. Any other value is refused like a bad hello."""
    async def main():
        service = LeaderlessProbe()
        server, port = await _serve(service)
        async with server:
            for options, expected in ((None, False), ({"leaderless": "wait"}, False),
                                      ({"leaderless": "fail"}, True)):
                conn = await RawConn.open(port, hello=False)
                conn.send(wire.hello(options))
                assert wire.check_hello(await conn.recv(), reply=True)
                conn.request(1, "range", {"key": b"k"})
                assert (await conn.recv())[1] == wire.STATUS_OK
                assert service.fail_fast[-1] is expected, options
                conn.request(2, "put", {"key": b"k", "value": b"v"})
                assert (await conn.recv())[1] == wire.STATUS_OK
                assert service.started_fail_fast[-1] is expected, options
                assert service.fail_fast[-1] is expected, options  # its fallback task too
                await conn.close()
            assert leaderless.FAIL_FAST.get() is False  # set in the request's task only
            for bad in ("soon", 1, None):
                conn = await RawConn.open(port, hello=False)
                conn.send(wire.hello({"leaderless": bad}))
                rid, status, payload = await conn.recv()
                assert (rid, status) == (wire.CONNECTION_REQUEST_ID, wire.STATUS_ERROR)
                assert "leaderless" in payload["message"]
                with pytest.raises(EOFError):
                    await conn.recv()

    run(main())


class Holding(FastService):
    """Holds every write, as a member without a leader: a task-free put (key b"fast") never
    resolves, any other write waits in its task; records what was given up."""

    def __init__(self):
        super().__init__()
        self.given_up = []

    def start_write(self, op, body, done, fail_fast=False):
        if body.get("key") != b"fast":
            return None
        return super().start_write(op, dict(body, key=b"never"), done, fail_fast)

    async def call(self, op, body):
        try:
            await asyncio.sleep(TEST_TIMEOUT_S)
        except asyncio.CancelledError:
            self.given_up.append(body.get("key"))
            raise
        return await super().call(op, body)


def test_a_cancelled_request_is_given_up_by_the_server_too():
    """A client that gives up on a unary request with cancel=True (raftkv's gRPC workers,
    when their caller's RPC ends) sends a "cancel" frame: the member cancels the request's
    task or task-free write, which a member without a leader would otherwise hold and
    propose later. It is never answered; without cancel=True the request goes on."""
    from raftkv.client.connection import connect

    async def main():
        service = Holding()
        server, port = await _serve(service)
        async with server:
            conn = await connect("127.0.0.1", port, 5.0)
            body = {"value": b"v"}
            calls = [asyncio.ensure_future(conn.request("put", dict(body, key=key), None,
                                                        TEST_TIMEOUT_S, cancel=cancel))
                     for key, cancel in ((b"slow", True), (b"fast", True), (b"kept", False))]
            await asyncio.sleep(0.1)
            for call in calls:
                call.cancel()
            for _ in range(100):
                if service.given_up and service.cancelled:
                    break
                await asyncio.sleep(0.01)
            assert service.given_up == [b"slow"] and service.cancelled == [b"never"]
            assert (await conn.request("cancel", {"cancel_id": 999}, None, 5.0)) == \
                {"canceled": False}  # no such request in flight
            assert service.given_up == [b"slow"]  # b"kept" still runs on the server
            conn.close()

    run(main())


def test_raftkv_client_asks_to_be_refused_unless_told_to_wait_for_a_leader():
    """raftkv.AsyncClient's hello: by default its requests run with FAIL_FAST (it fails over
    by itself); wait_for_leader=True asks the member to hold them as etcd's clients' are."""
    async def main():
        service = LeaderlessProbe()
        server, port = await _serve(service)
        async with server:
            for wait, expected in ((False, True), (True, False)):
                async with AsyncClient([f"127.0.0.1:{port}"], timeout=5.0,
                                       wait_for_leader=wait) as c:
                    await c.get(b"k")
                assert service.fail_fast[-1] is expected, wait

    run(main())
