"""The Ready contract of RawNode (raftkv.raft.rawnode.Ready): what must be durable before a
message may go out, and when a leader may count its own write (thesis §10.2.1)."""
from __future__ import annotations

import pytest

from raftkv.raft import HardState, Message, MsgType, Role
from raftkv.raft.errors import StepLocalMsgError
from tests.unit.raft.conftest import (
    Net,
    ents,
    flush,
    make,
    make_leader,
    msgs_of,
    persist,
)

APP, APP_RESP = MsgType.APP, MsgType.APP_RESP


def node(mid=1, voters=(1, 2, 3), **kw):
    kw.setdefault("pre_vote", False)
    return make(mid, voters, **kw)


def test_candidate_ready_carries_new_term_and_vote_with_its_vote_requests():
    """§5.2 / Figure 2: currentTerm and votedFor are persisted before vote requests are sent:
    the Ready holding the requests holds the hard state with the new term and vote, and the
    requests are not early messages."""
    n = node(term=4)
    flush(n)
    n.campaign()
    rd = n.ready()
    assert rd.hard_state == HardState(term=5, vote=1, commit=0)
    assert rd.must_sync()
    assert not rd.early_messages
    assert sorted(m.to for m in msgs_of(rd.messages, MsgType.VOTE)) == [2, 3]


@pytest.mark.parametrize("pre_vote", [False, True])
def test_voter_ready_carries_vote_with_its_response(pre_vote):
    """§5.2: a granted vote is durable before the response is sent (same Ready, messages)."""
    n = node(term=1, pre_vote=pre_vote)
    flush(n)
    typ = MsgType.PRE_VOTE if pre_vote else MsgType.VOTE
    n.step(Message(typ, to=1, frm=2, term=2))
    rd = n.ready()
    [resp] = rd.messages
    assert not resp.reject and not rd.early_messages
    if pre_vote:
        # A pre-vote changes neither term nor vote: nothing to persist.
        assert rd.hard_state is None
    else:
        assert rd.hard_state == HardState(term=2, vote=2, commit=0)


def test_follower_entries_are_persisted_before_ack():
    """§5.3: a follower acknowledges entries only once they are durable: the entries are in the
    same Ready as the acknowledgement, which is a (late) message, never an early one."""
    n = node(term=1)
    flush(n)
    n.step(Message(APP, to=1, frm=2, term=1, index=0, log_term=0, entries=ents(1, 1)))
    rd = n.ready()
    assert [e.index for e in rd.entries] == [1, 2]
    assert not rd.early_messages
    [ack] = rd.messages
    assert ack.type == APP_RESP and ack.index == 2


def test_single_voter_leader_commits_only_after_advance():
    """Thesis §10.2.1: a leader counts itself in the quorum only once its own write is durable:
    a one-voter leader commits its entry after advance(), not when it appends it."""
    n = node(voters=(1,))
    n.campaign()
    flush(n)
    n.propose(b"x")
    rd = n.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert n.raft.log.committed < rd.entries[-1].index
    assert not rd.committed_entries or rd.committed_entries[-1].index < rd.entries[-1].index
    persist(n.raft.c.storage, rd)
    n.advance(rd)
    assert n.raft.log.committed == rd.entries[-1].index
    assert [e.data for e in n.ready().committed_entries] == [b"x"]


def test_leader_with_followers_cut_off_commits_nothing():
    """Thesis §10.2.1: with 3 members where both followers are cut off, nothing commits even
    though the leader appended (and persisted) the entry."""
    net = Net([1, 2, 3])
    net.elect(1)
    commit = net.raft(1).log.committed
    net.isolate(1)
    net.propose(1, b"x")
    net.tick([1], n=3)
    assert net.raft(1).log.last_index() == commit + 1
    assert net.raft(1).log.committed == commit
    assert net.applied[1] == []


def test_leader_counts_itself_only_after_advance():
    """Thesis §10.2.1: the leader sends appends early (in parallel with its own write); one
    follower's ack is not a quorum of 3 until the leader's own write is reported durable."""
    net = Net([1, 2, 3])
    net.elect(1)
    lead = net.nodes[1]
    lead.propose(b"x")
    rd = lead.ready()
    index = rd.entries[-1].index
    apps = msgs_of(rd.early_messages, APP)
    assert sorted(m.to for m in apps) == [2, 3]  # appends go before the leader's write
    net.nodes[2].step(apps[0])
    rd2 = net.nodes[2].ready()
    persist(net.stores[2], rd2)
    net.nodes[2].advance(rd2)
    [ack] = rd2.messages
    lead.step(ack)
    assert lead.raft.log.committed < index  # 1 of 3 durable: not committed
    persist(net.stores[1], rd)
    lead.advance(rd)
    assert lead.raft.log.committed == index  # leader + member 2


def test_two_followers_commit_without_leader_write():
    """Thesis §10.2.1: a majority of followers suffices; the leader's own write is not needed."""
    net = Net([1, 2, 3])
    net.elect(1)
    lead = net.nodes[1]
    lead.propose(b"x")
    rd = lead.ready()
    index = rd.entries[-1].index
    for m in msgs_of(rd.early_messages, APP):
        f = net.nodes[m.to]
        f.step(m)
        frd = f.ready()
        persist(net.stores[m.to], frd)
        f.advance(frd)
        for ack in frd.messages:
            lead.step(ack)
    assert lead.raft.log.committed == index


def test_leader_with_fresh_term_sends_no_early_messages():
    """Ready: early_messages only for a leader whose term and vote are already durable. A
    candidate that wins before its new term was handed out must send appends only after the
    hard state is persisted."""
    n = node()
    n.campaign()
    for v in (2, 3):
        n.step(Message(MsgType.VOTE_RESP, to=1, frm=v, term=1))
    assert n.raft.state.name == "LEADER"
    rd = n.ready()
    assert rd.hard_state.term == 1 and rd.hard_state.vote == 1
    assert not rd.early_messages
    assert msgs_of(rd.messages, APP)


def test_steady_leader_sends_appends_early():
    """Ready: a leader whose term and vote are durable may send appends and heartbeats early;
    the commit index changing does not count as a term change."""
    n = make_leader(node())
    flush(n)
    for v in (2, 3):
        n.step(Message(APP_RESP, to=1, frm=v, term=1, index=1))
    flush(n)
    n.propose(b"x")
    rd = n.ready()
    assert msgs_of(rd.early_messages, APP) and not msgs_of(rd.messages, APP)
    n.advance(rd)
    n.tick()
    rd = n.ready()
    assert msgs_of(rd.early_messages, MsgType.HEARTBEAT)


def test_ready_contents_and_has_ready():
    """Ready: has_ready() is false while a Ready is outstanding and when nothing changed."""
    n = node()
    assert not n.has_ready()
    n.campaign()
    assert n.has_ready()
    rd = n.ready()
    assert not n.has_ready()  # outstanding
    assert rd.soft_state.role == Role.CANDIDATE
    persist(n.raft.c.storage, rd)
    n.advance(rd)
    assert not n.has_ready()
    with pytest.raises(AssertionError):
        n.advance(rd)


def test_committed_entries_applied_once():
    """Ready: committed entries are handed out once, in order, then applied."""
    net = Net([1, 2, 3])
    net.elect(1)
    for k in range(5):
        net.propose(1, b"%d" % k)
    for mid in (1, 2, 3):
        assert net.applied[mid] == [b"%d" % k for k in range(5)]
        assert net.raft(mid).log.applied == net.raft(mid).log.committed


def test_apply_bytes_max_splits_committed_entries():
    """Ready: committed_entries is bounded by apply_bytes_max (at least one entry)."""
    n = node(voters=(1,), apply_bytes_max=1)
    n.campaign()
    flush(n)
    for k in range(3):
        n.propose(b"%d" % k)
    rd = n.ready()
    persist(n.raft.c.storage, rd)
    n.advance(rd)
    seen = []
    while n.has_ready():
        rd = n.ready()
        assert len(rd.committed_entries) <= 1
        seen += [e.data for e in rd.committed_entries]
        n.advance(rd)
    assert seen == [b"0", b"1", b"2"]


@pytest.mark.parametrize("typ", [MsgType.HUP, MsgType.BEAT, MsgType.CHECK_QUORUM,
                                 MsgType.UNREACHABLE, MsgType.SNAP_STATUS])
def test_local_messages_refused_from_network(typ):
    """RawNode.step: local message types never come from the wire."""
    n = node()
    with pytest.raises(StepLocalMsgError):
        n.step(Message(typ, to=1, frm=2, term=1))


def test_response_from_unknown_member_ignored():
    """RawNode.step: responses from members outside the configuration are ignored."""
    n = make_leader(node())
    flush(n)
    n.step(Message(APP_RESP, to=1, frm=9, term=n.raft.term, index=1))
    assert 9 not in n.raft.prs


def test_propose_many_appends_all_entries_in_one_step():
    """RawNode.propose_many: several entries in one proposal (one append per follower)."""
    import random as _random

    from raftkv.raft import Config, ConfState, MemoryStorage, RawNode

    storage = MemoryStorage()
    storage.snap.metadata.conf_state = ConfState(voters=[1, 2, 3])
    node = RawNode(Config(1, storage, _random.Random(1)))
    node.raft.become_candidate()
    node.raft.become_leader()
    first = node.raft.log.last_index() + 1
    node.raft.msgs.clear()
    node.propose_many([b"a", b"b", b"c"])
    ents = node.raft.log.entries_from(first)
    assert [e.data for e in ents] == [b"a", b"b", b"c"]
    apps = [m for m in node.raft.msgs if m.type.name == "APP"]
    assert sorted(m.to for m in apps) == [2, 3]  # one append per follower, all three entries
    assert all([e.data for e in m.entries][-3:] == [b"a", b"b", b"c"] for m in apps)
