"""Log compaction and InstallSnapshot (Raft paper §7)."""
from __future__ import annotations

from raftkv.raft import ConfState, Message, MsgType, Snapshot, SnapshotMetadata, StateType
from raftkv.raft.progress import ProgressState
from tests.unit.raft.conftest import ADD_LEARNER, Net, cc, flush, make, make_leader, persist


def snap(index, term, voters=(1, 2, 3), learners=()):
    cs = ConfState(voters=list(voters), learners=list(learners))
    return Snapshot(data=b"", metadata=SnapshotMetadata(cs, index, term))


def lagging_net(n_entries=5):
    """3 members; member 3 missed n_entries entries the leader has compacted away."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.propose(1, b"before")
    net.isolate(3)
    for k in range(n_entries):
        net.propose(1, b"%d" % k)
    net.compact(1)
    return net


def test_lagging_follower_gets_snapshot():
    """§7: when the entries a follower needs were compacted, the leader sends its snapshot;
    the follower installs it and replication continues after it."""
    net = lagging_net()
    index = net.stores[1].snap.metadata.index
    net.heal()
    net.tick(n=3)
    snaps = [m for m in net.sent if m.type == MsgType.SNAP]
    assert [(m.frm, m.to) for m in snaps] == [(1, 3)]
    assert snaps[0].snapshot.metadata.index == index
    assert net.stores[3].snap.metadata.index == index
    assert net.applied[3] == net.applied[1]
    net.propose(1, b"after")
    assert net.applied[3][-1] == b"after"
    assert net.raft(1).prs[3].state == ProgressState.REPLICATE


def test_snapshot_carries_conf_state():
    """§7: the snapshot includes the latest configuration; the follower adopts it."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.add_member(4, [1, 2, 3], [4])
    net.cut(4, 3)
    net.nodes[1].propose_conf_change(cc((ADD_LEARNER, 4)))
    net.pump()
    net.tick([1, 2, 4], n=1)
    net.propose(1, b"x")
    net.compact(1)
    assert net.stores[1].snap.metadata.conf_state.learners == [4]
    net.heal()
    net.tick(n=3)
    assert net.raft(3).learners == {4} and net.raft(3).voters == {1, 2, 3}
    assert 4 in net.raft(3).prs


def test_follower_snapshot_ready_order():
    """§7 + Ready: the follower's snapshot is handed out for persistence before any entry is
    applied, with commit at the snapshot index."""
    n = make(2, (1, 2, 3), log_terms=(1,), term=1)
    flush(n)
    n.step(Message(MsgType.SNAP, to=2, frm=1, term=2, snapshot=snap(10, 2)))
    rd = n.ready()
    assert rd.snapshot.metadata.index == 10
    assert rd.hard_state.commit == 10 and not rd.committed_entries
    [ack] = rd.messages
    assert ack.type == MsgType.APP_RESP and ack.index == 10 and not ack.reject
    persist(n.raft.c.storage, rd)
    n.advance(rd)
    assert n.raft.log.applied == 10 and n.raft.log.first_index() == 11


def test_stale_snapshot_ignored():
    """§7: a snapshot no newer than the follower's commit index is ignored (acked at commit)."""
    n = make(2, (1, 2, 3), log_terms=(1, 1, 1), term=1, commit=3)
    flush(n)
    n.step(Message(MsgType.SNAP, to=2, frm=1, term=1, snapshot=snap(2, 1)))
    [ack] = flush(n)
    assert ack.index == 3 and n.raft.log.first_index() == 1


def test_snapshot_matching_log_only_fast_forwards_commit():
    """§7: if the follower's log already holds the snapshot's last entry, it keeps the entries
    after it and only advances its commit index."""
    n = make(2, (1, 2, 3), log_terms=(1, 1, 1, 1), term=1, commit=1)
    flush(n)
    n.step(Message(MsgType.SNAP, to=2, frm=1, term=1, snapshot=snap(3, 1)))
    assert n.raft.log.committed == 3 and n.raft.log.last_index() == 4
    assert n.raft.log.unstable.snapshot is None


def test_report_snapshot_failure_retries():
    """§7 / report_snapshot: a failed delivery puts the follower back to probe; the leader
    sends the snapshot again later."""
    net = lagging_net()
    net.auto_report_snapshot = False
    net.drop = lambda m: m.type == MsgType.SNAP
    net.heal()
    net.drop = lambda m: m.type == MsgType.SNAP
    net.tick(n=2)
    pr = net.raft(1).prs[3]
    assert pr.state == ProgressState.SNAPSHOT
    net.nodes[1].report_snapshot(3, False)
    assert pr.state == ProgressState.PROBE and pr.is_paused()
    net.drop = None
    net.auto_report_snapshot = True
    net.tick(n=3)
    assert net.applied[3] == net.applied[1]


def test_report_snapshot_success_then_replicate():
    """§7 / report_snapshot: after the follower acknowledges the snapshot the leader resumes
    normal replication from the entry after it."""
    net = lagging_net()
    net.heal()
    net.tick(n=3)
    pr = net.raft(1).prs[3]
    assert pr.state == ProgressState.REPLICATE
    assert pr.match == net.raft(1).log.last_index()


def test_snapshot_waits_for_recent_activity():
    """§7 (etcd): the leader does not send a snapshot to a follower it has not heard from
    recently (it may be down); it waits for a heartbeat response."""
    n = make(1, (1, 2), log_terms=(1, 1, 1), term=1, commit=3)
    s = n.raft.c.storage
    s.create_snapshot(3, ConfState(voters=[1, 2]), b"")
    s.compact(3)
    n = make_leader(type(n)(n.raft.c))
    flush(n)
    n.raft.prs[2].next = 2
    n.raft.prs[2].msg_app_flow_paused = False
    n.raft.prs[2].recent_active = False
    assert not n.raft.send_append(2)
    n.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=n.raft.term))
    msgs = flush(n)
    assert [m.type for m in msgs if m.to == 2] == [MsgType.SNAP]
    assert n.raft.prs[2].state == ProgressState.SNAPSHOT


def test_candidate_receiving_snapshot_steps_down():
    """§7 + §5.2: a snapshot from a leader of the candidate's term makes it a follower."""
    n = make(2, (1, 2, 3), pre_vote=False)
    n.campaign()
    flush(n)
    n.step(Message(MsgType.SNAP, to=2, frm=1, term=1, snapshot=snap(5, 1)))
    assert n.raft.state == StateType.FOLLOWER and n.raft.lead == 1
    assert n.raft.log.committed == 5


def test_follower_keeps_leader_after_installing_snapshot():
    """§7: installing the leader's snapshot does not make the follower forget that leader: it
    still forwards proposals to it and, within the lease (thesis §4.2.3), ignores a
    disruptive vote request."""
    n = make(2, (1, 2, 3), log_terms=(1,), term=1, pre_vote=False)
    n.step(Message(MsgType.HEARTBEAT, to=2, frm=1, term=1))
    flush(n)
    n.step(Message(MsgType.SNAP, to=2, frm=1, term=1, snapshot=snap(10, 1)))
    assert n.raft.lead == 1
    flush(n)
    n.propose(b"p")
    [fwd] = flush(n)
    assert fwd.type == MsgType.PROP and fwd.to == 1
    n.step(Message(MsgType.VOTE, to=2, frm=3, term=2, index=10, log_term=1))
    assert n.raft.term == 1 and not flush(n)
