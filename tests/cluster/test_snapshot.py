"""Acceptance 4: a follower that missed more entries than the leader keeps after compaction
catches up through a snapshot and then holds all the data."""
from __future__ import annotations

import time

import pytest

from raftkv.api import wire

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

SNAPSHOT_COUNT = 100
CATCHUP_ENTRIES = 50  # entries the leader keeps after compacting (--snapshot-catchup-entries)
SEQUENTIAL_PUTS = 400  # one Raft entry each: far more than SNAPSHOT_COUNT + CATCHUP_ENTRIES
BULK_KEYS = 3000  # put_many: few entries, but a state image of some size


def _all(client, prefix):
    return [(meta.key, value) for value, meta in client.get_prefix(prefix)]


def _leader_follower_client(h):
    """(leader, a follower, a client of the members other than that follower)."""
    leader = h.leader()
    follower = next(m for m in h.members if m is not leader)
    up = [m for m in h.members if m is not follower]
    return leader, follower, h.client(up, timeout=10.0)


def _wait_until(alone, prefix, done, what, timeout_s=20.0):
    """Poll alone's keys under prefix until done(rows); a just-restarted member may not know
    the leader yet, so errors are retried until the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if done(_all(alone, prefix)):
                return
        except (wire.RaftkvError, ConnectionError):
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_lagging_follower_catches_up_through_a_snapshot(make_cluster):
    h = make_cluster(3, extra_args=["--snapshot-count", str(SNAPSHOT_COUNT),
                                    "--snapshot-catchup-entries", str(CATCHUP_ENTRIES)])
    leader, follower, client = _leader_follower_client(h)
    client.put("/snap/first", "before-stop")
    assert h.stop_member(follower) == 0
    index_before = h.status(leader)["raftIndex"]
    for i in range(SEQUENTIAL_PUTS):
        client.put(f"/snap/seq/{i:04d}", f"v{i}")
    client.delete("/snap/first")
    client.put("/snap/overwritten", "old")
    client.put("/snap/overwritten", "new")
    res = client.put_many((f"/snap/bulk/{i:05d}", b"b" * 64 + str(i).encode())
                          for i in range(BULK_KEYS))
    assert res.failed == 0 and res.done == BULK_KEYS, res
    gap = h.status(leader)["raftIndex"] - index_before
    assert gap > SNAPSHOT_COUNT + CATCHUP_ENTRIES, f"only {gap} entries written"
    assert "installed a snapshot" not in h.log_text(follower)

    h.start_member(follower)
    h.wait_log(follower, "installed a snapshot", timeout_s=30.0)
    expected = _all(client, "/snap/")
    assert len(expected) == SEQUENTIAL_PUTS + 1 + BULK_KEYS
    alone = h.client([follower], timeout=5.0)
    _wait_until(alone, "/snap/", lambda rows: rows == expected,
                "the follower's data differs after the snapshot")
    assert alone.get("/snap/first") == (None, None)
    assert alone.get("/snap/overwritten")[0] == b"new"
    # It keeps replicating normally after the install, also as a serializable (local) read.
    client.put("/snap/after", "yes")
    deadline = time.monotonic() + 10.0
    while alone.get("/snap/after", serializable=True)[0] != b"yes":
        assert time.monotonic() < deadline, "no replication after the snapshot install"
        time.sleep(0.05)
    # Revisions agree: the snapshot carried the MVCC state, not just the latest values.
    meta_leader = client.get("/snap/overwritten")[1]
    meta_follower = alone.get("/snap/overwritten")[1]
    assert meta_leader == meta_follower
    # Every member restarts cleanly from a compacted log (snapshot point + later entries).
    h.restart_all()
    for m in h.members:
        assert _all(h.client([m], timeout=10.0), "/snap/") == _all(client, "/snap/")


def test_follower_a_little_behind_catches_up_from_the_log(make_cluster):
    """Fewer missed entries than --snapshot-catchup-entries: the leader still has them after
    its compactions, so the follower needs no snapshot."""
    catchup = 400
    h = make_cluster(3, extra_args=["--snapshot-count", str(SNAPSHOT_COUNT),
                                    "--snapshot-catchup-entries", str(catchup)])
    leader, follower, client = _leader_follower_client(h)
    for i in range(150):  # log compactions on the others before the follower stops
        client.put(f"/near/{i:04d}", "x")
    assert h.stop_member(follower) == 0
    index_before = h.status(leader)["raftIndex"]
    for i in range(150, 450):
        client.put(f"/near/{i:04d}", "y")
    gap = h.status(leader)["raftIndex"] - index_before
    assert SNAPSHOT_COUNT * 2 < gap < catchup, gap
    h.start_member(follower)
    alone = h.client([follower], timeout=10.0)
    expected = _all(client, "/near/")
    assert len(expected) == 450
    _wait_until(alone, "/near/", lambda rows: rows == expected, "the follower never caught up")
    assert "installed a snapshot" not in h.log_text(follower)


def test_the_in_memory_log_is_bounded_by_bytes_too(make_cluster, monkeypatch):
    """Bulk entries are large: the log is compacted once enough entry bytes are applied, even
    far below --snapshot-count entries, and a follower that missed them still catches up."""
    monkeypatch.setenv("RAFTKV_SNAPSHOT_POINT_BYTES", "100000")
    monkeypatch.setenv("RAFTKV_LOG_CATCHUP_BYTES", "200000")
    h = make_cluster(3)  # --snapshot-count stays at its default (100,000 entries)
    leader, follower, client = _leader_follower_client(h)
    assert h.stop_member(follower) == 0
    index_before = h.status(leader)["raftIndex"]
    # ~1.8 MB in 6 entries of 1,000 puts (points every entry, compaction 200 KB behind)
    res = client.put_many((f"/bytes/{i:05d}", b"x" * 300) for i in range(6000))
    assert res.failed == 0, res
    assert h.status(leader)["raftIndex"] - index_before < 100  # few, large entries
    h.wait_log(leader, "compacted the Raft log", timeout_s=10.0)
    h.start_member(follower)
    h.wait_log(follower, "installed a snapshot", timeout_s=30.0)
    alone = h.client([follower], timeout=5.0)
    _wait_until(alone, "/bytes/", lambda rows: len(rows) == 6000,
                "the follower did not catch up")
