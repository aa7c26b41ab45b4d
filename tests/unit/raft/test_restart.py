"""Restart: a RawNode rebuilt from persisted hard state, log and snapshot resumes where the
durable state left it (Figure 2, "Persistent state on all servers")."""
from __future__ import annotations

import pytest

from raftkv.raft import (
    ConfState,
    HardState,
    Message,
    MsgType,
    RawNode,
    Snapshot,
    SnapshotMetadata,
    StateType,
)
from tests.unit.raft.conftest import Net, ents, flush, make, new_config, new_storage, persist


def test_restart_restores_term_vote_commit_and_log():
    """Figure 2: currentTerm, votedFor and log[] survive a restart; commit is restored from the
    hard state and the committed-but-unapplied entries are handed out again."""
    s = new_storage((1, 2, 3))
    s.append(ents(1, 1, 2, 2))
    s.set_hard_state(HardState(term=3, vote=2, commit=3))
    n = RawNode(new_config(1, s))
    r = n.raft
    assert (r.term, r.vote, r.log.committed, r.log.last_index()) == (3, 2, 3, 4)
    assert r.state == StateType.FOLLOWER and r.lead == 0
    rd = n.ready()
    assert rd.hard_state is None  # nothing new to persist
    assert not rd.entries
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]


def test_restart_with_applied_skips_applied_entries():
    """Config.applied: entries the state machine already holds are not handed out again."""
    s = new_storage((1, 2, 3))
    s.append(ents(1, 1, 2, 2))
    s.set_hard_state(HardState(term=3, vote=2, commit=3))
    n = RawNode(new_config(1, s, applied=2))
    assert [e.index for e in n.ready().committed_entries] == [3]


def test_restarted_member_does_not_vote_twice_in_a_term():
    """§5.2 + Figure 2: votedFor is persistent, so a restart cannot grant a second vote."""
    s = new_storage((1, 2, 3))
    s.set_hard_state(HardState(term=5, vote=2))
    n = RawNode(new_config(1, s, pre_vote=False))
    n.step(Message(MsgType.VOTE, to=1, frm=3, term=5))
    [resp] = flush(n)
    assert resp.reject
    n.step(Message(MsgType.VOTE, to=1, frm=2, term=5))
    [resp] = flush(n)
    assert not resp.reject


def test_restart_from_snapshot():
    """§7: a member restarted over a snapshot starts its log after it, takes its configuration
    from the snapshot's conf state and applies only entries after it."""
    s = new_storage((1,))
    meta = SnapshotMetadata(conf_state=ConfState(voters=[1, 2, 3], learners=[4]), index=5,
                            term=2)
    s.apply_snapshot(Snapshot(data=b"img", metadata=meta))
    s.append(ents(2, 3, 3, start=6))
    s.set_hard_state(HardState(term=3, vote=1, commit=7))
    n = RawNode(new_config(1, s))
    r = n.raft
    assert (r.log.first_index(), r.log.last_index(), r.log.committed) == (6, 8, 7)
    assert r.voters == {1, 2, 3} and r.learners == {4}
    assert r.log.applied == 5
    assert [e.index for e in n.ready().committed_entries] == [6, 7]


def test_hard_state_commit_out_of_range_is_refused():
    """Restart: a hard state whose commit lies beyond the log is corrupt; refuse to start."""
    s = new_storage((1, 2, 3))
    s.append(ents(1))
    s.set_hard_state(HardState(term=1, commit=2))
    with pytest.raises(ValueError):
        RawNode(new_config(1, s))


def test_unpersisted_vote_is_lost_on_crash_but_was_never_sent():
    """§5.2: a crash before the Ready is persisted loses the new term and vote; that is safe
    because the vote requests in that Ready were not sent either."""
    n = make(1, (1, 2, 3), term=1, pre_vote=False)
    flush(n)
    n.campaign()
    rd = n.ready()
    assert rd.hard_state.term == 2 and rd.messages
    # crash: nothing of rd is persisted or sent
    n2 = RawNode(new_config(1, n.raft.c.storage, pre_vote=False))
    assert (n2.raft.term, n2.raft.vote) == (1, 0)


@pytest.mark.parametrize("who", [1, 2])
def test_cluster_resumes_after_member_restart(who):
    """Restart: a leader or follower restarted from storage rejoins; nothing committed is lost
    and the cluster keeps committing."""
    net = Net([1, 2, 3])
    net.elect(1)
    for k in range(3):
        net.propose(1, b"a%d" % k)
    applied = net.raft(who).log.applied
    net.restart(who, applied=applied)
    assert net.raft(who).log.committed >= applied
    net.tick(n=40)
    lead = net.leader()
    assert lead is not None
    net.propose(lead, b"b")
    net.tick(n=2)
    for mid in (1, 2, 3):
        assert net.applied[mid] == [b"a0", b"a1", b"a2", b"b"]


def test_restart_preserves_persisted_entries_not_yet_committed():
    """Figure 2: log[] is persistent: entries persisted but not yet committed survive."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.propose(1, b"x")
    last = net.raft(1).log.last_index()
    net.restart(1)
    assert net.raft(1).log.last_index() == last
    assert net.raft(1).log.term(last) == net.raft(1).term


def test_persist_order_snapshot_entries_hard_state():
    """Ready step 2: persisting a follower's snapshot Ready is snapshot, then entries, then the
    hard state; a member rebuilt from that storage matches the live one."""
    s = new_storage((1, 2, 3))
    n = RawNode(new_config(2, s))
    meta = SnapshotMetadata(conf_state=ConfState(voters=[1, 2, 3]), index=4, term=1)
    n.step(Message(MsgType.SNAP, to=2, frm=1, term=1, snapshot=Snapshot(b"s", meta)))
    rd = n.ready()
    assert rd.snapshot is not None and rd.hard_state.commit == 4
    persist(s, rd)
    n.advance(rd)
    n2 = RawNode(new_config(2, s))
    assert n2.raft.log.committed == 4 and n2.raft.log.first_index() == 5
    assert n2.raft.term == 1
