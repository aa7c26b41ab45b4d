"""A network partition with the minority still running (the partition failpoint,
RAFTKV_FAILPOINT_DIR; raftkv/server/peer.py): the leader cut off from both followers keeps
its clients, but it must neither acknowledge a write nor answer a linearizable read, while the
majority elects a new leader and keeps working. After the heal the old leader follows and holds
the majority's data, and its unacknowledged write is gone."""
from __future__ import annotations

import time

import pytest

from raftkv.api import wire
from raftkv.client import Client
from tests.cluster.histories import isolation, write_partition

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

NEW_LEADER_BOUND_S = 10.0


def test_partitioned_leader_refuses_and_majority_goes_on(make_cluster, tmp_path, monkeypatch):
    fp_dir = tmp_path / "failpoints"
    fp_dir.mkdir()
    monkeypatch.setenv("RAFTKV_FAILPOINT_DIR", str(fp_dir))
    h = make_cluster(3)
    old = h.leader()
    others = [m for m in h.members if m is not old]
    ids = {m.name: h.status(m)["header"]["member_id"] for m in h.members}
    h.client().put("/part/before", "1")

    names = [m.name for m in h.members]
    write_partition(str(fp_dir), names, isolation(ids, old.name))
    t0 = time.monotonic()
    for m in h.members:  # each member polls its file: wait until all three act on it
        h.wait_log(m, "partition failpoint: cut off from [", timeout_s=5.0)

    # The cut-off leader's own client: its write is never acknowledged, and a linearizable
    # read fails instead of answering from the minority.
    lone = Client([old.native_endpoint], timeout=2.0, prefer_leader=False)
    try:
        with pytest.raises((wire.RaftkvError, ConnectionError)):
            lone.put("/part/minority", "lost")
        with pytest.raises((wire.RaftkvError, ConnectionError)):
            lone.get("/part/before")
        # A serializable read may be answered locally (it may be stale, as in etcd).
        assert lone.get("/part/before", serializable=True)[0] == b"1"
    finally:
        lone.close()

    # The majority elects a leader of its own and takes writes.
    new = h.leader(among=others, timeout_s=NEW_LEADER_BOUND_S)
    assert new is not old
    majority = h.client(others, timeout=5.0)
    majority.put("/part/majority", "2")
    print(f"new leader {new.name} after {time.monotonic() - t0:.2f}s")

    write_partition(str(fp_dir), names, {})
    # After the heal the old leader follows the new one and holds exactly the majority's data.
    assert h.leader(timeout_s=NEW_LEADER_BOUND_S) is new
    rejoined = h.client([old], timeout=5.0)
    deadline = time.monotonic() + 10.0
    while True:
        got = {meta.key: value for value, meta in rejoined.get_prefix("/part/")}
        if b"/part/majority" in got or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == {b"/part/before": b"1", b"/part/majority": b"2"}
    assert "partition failpoint: cut off from" in h.log_text(old)


def test_raftkv_client_on_a_cut_off_member_is_sent_to_the_majority_at_once(make_cluster, tmp_path,
                                                                          monkeypatch):
    """A member cut off in a minority holds a linearizable read until a leader is known (as
    etcd does, for clients that cannot ask elsewhere), but raftkv's own client asks in its
    hello to be refused instead (server/leaderless.py): it fails over to the majority at once
    rather than waiting out its whole timeout on the cut-off member."""
    fp_dir = tmp_path / "failpoints"
    fp_dir.mkdir()
    monkeypatch.setenv("RAFTKV_FAILPOINT_DIR", str(fp_dir))
    h = make_cluster(3)
    leader = h.leader()
    lone, other = [m for m in h.members if m is not leader]
    ids = {m.name: h.status(m)["header"]["member_id"] for m in h.members}
    h.client().put("/part/before", "1")
    write_partition(str(fp_dir), [m.name for m in h.members], isolation(ids, lone.name))
    deadline = time.monotonic() + 10.0
    while h.status(lone)["leader"] != 0:  # it has given up on its leader
        assert time.monotonic() < deadline, "the cut-off member still names a leader"
        time.sleep(0.1)

    c = Client([lone.native_endpoint, other.native_endpoint], timeout=5.0, prefer_leader=False)
    try:
        t0 = time.monotonic()
        assert c.get("/part/before")[0] == b"1"  # linearizable: asked of the majority
        took_read = time.monotonic() - t0
        t0 = time.monotonic()
        c.put("/part/after", "2")
        took_write = time.monotonic() - t0
    finally:
        c.close()
    assert took_read < 2.0 and took_write < 2.0, (took_read, took_write)  # not the 5 s timeout
    assert h.client([leader]).get("/part/after")[0] == b"2"
