"""The blocking Client (a loop in a thread) against a native server in another thread."""
from __future__ import annotations

import threading

import pytest

from raftkv.client.errors import LockTimeout


def test_kv_roundtrip(client):
    client.put("a", "1")
    value, meta = client.get("a")
    assert value == b"1"
    assert meta.version == 1
    assert [v for v, _ in client.get_prefix("a")] == [b"1"]
    t = client.transactions
    ok, _ = client.transaction([t.value("a") == b"1"], [t.put("a", "2")], [])
    assert ok
    assert client.delete("a") is True
    assert client.get("a") == (None, None)


def test_lease_and_lock(client):
    lease = client.lease(10)
    assert repr(lease) == f"Lease(id={lease.id:#x}, granted_ttl=10)"  # not the wrapper's
    assert repr(client).startswith("Client([") and "AsyncClient" not in repr(client)
    assert lease.refresh() == 10
    client.put("k", "v", lease=lease)
    assert lease.keys() == [b"k"]
    lease.revoke()
    with client.lock("l", ttl=5) as lock:
        assert lock.is_acquired()
        with pytest.raises(LockTimeout):
            client.lock("l", ttl=5).acquire(timeout=0.2)
    assert client.get_prefix("/locks/") == []


def test_watch_iterator_and_cancel_from_another_thread(client):
    events, cancel = client.watch("w")
    got = []

    def consume():
        for ev in events:
            got.append(ev)

    t = threading.Thread(target=consume)
    t.start()
    client.put("w", "1")
    client.put("w", "2")
    for _ in range(200):
        if len(got) == 2:
            break
        threading.Event().wait(0.01)
    cancel()
    t.join(5)
    assert not t.is_alive()
    assert [e.value for e in got] == [b"1", b"2"]


def test_put_many(client):
    res = client.put_many([(f"k{i}", "v") for i in range(500)])
    assert res.done == 500
    assert len(client.get_all()) == 500
