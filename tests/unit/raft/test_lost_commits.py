"""A quorum whose logs lost committed entries (damaged data dirs: an older store and a cut WAL
tail on two of three members) elects a leader that lacks entries the third member saw
committed. Raft assumes no such loss; the core must still neither crash nor count that member
as holding entries it does not hold, and that member must not follow a log that contradicts
entries it counted as committed (found with real processes: the new leader took the member's
commit index as its match, past its own log, and its next append raised UnavailableError, so
each damaged member that won an election died and the cluster was left without a leader)."""
from __future__ import annotations

import pytest

from raftkv.raft import HardState, Message, MsgType, StateType
from raftkv.raft.errors import LogDivergedError
from tests.unit.raft.conftest import Net, ents, flush, make, msgs_of, new_storage


def _lost_commits_net():
    """Members 1 and 3 hold the log to index 6 (commit 5): their copies of entries 7..10, all
    committed, are gone. Member 2 holds 1..10 and counted them committed. 1 is elected by 3
    while 2 is cut off, so 1's log ends with its no-op at 7 (term 3)."""
    net = Net([])
    for mid, last, commit in ((1, 6, 5), (2, 10, 10), (3, 6, 5)):
        s = new_storage((1, 2, 3))
        s.append(ents(*([1] * 3 + [2] * (last - 3))))
        s.set_hard_state(HardState(term=2, vote=0, commit=commit))
        net.add_member(mid, storage=s)
    net.isolate(2)
    net.elect(1)
    assert (net.raft(1).log.last_index(), net.raft(1).log.last_term()) == (7, 3)
    net.heal()
    return net


def test_leader_never_counts_a_follower_beyond_its_own_log():
    """An acknowledgement past the leader's last index (the follower's commit index) is
    ignored: before, match became 10 on a log ending at 7, and the next append raised
    UnavailableError (the member's Raft loop died)."""
    net = _lost_commits_net()
    leader = net.nodes[1]
    r = leader.raft
    leader.step(Message(MsgType.APP_RESP, to=1, frm=2, term=r.term, index=10))
    assert r.prs[2].match == 0
    leader.propose(b"x")  # appends to every follower: 2's next is still inside the log
    net.drop = lambda m: m.to == 2  # 2 would stop (next test)
    net.pump()
    net.tick(n=3)
    assert r.state == StateType.LEADER and r.prs[2].match == 0
    assert r.log.committed == r.log.last_index() == 8  # counted on 1 and 3 alone
    assert [e.term for e in net.stores[3].ents[7:9]] == [3, 3]


def test_follower_refuses_a_leader_that_lacks_its_committed_entries():
    """The leader's first append to 2 (prev 6, entry 7 of term 3) is below 2's commit index
    and contradicts its committed entry 7 (term 2): LogDivergedError, and 2 answers nothing
    (before, it answered "I hold 10")."""
    net = _lost_commits_net()
    app = msgs_of(net.sent, MsgType.APP, to=2)[0]
    assert (app.index, [(e.index, e.term) for e in app.entries]) == (6, [(7, 3)])
    follower = net.nodes[2]
    with pytest.raises(LogDivergedError) as err:
        follower.step(app)
    e = err.value
    assert (e.leader, e.term, e.index, e.log_term, e.leader_log_term, e.committed) == \
        (1, 3, 7, 2, 3, 10)
    assert not follower.raft.msgs
    assert follower.raft.log.last_index() == 10 and follower.raft.log.committed == 10


def test_a_probe_whose_prev_entry_contradicts_a_committed_one_is_refused():
    n = make(2, (1, 2, 3), log_terms=(1, 1, 2, 2), term=2, commit=4)
    with pytest.raises(LogDivergedError) as err:
        n.step(Message(MsgType.APP, to=2, frm=1, term=3, index=3, log_term=3))
    assert (err.value.index, err.value.log_term, err.value.leader_log_term) == (3, 2, 3)


@pytest.mark.parametrize("index, terms", [(1, [1, 2, 2]), (2, [2]), (0, [1]), (3, [2, 2, 3])])
def test_an_append_below_the_commit_index_that_agrees_is_acknowledged(index, terms):
    """A duplicate or late append below the commit index whose entries match (what every
    append is when no committed entry was lost) is answered with the commit index, as
    before; entries past the commit index are not looked at here."""
    n = make(2, (1, 2, 3), log_terms=(1, 1, 2, 2), term=3, commit=4)
    start = index + 1
    n.step(Message(MsgType.APP, to=2, frm=1, term=3, index=index,
                   log_term=[0, 1, 1, 2, 2][index], entries=ents(*terms, start=start),
                   commit=4))
    [resp] = flush(n)
    assert resp.type == MsgType.APP_RESP and not resp.reject and resp.index == 4
