"""python-etcd3's names on the blocking Client against a real 3-member cluster: replace,
watch_once, watch callbacks and cancel_watch, get_lease_info, member_update and hash; the
watching client talks to a follower, the writing one to the leader. What etcd 3.4.23 answers
for the same (a value compare on a missing key fails, a gone lease has TTL -1 and
grantedTTL 0, MemberUpdate of an unknown ID is "member not found") was checked by hand with
etcdctl and gRPC; tests/unit/client/test_etcd3_compat.py covers the client side in detail."""
from __future__ import annotations

import threading

import pytest

from raftkv.client import RevisionCompactedError, WatchTimedOut
from raftkv.errors import RaftkvError

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

BOUND_S = 10.0


def _wait(pred, what):
    tick = threading.Event()
    for _ in range(int(BOUND_S / 0.01)):
        if pred():
            return
        tick.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _kv_and_watches(watcher, writer):
    writer.put("/c/k", "old")
    assert watcher.replace("/c/k", "old", "new") is True  # through the follower
    assert watcher.replace("/c/k", "old", "again") is False
    assert writer.get("/c/k")[0] == b"new"
    assert watcher.replace("/c/missing", "", "x") is False
    assert writer.get("/c/missing") == (None, None)

    threading.Timer(0.2, writer.put, ("/c/w", "1")).start()
    first = watcher.watch_once("/c/w", timeout=BOUND_S)
    assert (first.key, first.value) == (b"/c/w", b"1")
    writer.put("/c/w", "2")
    old = watcher.watch_once("/c/w", timeout=BOUND_S, start_revision=first.mod_revision)
    assert (old.value, old.mod_revision) == (b"1", first.mod_revision)  # from history
    with pytest.raises(WatchTimedOut):
        watcher.watch_prefix_once("/c/quiet/", timeout=0.3)


def _callbacks(watcher, writer):
    got = []

    def callback(resp):
        value = watcher.get(resp.events[0].key)[0]  # a blocking call from the callback
        got.append((threading.current_thread().name, [ev.key for ev in resp.events], value))

    watch_id = watcher.add_watch_prefix_callback("/c/cb/", callback)
    writer.put("/c/cb/a", "1")
    writer.put("/c/other", "x")
    writer.put("/c/cb/b", "2")
    _wait(lambda: len(got) == 2, "two callbacks")
    assert got == [("raftkv-watch-callbacks", [b"/c/cb/a"], b"1"),
                   ("raftkv-watch-callbacks", [b"/c/cb/b"], b"2")]
    assert watcher.cancel_watch(watch_id) is True
    writer.put("/c/cb/c", "3")
    threading.Event().wait(0.2)
    assert len(got) == 2

    errors = []
    rev = writer.get("/c/cb/a")[1].mod_revision
    writer.compact(writer.get("/c/cb/c")[1].mod_revision)
    # A linearizable read through the follower: it has applied the compaction once this
    # returns (the leader answered the compact; the follower applies it a moment later, and a
    # watch from before it could still deliver the old events there).
    watcher.get("/c/cb/c")
    compacted_id = watcher.add_watch_callback("/c/cb/a", errors.append, start_revision=rev)
    _wait(lambda: errors, "the compaction error")
    assert isinstance(errors[0], RevisionCompactedError)
    assert watcher.cancel_watch(compacted_id) is False  # the watch ended with the error


def _leases_members_hash(h, watcher, writer):
    lease = writer.lease(30)
    assert lease.ttl == lease.granted_ttl == 30
    writer.put("/c/leased", "v", lease=lease)
    info = watcher.get_lease_info(lease.id)
    assert info["ID"] == lease.id and info["grantedTTL"] == 30
    assert 0 < info["TTL"] <= 30
    assert info["keys"] == [b"/c/leased"]
    lease.revoke()
    info = watcher.get_lease_info(lease.id)
    assert (info["TTL"], info["grantedTTL"], info.get("keys", [])) == (-1, 0, [])

    members = writer.members()
    target = next(m for m in members if m["name"] == h.members[1].name)
    resp = watcher.member_update(target["ID"], target["peerURLs"])
    assert {m["ID"]: m["peerURLs"] for m in resp["members"]} == \
        {m["ID"]: m["peerURLs"] for m in members}
    with pytest.raises(RaftkvError) as err:
        watcher.member_update(0x1234, ["http://127.0.0.1:1"])
    assert err.value.code == "MEMBER_NOT_FOUND"

    before = writer.hash()
    assert isinstance(before, int)
    writer.put("/c/hash", "changes it")
    assert writer.hash() != before


def test_python_etcd3_names_on_a_real_cluster(cluster3):
    h = cluster3
    leader = h.leader()
    follower = next(m for m in h.members if m is not leader)
    watcher = h.client([follower], timeout=BOUND_S)
    writer = h.client([leader], timeout=BOUND_S)
    _kv_and_watches(watcher, writer)
    _callbacks(watcher, writer)
    _leases_members_hash(h, watcher, writer)
