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
