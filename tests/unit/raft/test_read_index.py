"""ReadIndex (thesis §6.4): linearizable reads without writing to the log."""
from __future__ import annotations

from raftkv.raft import Message, MsgType
from tests.unit.raft.conftest import Net, flush, make, make_leader, msgs_of

HB, HB_RESP = MsgType.HEARTBEAT, MsgType.HEARTBEAT_RESP


def ctxs(net, mid):
    return [(rs.request_ctx, rs.index) for rs in net.read_states[mid]]


def test_read_state_only_after_heartbeat_quorum():
    """Thesis §6.4 step 3: the leader confirms it is still leader by a heartbeat round with a
    quorum before it answers; until then no read state."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.propose(1, b"x")
    commit = net.raft(1).log.committed
    net.isolate(1)
    net.nodes[1].read_index(b"r1")
    net.pump()
    assert ctxs(net, 1) == []
    net.heal()
    net.tick([1])  # the next heartbeat carries the pending read's context
    assert ctxs(net, 1) == [(b"r1", commit)]


def test_read_index_is_commit_at_request_time():
    """Thesis §6.4 steps 2 and 4: the read index is the commit index when the request arrived;
    the read may be served once the state machine has applied it."""
    n = make_leader(make(1, (1, 2, 3), pre_vote=False))
    flush(n)
    for v in (2, 3):
        n.step(Message(MsgType.APP_RESP, to=1, frm=v, term=1, index=1))
    flush(n)
    n.read_index(b"a")
    hbs = msgs_of(flush(n), HB)
    assert sorted(m.to for m in hbs) == [2, 3] and all(m.context == b"a" for m in hbs)
    n.step(Message(HB_RESP, to=1, frm=2, term=1, context=b"a"))
    rd = n.ready()
    assert [(r.request_ctx, r.index) for r in rd.read_states] == [(b"a", 1)]


def test_read_waits_for_commit_in_current_term():
    """Thesis §6.4 step 1: a new leader answers reads only after an entry of its own term (its
    no-op) commits, since before that it may not know the latest commit index."""
    n = make_leader(make(1, (1, 2, 3), log_terms=(1, 1), term=1, pre_vote=False))
    flush(n)
    n.read_index(b"r")
    assert not msgs_of(flush(n), HB)  # held back
    n.step(Message(MsgType.APP_RESP, to=1, frm=2, term=2, index=3))  # the no-op commits
    assert n.raft.log.committed == 3
    hbs = msgs_of(flush(n), HB)
    assert hbs and all(m.context == b"r" for m in hbs)
    n.step(Message(HB_RESP, to=1, frm=3, term=2, context=b"r"))
    assert [(r.request_ctx, r.index) for r in n.ready().read_states] == [(b"r", 3)]


def test_many_reads_batched_on_one_heartbeat_round():
    """Thesis §6.4 (batching): reads queued before a confirmed round are all answered by it."""
    net = Net([1, 2, 3])
    net.elect(1)
    # Only heartbeats carrying the last read's context are answered.
    net.drop = lambda m: m.type == HB and m.context != b"r3"
    for c in (b"r1", b"r2", b"r3"):
        net.nodes[1].read_index(c)
        net.pump()
    assert [c for c, _ in ctxs(net, 1)] == [b"r1", b"r2", b"r3"]
    hbs = [m for m in net.sent if m.type == HB and m.context == b"r3"]
    assert len(hbs) == 2  # one round for all three


def test_periodic_heartbeat_confirms_all_pending_reads():
    """Thesis §6.4 (batching): a periodic heartbeat carries the newest pending read's context,
    so one round confirms everything queued."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.drop = lambda m: m.type == HB
    for c in (b"a", b"b", b"c"):
        net.nodes[1].read_index(c)
    net.pump()
    assert ctxs(net, 1) == []
    net.drop = None
    net.tick([1])
    assert [c for c, _ in ctxs(net, 1)] == [b"a", b"b", b"c"]


def test_follower_read_is_forwarded_to_leader():
    """Thesis §6.4: a follower asks the leader for the read index, then serves the read once
    it has applied that index."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.propose(1, b"x")
    commit = net.raft(1).log.committed
    net.nodes[2].read_index(b"f")
    net.pump()
    fwd = [m for m in net.sent if m.type == MsgType.READ_INDEX]
    assert [(m.frm, m.to) for m in fwd] == [(2, 1)]
    assert ctxs(net, 2) == [(b"f", commit)]
    assert ctxs(net, 1) == []
    assert net.raft(2).log.applied >= commit


def test_follower_read_without_leader_is_dropped():
    """Thesis §6.4: with no known leader the request is dropped (the client retries)."""
    n = make(2, (1, 2, 3))
    n.read_index(b"x")
    assert not flush(n) and not n.raft.read_states


def test_single_voter_answers_read_at_once():
    """Thesis §6.4: a one-voter leader is trivially still leader."""
    n = make(1, (1,))
    n.campaign()
    flush(n)
    n.read_index(b"s")
    assert [(r.request_ctx, r.index) for r in n.ready().read_states] == [(b"s", 1)]


def test_lease_based_read_needs_no_round():
    """Thesis §6.4.1: with read_only_lease_based (and CheckQuorum) the leader answers from its
    lease, without a heartbeat round."""
    net = Net([1, 2, 3], read_only_lease_based=True)
    net.elect(1)
    net.isolate(1)
    net.nodes[1].read_index(b"l")
    net.pump()
    assert ctxs(net, 1) == [(b"l", net.raft(1).log.committed)]


def test_learner_ack_does_not_confirm_read():
    """Thesis §6.4: only voters' heartbeat acks make the quorum."""
    net = Net([1, 2, 3], learners=[4])
    net.elect(1)
    net.cut(1, 2)
    net.cut(1, 3)
    net.nodes[1].read_index(b"q")
    net.pump()
    assert ctxs(net, 1) == []
    net.heal()
    net.tick([1])
    assert [c for c, _ in ctxs(net, 1)] == [b"q"]


def test_pending_reads_dropped_when_leader_steps_down():
    """Thesis §6.4: a deposed leader must not answer reads queued while it led."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.nodes[1].read_index(b"old")
    net.pump()
    net.tick([2, 3], n=40)
    net.heal()
    net.tick(n=3)
    assert net.leader() in (2, 3)
    assert ctxs(net, 1) == []
