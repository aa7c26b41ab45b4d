"""Disaster recovery with --force-new-cluster (etcd 3.4's flag), on real member processes: a
3-member cluster loses two members for good (SIGKILL); the survivor, restarted with the flag,
keeps every acknowledged key and its lease, leads a 1-member cluster that serves reads and
writes, and says so in a warning; an old member started again on its old data is refused and
disrupts nothing; restarts without the flag and again with it change nothing; members added
back with `member add` and empty data dirs catch up to a 3-member cluster; writes the old
leader could never commit are gone for good."""
from __future__ import annotations

import os
import time

import pytest

from raftkv.api import wire
from raftkv.cli.local_cluster import Member, free_ports

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

KEYS = 40
FORCED = "--force-new-cluster: forcing a new 1-member cluster"
CATCH_UP_S = 30.0


def _wait(what, fn, timeout_s=CATCH_UP_S):
    """Poll fn() until it returns a true value (returned); errors count as not yet."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            got = fn()
            if got:
                return got
            last = got
        except (wire.RaftkvError, ConnectionError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s}s (last: {last!r})")


def _data(client, prefix="/dr/"):
    return [(meta.key, value) for value, meta in client.get_prefix(prefix)]


def _disaster(h):
    """Write KEYS keys and one leased key, lose the two members other than a follower (the
    survivor, which applied every acknowledged write), and restart the survivor with
    --force-new-cluster. Returns (survivor, the lost members, data written, lease id)."""
    client = h.client(timeout=10.0)
    for i in range(KEYS):
        client.put(f"/dr/{i:03d}", f"v{i}")
    lease = client.lease(600)
    client.put("/dr/leased", "l", lease=lease.id)
    expected = _data(client)
    leader = h.leader()
    survivor = next(m for m in h.members if m is not leader)
    alone = h.client([survivor], timeout=5.0)
    # A serializable read sees what the member applied (durably): the survivor holds every
    # acknowledged write, as a member that kept up with its leader does.
    _wait("the survivor to apply every write",
          lambda: [(meta.key, v) for v, meta in alone.get_prefix("/dr/", serializable=True)]
          == expected)
    lost = [m for m in h.members if m is not survivor]
    for m in lost:
        h.kill(m)  # SIGKILL by PID: these members are gone for good
    assert h.stop_member(survivor) == 0
    h.cluster.member_args[survivor.name] = ["--force-new-cluster"]
    h.start_member(survivor)
    return survivor, lost, expected, lease.id


def _check_one_member_cluster(h, survivor, expected, lease_id):
    assert h.leader(among=[survivor], timeout_s=CATCH_UP_S) is survivor
    st = h.status(survivor)
    assert (st["members"], st["quorum"], st["role"]) == (1, 1, "leader")
    c = h.client([survivor], timeout=5.0)
    assert _data(c) == expected
    assert lease_id in c.leases()
    members = c.members()
    assert [m["ID"] for m in members] == [st["header"]["member_id"]]
    assert members[0]["name"] == survivor.name
    return c


def test_force_new_cluster_survivor_serves_alone_and_restarts(make_cluster):
    h = make_cluster(3)
    survivor, lost, expected, lease_id = _disaster(h)
    cluster_id = h.status(survivor)["header"]["cluster_id"]
    log = h.log_text(survivor)
    line = next(x for x in log.splitlines() if FORCED in x)
    assert "WARNING" in line and "are removed" in line, line
    c = _check_one_member_cluster(h, survivor, expected, lease_id)
    assert h.status(survivor)["header"]["cluster_id"] == cluster_id  # kept, as etcd does
    c.put("/dr/after", "a")
    expected = _data(c)
    assert len(expected) == KEYS + 2

    # An old member started again on its old data is refused and changes nothing.
    old = lost[0]
    h.cluster.start_member(old)
    h.wait_log(survivor, "was removed from the cluster")
    term = h.status(survivor)["raftTerm"]
    c.put("/dr/with-old-member-up", "o")
    time.sleep(1.5)  # three election timeouts of the old member
    st = h.status(survivor)
    assert (st["role"], st["members"], st["raftTerm"]) == ("leader", 1, term)
    h.kill(old)
    expected = _data(c)

    # Without the flag: the same 1-member cluster and data.
    assert h.stop_member(survivor) == 0
    h.cluster.member_args[survivor.name] = []
    h.start_member(survivor)
    c = _check_one_member_cluster(h, survivor, expected, lease_id)
    assert _data(c) == expected
    c.put("/dr/after-plain-restart", "p")
    expected = _data(c)

    # With the flag again: harmless.
    assert h.stop_member(survivor) == 0
    h.cluster.member_args[survivor.name] = ["--force-new-cluster"]
    h.start_member(survivor)
    c = _check_one_member_cluster(h, survivor, expected, lease_id)
    assert _data(c) == expected
    c.put("/dr/after-second-force", "s")
    assert c.get("/dr/after-second-force")[0] == b"s"
    assert "nothing to rewrite" in h.log_text(survivor)
    assert "Traceback" not in h.log_text(survivor)


def _new_member(h, name):
    client, peer, native = free_ports(3)
    root = h.cluster.data_root
    m = Member(name, client, peer, native, os.path.join(root, f"{name}.raftkv"),
               os.path.join(root, f"{name}.log"))
    h.cluster.members.append(m)  # stopped by PID at teardown with the others
    return m


# compacted: the survivor's log starts after a compaction point, so the members added back
# catch up from a snapshot of the forced leader's store.
@pytest.mark.parametrize("log", ["whole", "compacted"])
def test_members_added_back_after_force_new_cluster(make_cluster, log):
    extra = ["--snapshot-count", "20", "--snapshot-catchup-entries", "5"] \
        if log == "compacted" else []
    h = make_cluster(3, extra_args=extra)
    survivor, _, expected, lease_id = _disaster(h)
    if log == "compacted":
        h.wait_log(survivor, "compacted the Raft log up to index")
    c = _check_one_member_cluster(h, survivor, expected, lease_id)
    running = [survivor]
    for k, name in enumerate(("m4", "m5"), 2):
        m = _new_member(h, name)
        # --strict-reconfig-check (on, as in etcd): the second add waits until the first new
        # member has published its name and the leader has been connected to it for 5 s.
        resp = _wait(f"{name} to be added", lambda: c.call("member_add",
                                                            {"peerURLs": [m.peer_url]}))
        assert resp["member"]["peerURLs"] == [m.peer_url]
        running.append(m)
        # etcd's rule for a joining member: --initial-cluster lists the current members
        h.cluster.member_args[name] = [
            "--initial-cluster", ",".join(f"{x.name}={x.peer_url}" for x in running)]
        h.start_member(m, state="existing")
        mine = h.client([m], timeout=5.0)
        _wait(f"{name} to catch up", lambda: _data(mine) == expected)
        st = _wait(f"{name} to count {k} voters",
                   lambda: (lambda s: s if s["members"] == k else None)(h.status(m)))
        assert st["leader"]
    assert h.status(survivor)["members"] == 3
    if log == "compacted":
        assert "installed a snapshot" in h.log_text(running[1])
    assert len(c.members()) == 3
    c.put("/dr/three-again", "3")
    for m in running:
        alone = h.client([m], timeout=5.0)
        _wait(f"{m.name} to see the new write", lambda: alone.get("/dr/three-again")[0] == b"3")
        assert lease_id in alone.leases()
    # The grown cluster survives the loss of one member again.
    h.kill(running[1])
    c.put("/dr/two-of-three", "2")
    assert c.get("/dr/two-of-three")[0] == b"2"


def test_writes_the_survivor_holds_are_kept_for_good(make_cluster):
    """The leader loses both followers, then takes writes it can never commit (the clients
    time out: their outcome is unknown). Forced, it keeps its whole log: those writes become
    committed, each once (a client's retries carry one idempotency id), and they stay after a
    restart without the flag. (Keeping every entry is what saves a write a quorum did
    acknowledge when the survivor never heard its commit index: forcenew.py.)"""
    h = make_cluster(3)
    client = h.client(timeout=10.0)
    client.put("/dr/kept", "k")
    leader = h.leader()
    for m in h.members:
        if m is not leader:
            h.kill(m)
    doomed = h.client([leader], timeout=1.0)
    for i in range(3):
        with pytest.raises((wire.RaftkvError, ConnectionError, TimeoutError)):
            doomed.put(f"/dr/unknown-{i}", "x")
    assert h.stop_member(leader) == 0
    h.cluster.member_args[leader.name] = ["--force-new-cluster"]
    h.start_member(leader)
    line = next(x for x in h.log_text(leader).splitlines() if FORCED in x)
    assert "whole log is kept" in line and "(0 entries it had not seen" not in line, line
    assert h.leader(among=[leader], timeout_s=CATCH_UP_S) is leader
    c = h.client([leader], timeout=5.0)
    # The first put went into the leader's log before it stepped down (check-quorum, one
    # election timeout after losing its followers); later ones may have been refused.
    want = [meta.key for _, meta in c.get_prefix("/dr/")]
    assert want[:2] == [b"/dr/kept", b"/dr/unknown-0"], want
    assert set(want) <= {b"/dr/kept"} | {b"/dr/unknown-%d" % i for i in range(3)}
    assert all(meta.version == 1 for _, meta in c.get_prefix("/dr/unknown-"))
    c.put("/dr/new", "n")
    assert h.stop_member(leader) == 0
    h.cluster.member_args[leader.name] = []
    h.start_member(leader)
    assert h.leader(among=[leader], timeout_s=CATCH_UP_S) is leader
    assert [meta.key for _, meta in c.get_prefix("/dr/")] == want[:1] + [b"/dr/new"] + want[1:]
