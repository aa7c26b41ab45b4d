"""AsyncClient against a native server over RichFakeService (port 0, loopback)."""
from __future__ import annotations

import asyncio
import socket

import pytest

from raftkv.api.native import start_native_server
from raftkv.client import (AsyncClient, ConnectionFailedError, ConnectionLost, DeleteEvent,
                           PutEvent)
from raftkv.client.errors import LockTimeout, RevisionCompactedError
from raftkv.client.types import ProgressNotify, prefix_range_end
from raftkv.errors import RaftkvError
from tests.unit.client.richfake import RichFakeService

TEST_TIMEOUT_S = 20.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


async def serve(service=None):
    service = service or RichFakeService()
    server, port = await start_native_server(service, "127.0.0.1", 0)
    return service, server, f"127.0.0.1:{port}"


def with_client(test):
    async def main():
        service, server, ep = await serve()
        async with server:
            async with AsyncClient([ep], timeout=3.0) as client:
                await test(client, service)

    run(main())


def test_put_get_delete_str_and_bytes():
    async def t(c, svc):
        assert await c.get("missing") == (None, None)
        await c.put("a", "é")
        await c.put(b"b", b"\xff\x00")
        value, meta = await c.get("a")
        assert value == "é".encode()
        assert (meta.key, meta.version) == (b"a", 1)
        resp = await c.put("a", "2", prev_kv=True)
        assert resp["prev_kv"]["value"] == "é".encode()
        assert (await c.get(b"b"))[0] == b"\xff\x00"
        assert await c.delete("a") is True
        assert await c.delete("a") is False
        resp = await c.delete("b", prev_kv=True, return_response=True)
        assert resp["prev_kvs"][0]["value"] == b"\xff\x00"

    with_client(t)


def test_prefix_range_and_all():
    async def t(c, svc):
        for k in ["p/1", "p/2", "p/3", "q/1"]:
            await c.put(k, k.upper())
        assert [m.key for _, m in await c.get_prefix("p/")] == [b"p/1", b"p/2", b"p/3"]
        assert [v for v, _ in await c.get_range("p/2", "q/2")] == [b"P/2", b"P/3", b"Q/1"]
        assert len(await c.get_all()) == 4
        resp = await c.get_response("p/", prefix=True, limit=2)
        assert (resp["count"], resp["more"], len(resp["kvs"])) == (3, True, 2)
        assert (await c.delete_prefix("p/"))["deleted"] == 3
        assert len(await c.get_all()) == 1

    with_client(t)


def test_prefix_range_end():
    assert prefix_range_end(b"a") == b"b"
    assert prefix_range_end(b"a\xff") == b"b"
    assert prefix_range_end(b"\xff\xff") == b"\0"
    assert prefix_range_end("") == b"\0"


def test_transaction_compare_helpers():
    async def t(c, svc):
        tx = c.transactions
        await c.put("k", "old")
        ok, resps = await c.transaction(
            compare=[tx.value("k") == b"old", tx.version("k") > 0, tx.create("k") != 0],
            success=[tx.put("k", "new"), tx.get("k")], failure=[tx.delete("k")])
        assert ok is True
        assert resps[1][0][0] == b"new"
        ok, _ = await c.transaction([tx.value("k") == b"old"], [tx.put("k", "x")],
                                    [tx.put("k", "fallback")])
        assert ok is False
        assert (await c.get("k"))[0] == b"fallback"
        assert await c.put_if_not_exists("k", "y") is False
        assert await c.put_if_not_exists("fresh", "y") is True
        assert (tx.mod("k") < 10).to_wire() == {"result": 2, "target": 2, "key": b"k",
                                                 "mod_revision": 10}
        assert (tx.lease("k") == 0).to_wire()["target"] == 4

    with_client(t)


def test_json_helpers():
    async def t(c, svc):
        await c.put_json("cfg", {"a": [1, 2]})
        assert await c.get_json("cfg") == {"a": [1, 2]}
        assert await c.get_json("nope", default={}) == {}

    with_client(t)


def test_lease_operations():
    async def t(c, svc):
        lease = await c.lease(30)
        assert lease.granted_ttl == 30
        await c.put("lk", "v", lease=lease)
        assert (await c.get("lk"))[1].lease_id == lease.id
        assert await lease.refresh() == 30
        assert await lease.remaining_ttl() == 30
        assert await lease.keys() == [b"lk"]
        assert await c.leases() == [lease.id]
        await lease.revoke()
        with pytest.raises(RaftkvError) as err:
            await lease.revoke()
        assert err.value.code == "LEASE_NOT_FOUND"
        with pytest.raises(RaftkvError):
            await c.put("x", "v", lease=424242)

    with_client(t)


def test_watch_events_and_cancel():
    async def t(c, svc):
        events, cancel = await c.watch_prefix("w/")
        await asyncio.sleep(0.05)
        await c.put("w/a", "1")
        await c.put("other", "1")
        await c.delete("w/a")
        first = await events.__anext__()
        second = await events.__anext__()
        assert isinstance(first, PutEvent)
        assert (first.key, first.value) == (b"w/a", b"1")
        assert isinstance(second, DeleteEvent)
        await cancel()
        assert [e async for e in events] == []
        await asyncio.sleep(0.05)
        assert svc._watchers == []

    with_client(t)


def test_a_closed_client_opens_no_connection_not_even_for_a_watch():
    async def t(c, svc):
        await c.put("k", "v")
        await c.close()
        for attempt in (c.get("k"), c.watch("k")):
            with pytest.raises(ConnectionLost, match="closed"):
                await attempt
        assert c._conn is None and svc._watchers == []

    with_client(t)


def test_put_many_with_progress():
    async def t(c, svc):
        seen = []
        items = ((f"bulk/{i:05d}", f"v{i}") for i in range(2000))
        result = await c.put_many(items, progress=lambda r: seen.append(r.done + r.failed),
                                  window=4, batch_max=100)
        assert (result.done, result.failed) == (2000, 0)
        assert seen[-1] == 2000
        assert len(seen) == 20
        assert len(await c.get_prefix("bulk/")) == 2000
        bad = await c.put_many([("ok", "1"), ("", "empty key")])
        assert (bad.done, bad.failed) == (1, 1)
        assert "key is not provided" in bad.errors[0]

    with_client(t)


def test_put_many_falls_back_to_batch_on_an_old_server(monkeypatch):
    async def unknown(self, body):
        raise RaftkvError("UNKNOWN_OP", "raftkv: unknown operation 'put_many'")

    monkeypatch.setattr("raftkv.api.native.NativeConnection._put_many", unknown)

    async def t(c, svc):
        result = await c.put_many([(f"old/{i}", "v") for i in range(300)] + [("", "x")],
                                  batch_max=100)
        assert (result.done, result.failed) == (300, 1)
        assert "key is not provided" in result.errors[0]
        assert len(await c.get_prefix("old/")) == 300

    with_client(t)


def test_lock_mutual_exclusion():
    async def t(c, svc):
        lock_a = c.lock("res", ttl=10)
        lock_b = c.lock("res", ttl=10)
        assert await lock_a.acquire() is True
        assert await lock_a.is_acquired() is True
        with pytest.raises(LockTimeout):
            await lock_b.acquire(timeout=0.2)
        waiter = asyncio.ensure_future(lock_b.acquire(timeout=5))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await lock_a.release()
        assert await waiter is True
        await lock_b.release()
        assert await c.get_prefix("/locks/") == []

    with_client(t)


def test_status_members_compact():
    async def t(c, svc):
        assert (await c.status())["version"]
        assert (await c.members())[0]["name"] == "m1"
        await c.compact(1)

    with_client(t)


def test_failover_from_a_closed_port():
    async def main():
        svc, server, ep = await serve()
        async with server:
            async with AsyncClient([f"127.0.0.1:{closed_port()}", ep], timeout=3.0) as c:
                await c.put("k", "v")
                assert (await c.get("k"))[0] == b"v"

    run(main())


def test_no_endpoint_reachable_fails_within_timeout():
    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with AsyncClient([f"127.0.0.1:{closed_port()}"], timeout=0.5) as c:
            with pytest.raises(ConnectionFailedError):
                await c.get("k")
        assert loop.time() - t0 < 2.0

    run(main())


class NotLeaderService(RichFakeService):
    """Refuses the first `n` writes with NOT_LEADER, as a follower would."""

    def __init__(self, n):
        super().__init__()
        self.refuse = n

    async def call(self, op, body):
        if op == "put" and self.refuse > 0:
            self.refuse -= 1
            if "request_id" in body:
                self.seen_request_ids.append((op, tuple(body["request_id"])))
            raise RaftkvError("NOT_LEADER")
        return await super().call(op, body)


def test_retry_on_not_leader_keeps_the_idempotency_id():
    async def main():
        follower = NotLeaderService(10 ** 6)
        leader = NotLeaderService(0)
        _, s1, ep1 = await serve(follower)
        _, s2, ep2 = await serve(leader)
        async with s1, s2:
            async with AsyncClient([ep1, ep2], timeout=3.0) as c:
                await c.put("k", "v")
                await c.put("k2", "v")
                assert (await c.get("k"))[0] == b"v"
        first = follower.seen_request_ids[0][1]
        assert leader.seen_request_ids[0] == ("put", first)
        assert leader.seen_request_ids[1][1][1] == first[1] + 1
        assert not any(op == "range" for op, _ in leader.seen_request_ids)

    run(main())


def test_reconnects_after_the_server_restarts():
    async def main():
        svc = RichFakeService()
        server, port = await start_native_server(svc, "127.0.0.1", 0)
        async with AsyncClient([f"127.0.0.1:{port}"], timeout=3.0) as c:
            await c.put("k", "v")
            server.close()
            await server.wait_closed()
            server, _ = await start_native_server(svc, "127.0.0.1", port)
            async with server:
                assert (await c.get("k"))[0] == b"v"

    run(main())


def test_non_retryable_error_is_raised_at_once():
    async def t(c, svc):
        with pytest.raises(RaftkvError) as err:
            await c.put("", "v")
        assert err.value.code == "EMPTY_KEY"
        with pytest.raises(RaftkvError) as err:
            await c.call("no_such_op", {})
        assert err.value.code == "UNKNOWN_OP"

    with_client(t)


def test_oversized_request_is_refused_locally():
    async def t(c, svc):
        with pytest.raises(RaftkvError) as err:
            await c.put("big", b"x" * (2 * 1024 * 1024))
        assert err.value.code == "REQUEST_TOO_LARGE"
        await c.put("small", "ok")  # the connection is still fine

    with_client(t)


class StallService(RichFakeService):
    """Never answers puts: a member that lost its quorum without saying so."""

    async def call(self, op, body):
        if op == "put":
            await asyncio.Event().wait()
        return await super().call(op, body)


def test_stalled_request_times_out():
    async def main():
        _, server, ep = await serve(StallService())
        async with server:
            async with AsyncClient([ep], timeout=0.3) as c:
                t0 = asyncio.get_running_loop().time()
                with pytest.raises(RaftkvError) as err:
                    await c.put("k", "v")
                assert err.value.code == "TIMEOUT"
                assert asyncio.get_running_loop().time() - t0 < 1.5
                assert (await c.get("k")) == (None, None)  # the connection is still usable

    run(main())


async def watch_resume_scenario(ssl=None, **client_kw):
    """A watch, its server closed and started again on the same port: the watch re-opens and
    delivers the next event. ssl: the server's SSLContext; client_kw: AsyncClient's TLS
    arguments (test_tls_client.py runs it over TLS)."""
    svc = RichFakeService()
    server, port = await start_native_server(svc, "127.0.0.1", 0, ssl=ssl)
    async with AsyncClient([f"127.0.0.1:{port}"], timeout=5.0, **client_kw) as c:
        events, cancel = await c.watch("w")
        await asyncio.sleep(0.05)
        await c.put("w", "1")
        assert (await events.__anext__()).value == b"1"
        server.close()
        await server.wait_closed()
        server, _ = await start_native_server(svc, "127.0.0.1", port, ssl=ssl)
        async with server:
            nxt = asyncio.ensure_future(events.__anext__())
            for _ in range(100):
                if svc._watchers:
                    break
                await asyncio.sleep(0.02)
            await c.put("w", "2")
            assert (await nxt).value == b"2"
            await cancel()


def test_watch_resumes_after_the_connection_is_lost():
    run(watch_resume_scenario())


class MemberService(RichFakeService):
    """A fake member that reports its own ID and the leader's in status (and headers)."""

    def __init__(self, member_id, leader_id):
        super().__init__()
        self.member_id, self.leader_id = member_id, leader_id
        self.puts = 0

    def _header(self):
        return dict(super()._header(), member_id=self.member_id)

    def _op_status(self, body):
        return dict(super()._op_status(body), leader=self.leader_id)

    async def call(self, op, body):
        self.puts += op == "put"
        return await super().call(op, body)


@pytest.mark.parametrize("prefer_leader", [True, False])
def test_writes_go_to_the_leader_endpoint_when_preferred(prefer_leader):
    async def main():
        follower, leader, other = MemberService(1, 2), MemberService(2, 2), MemberService(3, 2)
        servers = [await serve(svc) for svc in (follower, other, leader)]
        eps = [f"127.0.0.1:{closed_port()}"] + [ep for _, _, ep in servers]
        async with servers[0][1], servers[1][1], servers[2][1]:
            async with AsyncClient(eps, timeout=3.0, prefer_leader=prefer_leader) as c:
                for i in range(3):
                    await c.put(f"k{i}", "v")
        if prefer_leader:
            assert (follower.puts, other.puts, leader.puts) == (0, 0, 3)
        else:  # the first endpoint that answers
            assert (follower.puts, other.puts, leader.puts) == (3, 0, 0)

    run(main())


def test_no_leader_among_the_endpoints_keeps_the_first_that_answers():
    async def main():
        a, b = MemberService(1, 9), MemberService(2, 9)  # member 9 is not in the list
        (_, s1, ep1), (_, s2, ep2) = await serve(a), await serve(b)
        async with s1, s2:
            async with AsyncClient([ep1, ep2], timeout=3.0) as c:
                await c.put("k", "v")
        assert (a.puts, b.puts) == (1, 0)

    run(main())


class ElectingService(MemberService):
    """Knows no leader for its first `n` status requests (an election), then names one."""

    def __init__(self, member_id, leader_id, n):
        super().__init__(member_id, leader_id)
        self.unknown = n

    def _op_status(self, body):
        resp = super()._op_status(body)
        if self.unknown > 0:
            self.unknown -= 1
            resp["leader"] = 0
        return resp


def test_connecting_during_an_election_waits_for_the_new_leader():
    async def main():
        follower, leader = ElectingService(1, 2, 3), MemberService(2, 2)
        (_, s1, ep1), (_, s2, ep2) = await serve(follower), await serve(leader)
        async with s1, s2:
            async with AsyncClient([ep1, ep2], timeout=3.0) as c:
                await c.put("k", "v")
        assert (follower.puts, leader.puts) == (0, 1)
        assert follower.unknown == 0  # it asked until a leader was named

    run(main())


class TermService(MemberService):
    """A member whose view of the term and leader the test moves (shared `view` dict)."""

    def __init__(self, member_id, view):
        super().__init__(member_id, 0)
        self.view = view

    def _header(self):
        return dict(super()._header(), raft_term=self.view["term"])

    def _op_status(self, body):
        return dict(super()._op_status(body), leader=self.view["leader"])


def test_a_new_term_moves_later_requests_to_the_new_leader():
    async def main():
        view = {"term": 2, "leader": 1}
        a, b = TermService(1, view), TermService(2, view)
        (_, s1, ep1), (_, s2, ep2) = await serve(a), await serve(b)
        async with s1, s2:
            async with AsyncClient([ep1, ep2], timeout=3.0) as c:
                await c.put("k", "1")
                assert (a.puts, b.puts) == (1, 0)
                view.update(term=3, leader=2)  # member 2 won an election
                await c.put("k", "2")  # answered by 1 (with term 3): the client looks again
                for _ in range(100):
                    if c._recheck is None:
                        break
                    await asyncio.sleep(0.01)
                await c.put("k", "3")
                await c.put("k", "4")
        assert (a.puts, b.puts) == (2, 2)

    run(main())


class _CompactedService(RichFakeService):
    """Compacted up to revision 40: a watch from before it is canceled, as the member does."""

    async def watch(self, body):
        start = body.get("start_revision", 0)
        if 0 < start < 40:
            yield {"header": self._header(), "events": [], "compact_revision": 40,
                   "canceled": True}
            return
        async for resp in super().watch(body):
            yield resp


def test_a_watch_from_a_compacted_revision_raises_instead_of_ending():
    async def main():
        service, server, ep = await serve(_CompactedService())
        async with server:
            async with AsyncClient([ep], timeout=3.0) as c:
                events, cancel = await c.watch_prefix("w/", start_revision=5)
                with pytest.raises(RevisionCompactedError) as exc:
                    await events.__anext__()
                assert exc.value.compacted_revision == 40
                assert exc.value.code == "COMPACTED" and isinstance(exc.value, RaftkvError)
                assert [e async for e in events] == []  # canceled: the iterator is done
                events, cancel = await c.watch_prefix("w/", start_revision=40)
                await asyncio.sleep(0.05)
                await c.put("w/a", "1")
                assert (await events.__anext__()).key == b"w/a"
                await cancel()

    run(main())


class _ProgressService(RichFakeService):
    """Sends one progress notification (no events, revision 7) after "created" when the watch
    asks for progress_notify, as the member does when its interval passes idle."""

    async def watch(self, body):
        self.bodies = getattr(self, "bodies", []) + [dict(body)]
        async for resp in super().watch(body):
            yield resp
            if resp.get("created") and body.get("progress_notify"):
                yield {"header": dict(self._header(), revision=7), "events": []}


def test_progress_notifications_are_yielded_and_move_the_resume_point():
    async def main():
        service, server, ep = await serve(_ProgressService())
        async with server:
            async with AsyncClient([ep], timeout=3.0) as c:
                events, cancel = await c.watch("p", progress_notify=True)
                assert await events.__anext__() == ProgressNotify(7)
                assert events._next_revision == 8  # a bookmark: resume after it
                await c.put("p", "1")
                assert (await events.__anext__()).value == b"1"
                await cancel()
                plain, cancel = await c.watch("q")
                await c.put("q", "1")
                assert (await plain.__anext__()).value == b"1"  # no progress asked, none sent
                await cancel()
        assert service.bodies[0]["progress_notify"] is True
        assert "progress_notify" not in service.bodies[1]

    run(main())
