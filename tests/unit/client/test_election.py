"""Election (clientv3/concurrency's), Session and Lock's etcd-compatible keys, against the
native server over RichFakeService (the real store: tests/etcdctl/test_raftkvctl_conformance.py
runs raftkvctl elect and lock against etcdctl on etcd)."""
from __future__ import annotations

import asyncio

import pytest

from raftkv.client import Client, ElectionNotLeader, LockTimeout, Session
from tests.unit.client.richfake import RichFakeService, ServerThread
from tests.unit.client.test_async_client import with_client

BOUND_S = 10.0  # how long a step may take before the test fails (never reached when right)


def _value(resp):
    return resp["kvs"][0]["value"]


def test_campaign_proclaim_resign_in_create_order():
    async def t(c, svc):
        e1, e2 = c.election("el", ttl=30), c.election("el", ttl=30)
        assert await c.election("el").leader() is None
        assert await e1.campaign("p1") is True
        assert e1.key == b"el/%x" % e1.lease.id  # etcd's key: NAME/<lease id in hex>
        assert _value(await e2.leader()) == b"p1"
        with pytest.raises(LockTimeout):  # e1 leads: e2 waits, and withdraws on timeout
            await e2.campaign("p2", timeout=0.2)
        assert e2.key is None and len(await c.get_prefix("el/")) == 1
        waiter = asyncio.ensure_future(e2.campaign("p2"))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        await e1.proclaim("p1b")
        assert _value(await e2.leader()) == b"p1b"
        assert await e1.resign() is True
        assert await asyncio.wait_for(waiter, BOUND_S) is True
        assert _value(await e1.leader()) == b"p2"
        with pytest.raises(ElectionNotLeader):
            await e1.proclaim("again")
        assert await e1.resign() is False
        await e2.resign()
        assert await c.get_prefix("el/") == [] and await c.leases() == []

    with_client(t)


def test_campaign_again_on_the_same_lease_keeps_its_place_and_proclaims():
    async def t(c, svc):
        lease = await c.lease(30)
        e = c.election("same", lease=lease)
        await e.campaign("a")
        revision = e.revision
        again = c.election("same", lease=lease)
        await again.campaign("b")
        assert (again.key, again.revision) == (e.key, revision)
        assert _value(await e.leader()) == b"b"
        await again.resign()
        assert await c.leases() == [lease.id]  # a lease that was given is not revoked

    with_client(t)


def test_observe_yields_each_leader_and_value():
    async def t(c, svc):
        seen = []

        async def observe():
            async for resp in c.election("ob").observe():
                seen.append(_value(resp))
                if len(seen) == 3:
                    return

        task = asyncio.ensure_future(observe())
        await asyncio.sleep(0.1)  # no leader yet: observe waits for the first key
        e1, e2 = c.election("ob"), c.election("ob")
        await e1.campaign("p1")
        waiter = asyncio.ensure_future(e2.campaign("p2"))
        await asyncio.sleep(0.1)
        await e1.proclaim("p1b")
        await asyncio.sleep(0.1)
        await e1.resign()
        await asyncio.wait_for(waiter, BOUND_S)
        await asyncio.wait_for(task, BOUND_S)
        assert seen == [b"p1", b"p1b", b"p2"]
        await e2.resign()

    with_client(t)


def test_session_keeps_its_lease_alive_and_revokes_it_on_close():
    async def t(c, svc):
        async with Session(c, ttl=1) as s:
            lock = c.lock("sl", prefix=b"", lease=s.lease)
            await lock.acquire()
            assert lock.key == b"sl/%x" % s.lease.id  # etcdctl lock's key
            assert lock.header_revision >= lock.revision > 0
            await asyncio.sleep(0.6)  # a keep-alive went out (every 0.5 s at least)
            assert any(op == "lease_keepalive" for op, _ in svc.calls)
            await lock.release()
            assert await c.leases() == [s.lease.id]  # the session's lease stays
            assert not s.done.is_set()
        assert await c.leases() == [] and s.done.is_set() and not s.expired
        s2 = await c.session(30).start()
        await c.revoke_lease(s2.lease.id)  # lost: done is set, close does not revoke
        await asyncio.wait_for(s2.done.wait(), BOUND_S)
        assert s2.expired
        await s2.close()

    with_client(t)


def test_blocking_client_election():
    srv = ServerThread(RichFakeService())
    try:
        with Client([srv.endpoint], timeout=3.0) as c:
            e = c.election("be", ttl=30)
            assert e.campaign("v") is True
            resp = next(iter(c.election("be").observe()))
            assert _value(resp) == b"v"
            assert e.resign() is True
    finally:
        srv.stop()
