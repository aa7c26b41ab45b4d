"""etcd's periodic corruption check on a real 3-member cluster: a value changed behind a
follower's back (its LMDB file edited while it was stopped) is found by the leader's next
check, which raises the CORRUPT alarm on every member: writes are refused with "etcdserver:
corrupt cluster", reads go on; `alarm disarm` lifts it until the next check finds the
difference again. With --experimental-initial-corrupt-check such a follower refuses to start
at all, naming the peers whose data differs; with its data intact it starts and serves."""
from __future__ import annotations

import time

import pytest

from raftkv.api import wire
from raftkv.mvcc import codec
from raftkv.storage.engine import Engine

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def _change_a_value(data_dir, key):
    """Rewrite the stored value of key's latest revision in place (same record shape)."""
    engine = Engine(data_dir)
    try:
        db = engine.db(codec.KV_DB)
        with engine.env.begin(write=True) as txn:
            found = None
            for dbkey, raw in txn.cursor(db=db):
                fields = codec.unpackb(raw)
                if fields[0] == key:
                    found = dbkey, fields
            assert found, f"{key!r} is not in {data_dir}"
            dbkey, fields = found
            fields[4] = b"tampered"
            txn.put(dbkey, codec.packb(fields), db=db)
    finally:
        engine.close()


def _wait_value(h, member, key, value):
    """Until member itself (a serializable read) has key = value."""
    alone = h.client([member])
    deadline = time.monotonic() + 10
    while alone.get(key, serializable=True)[0] != value:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_corrupted_follower_is_found_and_writes_stop(make_cluster):
    h = make_cluster(3, extra_args=["--experimental-corrupt-check-time", "1s"])
    c = h.client(timeout=10.0)
    c.put("/cc/k", "good")
    leader = h.leader()
    follower = next(m for m in h.members if m is not leader)
    alone = h.client([follower])
    deadline = time.monotonic() + 10
    while alone.get("/cc/k", serializable=True)[0] != b"good":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert h.stop_member(follower) == 0
    _change_a_value(follower.data_dir, b"/cc/k")
    h.start_member(follower)
    deadline = time.monotonic() + 30
    while True:
        alarms = c.call("alarm", {"action": 0})["alarms"]
        if alarms:
            break
        assert time.monotonic() < deadline, "the corruption was not found"
        time.sleep(0.2)
    assert alarms == [{"memberID": h.status(follower)["header"]["member_id"], "alarm": 2}]
    with pytest.raises(wire.RaftkvError) as info:
        c.put("/cc/other", "x")
    assert info.value.code == "CORRUPT"
    assert c.get("/cc/k")[0] == b"good"  # reads go on
    assert "CORRUPT" in h.log_text(h.leader())
    disarmed = c.call("alarm", {"action": 2, "alarm": 2})["alarms"]
    assert disarmed[0]["alarm"] == 2
    # The copies still differ: the next check raises the alarm again.
    deadline = time.monotonic() + 20
    while not c.call("alarm", {"action": 0})["alarms"]:
        assert time.monotonic() < deadline, "the alarm did not come back"
        time.sleep(0.2)


def test_initial_check_refuses_a_follower_whose_data_differs(make_cluster):
    h = make_cluster(3, extra_args=["--experimental-initial-corrupt-check"])
    c = h.client(timeout=10.0)
    c.put("/icc/k", "good")
    leader = h.leader()
    follower = next(m for m in h.members if m is not leader)
    _wait_value(h, follower, b"/icc/k", b"good")
    # Its data intact, the follower passes the check and serves.
    assert h.stop_member(follower) == 0
    h.start_member(follower)
    h.wait_log(follower, "initial corruption check passed at revision 2: 2 peer(s) agree")
    c.put("/icc/k2", "after")
    _wait_value(h, follower, b"/icc/k2", b"after")
    assert h.stop_member(follower) == 0
    _change_a_value(follower.data_dir, b"/icc/k")
    h.cluster.start_member(follower)
    assert follower.proc.wait(timeout=60) == 2
    text = h.log_text(follower).split("initial corruption check: comparing")[-1]
    assert "refusing to start: initial corruption check: this member's data differs" in text
    for peer in h.members:
        if peer is not follower:
            assert f"{peer.name} (" in text, text  # both peers hold the good copy
    assert "ready:" not in text  # no client listener was opened
    assert c.get("/icc/k")[0] == b"good"  # the others serve on


def test_initial_check_when_the_whole_cluster_restarts_together(make_cluster):
    """Members answer HashKV from their start on, before their Raft loop runs: members that
    start together compare their data with each other (a member started before them finds
    none to ask; one started after finds them answering)."""
    h = make_cluster(3, extra_args=["--experimental-initial-corrupt-check"])
    c = h.client(timeout=10.0)
    for i in range(20):
        c.put(f"/icc/all-{i}", "v")
    for m in h.members:
        _wait_value(h, m, b"/icc/all-19", b"v")
    h.restart_all()
    compared = 0
    for m in h.members:
        text = h.log_text(m).split("initial corruption check: comparing")[-1]
        assert "initial corruption check passed at revision 21" in text, text
        compared += int(text.split("initial corruption check passed at revision 21: ")[1]
                        .split(" peer(s) agree")[0])
        assert "not serving yet" not in text, text
    assert compared >= 2, "members starting together did not compare with each other"
    c.put("/icc/after", "x")
    assert c.get("/icc/after")[0] == b"x"
