"""The python-etcd3 names the client adds (replace, watch_once, watch callbacks and
cancel_watch, get_lease_info, member_update, hash, Lease.ttl, Lock.refresh's error), on
AsyncClient and through the blocking Client, against the native server over RichFakeService
(the real store: tests/cluster/test_etcd3_compat.py)."""
from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from raftkv.client import (
    Client,
    PutEvent,
    RevisionCompactedError,
    WatchResponse,
    WatchTimedOut,
)
from raftkv.client.types import ProgressNotify
from raftkv.errors import RaftkvError
from tests.unit.client.test_async_client import with_client

BOUND_S = 10.0  # how long a step may take before the test fails (never reached when right)


async def _until(pred):
    deadline = asyncio.get_running_loop().time() + BOUND_S
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_replace_is_a_compare_and_swap():
    async def t(c, svc):
        await c.put("k", "old")
        assert await c.replace("k", "old", "new") is True
        assert (await c.get("k"))[0] == b"new"
        assert await c.replace("k", b"old", b"other") is False
        assert (await c.get("k"))[0] == b"new"
        assert await c.replace("missing", b"", b"x") is False  # etcd: no key, no match
        assert (await c.get("missing")) == (None, None)

    with_client(t)


def test_watch_once_returns_the_first_event_and_cancels():
    async def t(c, svc):
        waiter = asyncio.ensure_future(c.watch_once("w", timeout=BOUND_S))
        await _until(lambda: svc._watchers)
        await c.put("w", "1")
        await c.put("w", "2")
        ev = await waiter
        assert isinstance(ev, PutEvent)
        assert (ev.key, ev.value) == (b"w", b"1")
        await _until(lambda: not svc._watchers)  # cancelled at the member too

        waiter = asyncio.ensure_future(c.watch_prefix_once("p/", timeout=BOUND_S))
        await _until(lambda: svc._watchers)
        await c.put("other", "x")
        await c.delete("w")
        await c.put("p/a", "1")
        assert (await waiter).key == b"p/a"

        with pytest.raises(WatchTimedOut):
            await c.watch_once("quiet", timeout=0.1)
        with pytest.raises(TimeoutError):  # WatchTimedOut is a TimeoutError
            await c.watch_prefix_once("quiet/", timeout=0.1)
        await _until(lambda: not svc._watchers)

    with_client(t)


def test_watch_once_passes_watch_arguments():
    async def t(c, svc):
        svc.progress_interval = 0.05  # the fake's --experimental-watch-progress-notify-interval
        item = await c.watch_once("quiet", timeout=BOUND_S, progress_notify=True)
        assert item == ProgressNotify(svc.revision)  # the first item, as documented
        await _until(lambda: not svc._watchers)

    with_client(t)


def test_watch_callbacks_get_responses_in_order_until_cancelled(caplog):
    async def t(c, svc):
        plain, later = [], []

        def on_plain(resp):
            plain.append(resp)
            if len(plain) == 1:
                raise ValueError("a faulty callback")  # logged; the watch goes on

        async def on_async(resp):
            await asyncio.sleep(0)
            later.append(resp)

        id1 = await c.add_watch_callback("cb", on_plain)
        id2 = await c.add_watch_prefix_callback("cb", on_async)
        assert id1 != id2
        await c.put("cb", "1")
        await c.put("cb2", "2")
        await c.put("cb", "3")
        await _until(lambda: len(plain) == 2 and len(later) == 3)
        assert all(isinstance(r, WatchResponse) for r in plain + later)
        assert [ev.value for r in plain for ev in r.events] == [b"1", b"3"]
        assert [ev.key for r in later for ev in r.events] == [b"cb", b"cb2", b"cb"]
        assert later[0].header["revision"] == later[0].events[0].mod_revision
        assert "raftkv watch callback failed" in caplog.text

        assert await c.cancel_watch(id1) is True
        assert await c.cancel_watch(id1) is False  # already gone: a no-op
        await c.put("cb", "4")
        await _until(lambda: len(later) == 4)
        assert len(plain) == 2  # nothing after cancel_watch returned
        assert await c.cancel_watch(id2) is True
        await _until(lambda: not svc._watchers)
        assert await c.cancel_watch(12345) is False

    with caplog.at_level(logging.ERROR, logger="raftkv.client.watch"):
        with_client(t)


def test_an_error_ending_a_callback_watch_is_its_last_call():
    async def t(c, svc):
        got = []
        svc.compacted = 5  # a watch from below revision 5 is canceled, as etcd's
        watch_id = await c.add_watch_callback("k", got.append, start_revision=2)
        await _until(lambda: got)
        assert len(got) == 1
        assert isinstance(got[0], RevisionCompactedError)
        assert got[0].compacted_revision == 5
        await _until(lambda: not c._callback_watches)
        assert await c.cancel_watch(watch_id) is False

    with_client(t)


def test_a_callback_may_cancel_its_own_watch():
    async def t(c, svc):
        got, ids = [], []

        async def once(resp):
            got.append(resp)
            await c.cancel_watch(ids[0])

        ids.append(await c.add_watch_callback("self", once))
        await c.put("self", "1")
        await _until(lambda: not svc._watchers)
        await c.put("self", "2")
        await asyncio.sleep(0.05)
        assert len(got) == 1

    with_client(t)


def test_lease_info_and_python_etcd3_lease_names():
    async def t(c, svc):
        lease = await c.lease(30)
        assert lease.ttl == lease.granted_ttl == 30
        await c.put("lk", "v", lease=lease)
        info = await c.get_lease_info(lease.id)
        assert (info["ID"], info["TTL"], info["grantedTTL"]) == (lease.id, 30, 30)
        assert info["keys"] == [b"lk"]
        assert "header" in info
        await lease.revoke()
        info = await c.get_lease_info(lease.id)
        assert (info["TTL"], info["grantedTTL"]) == (-1, 0)  # as etcd answers a gone lease

    with_client(t)


def test_member_update_hash_and_lock_refresh_when_not_held():
    async def t(c, svc):
        resp = await c.member_update(1, "http://127.0.0.1:2390")
        assert resp["members"][0]["peerURLs"] == ["http://127.0.0.1:2390"]
        assert svc.calls[-1] == ("member_update", {"ID": 1,
                                                   "peerURLs": ["http://127.0.0.1:2390"]})
        with pytest.raises(RaftkvError) as err:
            await c.member_update(7, ["http://127.0.0.1:2390"])
        assert err.value.code == "MEMBER_NOT_FOUND"
        assert await c.hash() == 3125550909
        lock = c.lock("l", ttl=5)
        with pytest.raises(ValueError):
            await lock.refresh()
        async with lock:
            assert await lock.refresh() == 5

    with_client(t)


def _wait(pred):
    done = threading.Event()
    for _ in range(int(BOUND_S / 0.01)):
        if pred():
            return
        done.wait(0.01)
    raise AssertionError("timed out")


def test_blocking_callbacks_run_on_their_own_thread_and_may_call_the_client(client):
    seen = []
    ids = []

    def callback(resp):
        # A blocking call from the callback: on the loop's thread this could never return.
        value, _ = client.get("bc")
        seen.append((threading.current_thread().name, resp.events[0].value, value))
        if len(seen) == 2:
            assert client.cancel_watch(ids[0]) is True  # from inside its own callback

    ids.append(client.add_watch_callback("bc", callback))
    client.put("bc", "1")
    _wait(lambda: len(seen) == 1)
    client.put("bc", "2")
    _wait(lambda: len(seen) == 2)
    client.put("bc", "3")
    threading.Event().wait(0.05)
    assert seen == [("raftkv-watch-callbacks", b"1", b"1"),
                    ("raftkv-watch-callbacks", b"2", b"2")]
    assert client.cancel_watch(ids[0]) is False


def test_blocking_cancel_watch_waits_for_a_running_callback(client):
    entered, release, finished = threading.Event(), threading.Event(), []

    def slow(resp):
        entered.set()
        release.wait(BOUND_S)
        finished.append(resp)

    watch_id = client.add_watch_prefix_callback("slow/", slow)
    client.put("slow/a", "1")
    assert entered.wait(BOUND_S)
    canceller = threading.Thread(target=client.cancel_watch, args=(watch_id,))
    canceller.start()
    canceller.join(0.1)
    assert canceller.is_alive()  # waits for the callback that is running
    client.put("slow/a", "2")
    release.set()
    canceller.join(BOUND_S)
    assert not canceller.is_alive()
    threading.Event().wait(0.05)
    assert [r.events[0].value for r in finished] == [b"1"]


def test_blocking_watch_once_replace_lease_info_and_responses(client):
    client.put("k", "old")
    assert client.replace("k", "old", "new") is True
    assert client.replace("k", "old", "x") is False
    with pytest.raises(WatchTimedOut):
        client.watch_once("k", timeout=0.1)
    threading.Timer(0.1, client.put, ("k", "later")).start()
    assert client.watch_once("k", timeout=BOUND_S).value == b"later"

    lease = client.lease(20)
    assert lease.ttl == 20
    assert client.get_lease_info(lease.id)["grantedTTL"] == 20

    events, cancel = client.watch("r")
    responses = events.responses()
    client.put("r", "1")
    resp = next(responses)
    assert isinstance(resp, WatchResponse)
    assert [ev.value for ev in resp.events] == [b"1"]
    responses.cancel()
    assert list(responses) == []


def test_blocking_close_with_a_callback_watch_still_live(server):
    c = Client([server.endpoint], timeout=3.0)
    got = []
    c.add_watch_callback("z", got.append)
    c.put("z", "1")
    _wait(lambda: got)
    c.close()
    thread = c._callbacks._thread
    assert thread is not None and not thread.is_alive()
