"""PreVote (thesis §9.6), CheckQuorum (thesis §6.2) and leader stickiness (thesis §4.2.3)."""
from __future__ import annotations

from raftkv.raft import Message, MsgType, StateType
from raftkv.raft.types import NONE
from tests.unit.raft.conftest import ELECTION, Net, flush, make, msgs_of, take


def test_partitioned_member_rejoining_does_not_disrupt_with_prevote():
    """Thesis §9.6: a member partitioned away keeps failing pre-votes without bumping its
    term, so when it rejoins the leader stays and the term is unchanged."""
    net = Net([1, 2, 3])
    net.elect(1)
    term = net.raft(1).term
    net.isolate(3)
    net.tick(n=10 * ELECTION)
    assert net.raft(3).term == term
    assert net.raft(3).state in (StateType.PRE_CANDIDATE, StateType.FOLLOWER)
    net.heal()
    net.tick(n=3)
    assert net.leader() == 1
    assert {net.raft(m).term for m in (1, 2, 3)} == {term}
    net.propose(1, b"x")
    assert net.applied[3] == [b"x"]


def test_without_prevote_rejoining_member_disrupts_leader():
    """Thesis §9.6 (contrast): without PreVote the isolated member's term grows, and on rejoin
    its larger term forces the leader to step down."""
    net = Net([1, 2, 3], pre_vote=False)
    net.elect(1)
    term = net.raft(1).term
    net.isolate(3)
    net.tick(n=3 * ELECTION)
    assert net.raft(3).term > term
    net.heal()
    net.tick(n=3)
    assert net.raft(1).term > term


def test_prevote_changes_no_term_or_vote():
    """Thesis §9.6: granting a pre-vote changes neither the voter's term nor its vote."""
    n = make(1, (1, 2, 3), term=2, vote=3)
    flush(n)
    n.step(Message(MsgType.PRE_VOTE, to=1, frm=2, term=3, index=0, log_term=0))
    [resp] = take(n)
    assert resp.type == MsgType.PRE_VOTE_RESP and not resp.reject and resp.term == 3
    assert (n.raft.term, n.raft.vote) == (2, 3)


def test_prevote_refused_for_stale_log():
    """Thesis §9.6: a pre-vote is granted only if the candidate's log is up to date (§5.4.1)."""
    n = make(1, (1, 2, 3), log_terms=(1, 2), term=2)
    flush(n)
    n.step(Message(MsgType.PRE_VOTE, to=1, frm=2, term=3, index=1, log_term=1))
    [resp] = take(n)
    assert resp.reject and n.raft.term == 2


def test_precandidate_becomes_candidate_after_prevote_majority():
    """Thesis §9.6: only after a majority of pre-votes does a member increment its term."""
    n = make(1, (1, 2, 3), term=4)
    flush(n)
    n.campaign()
    assert n.raft.state == StateType.PRE_CANDIDATE and n.raft.term == 4
    pre = msgs_of(flush(n), MsgType.PRE_VOTE)
    assert sorted(m.to for m in pre) == [2, 3] and all(m.term == 5 for m in pre)
    n.step(Message(MsgType.PRE_VOTE_RESP, to=1, frm=2, term=5))
    assert n.raft.state == StateType.CANDIDATE and n.raft.term == 5 and n.raft.vote == 1
    assert sorted(m.to for m in msgs_of(flush(n), MsgType.VOTE)) == [2, 3]


def test_precandidate_falls_back_when_prevote_lost():
    """Thesis §9.6: a lost pre-vote leaves the member a follower at its old term."""
    n = make(1, (1, 2, 3), term=4)
    flush(n)
    n.campaign()
    for v in (2, 3):
        n.step(Message(MsgType.PRE_VOTE_RESP, to=1, frm=v, term=4, reject=True))
    assert n.raft.state == StateType.FOLLOWER and n.raft.term == 4


def test_prevote_rejection_with_higher_term_updates_term():
    """§5.1 within PreVote: a rejection carrying a newer term still teaches that term."""
    n = make(1, (1, 2, 3), term=4)
    flush(n)
    n.campaign()
    n.step(Message(MsgType.PRE_VOTE_RESP, to=1, frm=2, term=7, reject=True))
    assert n.raft.state == StateType.FOLLOWER and n.raft.term == 7


# ---------------------------------------------------------------- CheckQuorum
def test_isolated_leader_steps_down_after_election_timeout():
    """Thesis §6.2: a leader that does not hear from a quorum for an election timeout steps
    down (so clients can find the real leader)."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.tick([1], n=ELECTION - 1)
    assert net.raft(1).state == StateType.LEADER
    net.tick([1], n=ELECTION + 1)
    assert net.raft(1).state == StateType.FOLLOWER
    assert net.raft(1).lead == NONE


def test_leader_hearing_quorum_stays():
    """Thesis §6.2: responses from a quorum keep the leader in office."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.tick(n=5 * ELECTION)
    assert net.raft(1).state == StateType.LEADER


def test_without_check_quorum_isolated_leader_stays():
    """Thesis §6.2 (contrast): without CheckQuorum an isolated leader never notices."""
    net = Net([1, 2, 3], check_quorum=False)
    net.elect(1)
    net.isolate(1)
    net.tick([1], n=5 * ELECTION)
    assert net.raft(1).state == StateType.LEADER


def test_follower_in_lease_ignores_vote_request():
    """Thesis §4.2.3 (leader stickiness): a follower that heard from its leader within the
    election timeout ignores a vote request of a higher term (no term change)."""
    n = make(1, (1, 2, 3), term=2, pre_vote=False)
    n.step(Message(MsgType.HEARTBEAT, to=1, frm=2, term=2))
    flush(n)
    n.step(Message(MsgType.VOTE, to=1, frm=3, term=3, index=9, log_term=9))
    assert n.raft.term == 2 and not take(n)
    n.raft.randomized_election_timeout = 2 * ELECTION  # no campaign of our own meanwhile
    for _ in range(ELECTION):  # the lease runs out
        n.tick()
    n.step(Message(MsgType.VOTE, to=1, frm=3, term=3, index=9, log_term=9))
    assert n.raft.term == 3 and n.raft.vote == 3


def test_new_leader_elected_after_old_isolated():
    """§5.2 + thesis §6.2: the majority side elects a new leader; the old one steps down and
    rejoins as follower of the new term."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.tick(n=4 * ELECTION)
    lead = net.leader()
    assert lead in (2, 3)
    net.heal()
    net.tick(n=3)
    assert net.raft(1).state == StateType.FOLLOWER
    assert net.raft(1).lead == lead
