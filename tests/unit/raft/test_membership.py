"""Membership changes one server at a time (thesis §4.1), learners (thesis §4.2.1)."""
from __future__ import annotations

import pytest

from raftkv.raft import ConfChangeV2, Message, MsgType, StateType
from raftkv.raft.errors import ProposalDroppedError
from tests.unit.raft.conftest import (
    ADD,
    ADD_LEARNER,
    ELECTION,
    REMOVE,
    Net,
    cc,
    flush,
    make,
    make_leader,
)


def grow(net, mid, voters, learners):
    """Start member mid with the configuration it is about to join."""
    net.add_member(mid, voters, learners)


def test_add_learner_replicates_but_does_not_vote():
    """Thesis §4.2.1: a learner receives the log but is not counted in quorums and never
    campaigns."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.propose(1, b"a")
    grow(net, 4, [1, 2, 3], [4])
    net.nodes[1].propose_conf_change(cc((ADD_LEARNER, 4)))
    net.pump()
    net.tick(n=2)
    assert net.raft(1).learners == {4} and net.raft(1).voters == {1, 2, 3}
    assert net.applied[4] == [b"a"]
    assert net.nodes[4].status()["role"] == "learner"
    # quorum: the learner's ack does not help
    net.cut(1, 2)
    net.cut(1, 3)
    commit = net.raft(1).log.committed
    net.propose(1, b"b")
    net.tick([1, 4], n=2)
    assert net.raft(1).log.committed == commit
    # never campaigns
    net.isolate(4)
    net.tick([4], n=5 * ELECTION)
    assert net.raft(4).state == StateType.FOLLOWER and net.raft(4).term == net.raft(1).term


def test_learner_vote_not_counted():
    """Thesis §4.2.1: a learner is not asked for votes; a granted vote from it counts for
    nothing."""
    n = make(1, (1, 2, 3), learners=(4,), pre_vote=False)
    n.campaign()
    assert sorted(m.to for m in flush(n) if m.type == MsgType.VOTE) == [2, 3]
    n.step(Message(MsgType.VOTE_RESP, to=1, frm=4, term=1))
    assert n.raft.state == StateType.CANDIDATE


def test_promote_learner_to_voter():
    """Thesis §4.1: promoting a caught-up learner adds one voter; quorums then include it."""
    net = Net([1, 2, 3])
    net.elect(1)
    grow(net, 4, [1, 2, 3], [4])
    net.nodes[1].propose_conf_change(cc((ADD_LEARNER, 4)))
    net.pump()
    net.tick(n=1)
    net.nodes[1].propose_conf_change(cc((ADD, 4)))
    net.pump()
    net.tick(n=1)
    for mid in (1, 2, 3, 4):
        assert net.raft(mid).voters == {1, 2, 3, 4} and not net.raft(mid).learners
    # 4 voters: the leader and one follower are not a quorum
    net.cut(1, 3)
    net.cut(1, 4)
    commit = net.raft(1).log.committed
    net.propose(1, b"x")
    assert net.raft(1).log.committed == commit
    net.heal()
    net.tick(n=2)
    assert net.applied[4] == [b"x"]


def test_remove_voter_shrinks_quorum():
    """Thesis §4.1: after removing a voter, the quorum is computed over the new configuration
    (2 of 2 here), and the removed member gets nothing more."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose_conf_change(cc((REMOVE, 3)))
    net.pump()
    assert net.raft(1).voters == {1, 2} and 3 not in net.raft(1).prs
    n_sent = len(net.sent)
    net.propose(1, b"y")
    net.tick(n=2)
    assert net.applied[2] == [b"y"]
    assert not [m for m in net.sent[n_sent:] if m.to == 3]


def test_removed_leader_steps_down():
    """Thesis §4.2.2: a leader removed from the configuration steps down once the change is
    applied; the remaining members elect a leader."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose_conf_change(cc((REMOVE, 1)))
    net.pump()
    assert net.raft(1).state == StateType.FOLLOWER
    net.tick([2, 3], n=4 * ELECTION)
    assert net.leader() in (2, 3)
    assert net.raft(net.leader()).voters == {2, 3}


def test_second_conf_change_refused_while_pending():
    """Thesis §4.1: a configuration change is refused while a previous one is not yet applied
    (one change at a time)."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)  # the first change cannot commit
    net.nodes[1].propose_conf_change(cc((ADD_LEARNER, 4)))
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].propose_conf_change(cc((ADD_LEARNER, 5)))
    net.heal()
    net.pump()
    net.tick(n=2)
    net.nodes[1].propose_conf_change(cc((ADD_LEARNER, 5)))  # applied now: accepted


@pytest.mark.parametrize("changes,ok", [
    ([(ADD, 4)], True),
    ([(REMOVE, 3)], True),
    ([(ADD, 4), (ADD, 5)], False),
    ([(REMOVE, 2), (ADD, 4)], False),
    ([(REMOVE, 2), (REMOVE, 3)], False),
    ([(ADD_LEARNER, 4), (ADD_LEARNER, 5)], True),  # learners are not voters
    ([(ADD, 4), (ADD_LEARNER, 5)], True),
    ([(ADD, 2)], True),  # no-op change
])
def test_only_one_voter_change_per_conf_change(changes, ok):
    """Thesis §4.1: a single ConfChangeV2 may change at most one voter (raftkv does not use
    joint consensus)."""
    n = make_leader(make(1, (1, 2, 3), pre_vote=False))
    flush(n)
    for v in (2, 3):
        n.step(Message(MsgType.APP_RESP, to=1, frm=v, term=1, index=1))
    rd = n.ready()
    n.advance(rd)
    assert n.raft.log.applied == 1
    if ok:
        n.propose_conf_change(cc(*changes))
    else:
        with pytest.raises(ProposalDroppedError):
            n.propose_conf_change(cc(*changes))


def test_removing_every_voter_is_refused():
    n = make_leader(make(1, (1,)))
    flush(n)
    with pytest.raises(ProposalDroppedError):
        n.propose_conf_change(cc((REMOVE, 1)))


def test_new_leader_refuses_conf_change_until_its_entry_applies():
    """Thesis §4.1: a new leader may hold an unapplied change of its predecessor in its log;
    it accepts a new change only after its own first entry is applied."""
    n = make_leader(make(1, (1, 2, 3), log_terms=(1, 1), term=1, pre_vote=False))
    flush(n)
    with pytest.raises(ProposalDroppedError):
        n.propose_conf_change(cc((ADD_LEARNER, 4)))
    n.step(Message(MsgType.APP_RESP, to=1, frm=2, term=2, index=3))  # the no-op commits
    rd = n.ready()
    n.advance(rd)
    assert n.raft.log.applied == 3
    n.propose_conf_change(cc((ADD_LEARNER, 4)))


def test_empty_conf_change_is_accepted():
    """Thesis §4.1: an empty ConfChangeV2 changes no voter."""
    n = make(1, (1,))
    n.campaign()
    flush(n)
    n.propose_conf_change(ConfChangeV2())


def test_member_with_unapplied_conf_change_does_not_campaign():
    """Thesis §4.1: a member does not campaign while a committed conf change is unapplied
    (its outcome may remove it from the voters)."""
    from raftkv.raft import Entry, EntryType, encode_conf_change
    n = make(1, (1, 2, 3), pre_vote=False, term=1)
    data = encode_conf_change(cc((REMOVE, 1)))
    n.step(Message(MsgType.APP, to=1, frm=2, term=1, index=0, log_term=0, commit=1,
                   entries=[Entry(1, 1, EntryType.CONF_CHANGE, data)]))
    assert n.raft.log.committed == 1 and n.raft.log.applied == 0
    n.campaign()
    assert n.raft.state == StateType.FOLLOWER
