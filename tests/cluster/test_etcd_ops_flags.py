"""etcd 3.4's member flags that change what a real member process does: --wal-dir (the WAL
elsewhere, across a restart), --log-outputs to a file, --experimental-warning-apply-duration,
--strict-reconfig-check (a 3-member cluster with one member down refuses member changes that
could lose the quorum, with etcd's "unhealthy cluster"; false lets them through) and
--pre-vote false."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest

from raftkv.api import wire
from raftkv.server.service import HEALTH_INTERVAL_S


def _wait_for(pred, timeout_s=20.0, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def test_wal_dir_log_outputs_and_apply_warning(make_cluster, tmp_path):
    wal_dir = tmp_path / "disk2" / "wal"
    log_file = tmp_path / "member.log.json"
    h = make_cluster(members=1, extra_args=[
        "--wal-dir", str(wal_dir), "--log-outputs", f"stderr,{log_file}", "--logger", "zap",
        "--experimental-warning-apply-duration", "0.001ms"])
    m = h.members[0]
    c = h.client()
    c.put(b"k", b"v1")
    segments = [n for n in os.listdir(wal_dir) if n.endswith(".wal")]
    assert segments, "no WAL segment in --wal-dir"
    assert not os.path.exists(os.path.join(m.data_dir, "wal"))
    # log-outputs: the same lines in the file, as JSON (--logger zap)
    _wait_for(lambda: "apply request took too long" in log_file.read_text(),
              what="the slow-apply warning in the --log-outputs file")
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any("WAL in" in ln["msg"] and str(wal_dir) in ln["msg"] for ln in lines)
    warn = next(ln for ln in lines if "apply request took too long" in ln["msg"])
    assert warn["level"] == "warning" and "--experimental-warning-apply-duration" in warn["msg"]
    assert "apply request took too long" in h.log_text(m)  # stderr too
    h.close_clients()
    assert h.stop_member(m) == 0
    h.cluster.start_member(m)
    h.wait_native(m)
    h.leader()
    assert h.client().get(b"k")[0] == b"v1"
    h.close_clients()
    # Without its --wal-dir the member refuses to start (its store has no log beside it).
    assert h.stop_member(m) == 0
    h.cluster.extra_args = [a for a in h.cluster.extra_args if a not in
                            ("--wal-dir", str(wal_dir))]
    h.cluster.start_member(m)
    assert m.proc.wait(timeout=30) == 2
    assert "no WAL in" in h.log_text(m) and "--wal-dir" in h.log_text(m)


def _files(*dirs):
    """{path: sha256} of the files under dirs but LMDB's lock file."""
    out = {}
    for top in dirs:
        for root, _, files in os.walk(top):
            for name in files:
                if name not in ("lock.mdb", "raftkv.lock"):  # locks: rewritten by any start
                    with open(os.path.join(root, name), "rb") as f:
                        out[os.path.join(root, name)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _start_refused(h, m, wal_dir):
    """Start m with --wal-dir wal_dir; it must exit with status 2 and say why."""
    seen = len(h.log_text(m))
    h.cluster.member_args[m.name] = ["--wal-dir", str(wal_dir)]
    h.cluster.start_member(m)
    assert m.proc.wait(timeout=30) == 2
    text = h.log_text(m)[seen:]
    assert "refusing to start" in text and f"there is no WAL in {wal_dir}" in text, text
    assert "--wal-dir that holds its WAL" in text, text


def test_a_member_whose_wal_is_missing_or_elsewhere_refuses_to_start(make_cluster, tmp_path):
    """The data dir records its WAL's identity: a restart under another --wal-dir (an empty
    one) or after the WAL was deleted is refused with exit status 2 and a message, and
    nothing is written; with its own --wal-dir the member starts with its data."""
    wal_a, wal_b = tmp_path / "disk2" / "wal", tmp_path / "disk3" / "wal"
    h = make_cluster(members=1, extra_args=["--wal-dir", str(wal_a)])
    m = h.members[0]
    rev = h.client().put(b"k", b"v1")["header"]["revision"]
    h.close_clients()
    assert h.stop_member(m) == 0
    before = _files(m.data_dir, wal_a)
    os.makedirs(wal_b)
    _start_refused(h, m, wal_b)
    assert os.listdir(wal_b) == [] and _files(m.data_dir, wal_a) == before
    h.cluster.member_args[m.name] = ["--wal-dir", str(wal_a)]
    h.start_member(m)
    h.leader()
    kv = h.client().get(b"k")
    assert kv[0] == b"v1" and kv[1].mod_revision == rev, kv
    h.close_clients()
    assert h.stop_member(m) == 0
    shutil.rmtree(wal_a)
    _start_refused(h, m, wal_a)
    assert not os.path.exists(wal_a)


def _member_ids(h):
    st = {m.name: h.status(m) for m in h.members if m.alive()}
    return {name: s["header"]["member_id"] for name, s in st.items()}


def _one_member_down(h):
    """A 3-member cluster whose peers have been connected for HEALTH_INTERVAL_S, then one
    follower killed; returns (leader, live follower, dead follower, their member IDs)."""
    time.sleep(HEALTH_INTERVAL_S + 0.5)
    leader = h.leader()
    ids = _member_ids(h)
    followers = [m for m in h.members if m is not leader]
    live, dead = followers
    seen = len(h.log_text(leader))
    h.kill(dead)
    h.leader()
    # The leader's transport notices the lost connection at its next send (a heartbeat).
    _wait_for(lambda: f"peer {ids[dead.name]:x}" in h.log_text(leader)[seen:],
              what="the leader to see the dead peer's connection go")
    return leader, live, dead, ids


def test_strict_reconfig_check_refuses_what_could_lose_quorum(make_cluster):
    h = make_cluster(members=3)
    leader, live, dead, ids = _one_member_down(h)
    c = h.client([leader])
    for op, body in (("member_remove", {"ID": ids[live.name]}),
                     ("member_add", {"peerURLs": ["http://127.0.0.1:1"]})):
        with pytest.raises(wire.RaftkvError) as info:
            c.call(op, body)
        assert info.value.code == "UNHEALTHY", (op, info.value)
        assert "etcdserver: unhealthy cluster" in str(info.value)
    # Through a follower too (it forwards to the leader, which refuses).
    with pytest.raises(wire.RaftkvError) as info:
        h.client([live]).call("member_remove", {"ID": ids[leader.name]})
    assert info.value.code == "UNHEALTHY"
    names = {mm["name"] for mm in c.call("member_list", {})["members"]}
    assert names == {m.name for m in h.members}  # nothing changed
    # Removing the member that is down is allowed: it is not part of the active quorum.
    c.call("member_remove", {"ID": ids[dead.name]})
    _wait_for(lambda: len(c.call("member_list", {})["members"]) == 2, what="2 members")


def test_strict_reconfig_check_false_lets_it_through(make_cluster):
    h = make_cluster(members=3, extra_args=["--strict-reconfig-check=false"])
    leader, live, dead, ids = _one_member_down(h)
    c = h.client([leader])
    c.call("member_remove", {"ID": ids[live.name]})
    _wait_for(lambda: {mm["name"] for mm in c.call("member_list", {})["members"]} ==
              {leader.name, dead.name}, what="the live follower removed")


def test_pre_vote_false_elects_with_plain_votes(make_cluster):
    """With --pre-vote=false every member campaigns with MsgVote: a cluster still elects,
    fails over, and its members' logs say pre-vote is off."""
    h = make_cluster(members=3, extra_args=["--pre-vote=false", "--log-level", "debug"])
    leader = h.leader()
    c = h.client()
    c.put(b"a", b"1")
    h.kill(leader)
    rest = [m for m in h.members if m is not leader]
    new = h.leader(among=rest)
    assert new is not leader
    assert h.client(rest).get(b"a")[0] == b"1"
    text = h.log_text(new)
    assert "pre-vote off" in text


def test_a_new_data_dir_on_an_existing_wal_replays_it_and_names_the_members(make_cluster,
                                                                           tmp_path):
    """The data dir lost, the --wal-dir kept: the member rebuilds its store from the WAL, and
    announces its cluster once the replay has applied the members (never "0 voter(s)")."""
    wal_dir = tmp_path / "disk2" / "wal"
    h = make_cluster(members=1, extra_args=["--wal-dir", str(wal_dir)])
    m = h.members[0]
    rev = h.client().put(b"k", b"v1")["header"]["revision"]
    h.close_clients()
    assert h.stop_member(m) == 0
    shutil.rmtree(m.data_dir)
    seen = len(h.log_text(m))
    h.start_member(m)
    h.leader()
    kv = h.client().get(b"k")
    assert kv[0] == b"v1" and kv[1].mod_revision == rev, kv
    text = h.log_text(m)[seen:]
    assert "the members are not known until the log replays" in text, text
    _wait_for(lambda: "1 voter(s), quorum 1" in h.log_text(m)[seen:],
              what="the announcement after the replay")
    assert "0 voter(s)" not in h.log_text(m)[seen:]
    assert "a cluster of 0 member(s)" not in h.log_text(m)[seen:]
