"""A native watch returns only once its member has registered the watcher (the "created"
item, etcd's created response), so a write made after watch() returns is always seen, even
when it goes through another member on another connection."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

ROUNDS = 150


def test_a_write_after_watch_returns_is_seen(shared_cluster3):
    h = shared_cluster3
    leader = h.leader()
    follower = next(m for m in h.members if m is not leader)
    watcher = h.client([follower], timeout=10.0)
    writer = h.client([leader], timeout=10.0)
    for i in range(ROUNDS):
        key = f"/created/{i:04d}"
        events, cancel = watcher.watch(key)
        writer.put(key, "v")  # another member, another connection
        event = next(iter(events))
        assert (event.key, event.value) == (key.encode(), b"v"), i
        cancel()


def test_a_watch_from_now_misses_writes_acknowledged_before_it(shared_cluster3):
    """The other side, as etcd's: a watch with no start revision begins after every write its
    member acknowledged before the watch was made (the member's store commits its applies
    in lingering rounds: the watch waits for the round, or it would begin one revision early
    and deliver the write made just before it)."""
    h = shared_cluster3
    leader = h.leader()
    c = h.client([leader], timeout=10.0)
    for i in range(ROUNDS // 3):
        key = f"/from-now/{i:04d}"
        c.put(key, "before")
        events, cancel = c.watch(key)
        c.put(key, "after")
        event = next(iter(events))
        assert (event.key, event.value) == (key.encode(), b"after"), i
        cancel()
