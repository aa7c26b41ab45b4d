"""The rules of the Raft paper (Figure 2, §5) as unit tests, in the style of etcd-io/raft's
raft_paper_test.go. Section numbers refer to Ongaro & Ousterhout 2014."""
from __future__ import annotations

import random

import pytest

from raftkv.raft import Config, Entry, HardState, Message, MsgType, RawNode, StateType
from raftkv.raft.types import NONE
from tests.unit.raft.conftest import (
    ELECTION,
    Net,
    ents,
    flush,
    log_terms,
    make,
    make_leader,
    msgs_of,
    new_storage,
    take,
)

APP, APP_RESP, VOTE, VOTE_RESP = MsgType.APP, MsgType.APP_RESP, MsgType.VOTE, MsgType.VOTE_RESP


def follower(mid=1, voters=(1, 2, 3), **kw):
    kw.setdefault("pre_vote", False)
    return make(mid, voters, **kw)


# ---------------------------------------------------------------- §5.1 terms
@pytest.mark.parametrize("state", ["follower", "candidate", "leader"])
def test_higher_term_message_makes_member_follower(state):
    """§5.1: a server that sees a larger term updates its term and reverts to follower."""
    n = follower()
    if state == "candidate":
        n.campaign()
    elif state == "leader":
        make_leader(n)
    term = n.raft.term
    n.step(Message(APP, to=1, frm=2, term=term + 1))
    assert n.raft.state == StateType.FOLLOWER
    assert n.raft.term == term + 1
    assert n.raft.lead == 2
    assert n.raft.vote == NONE


def test_vote_request_with_higher_term_updates_term_without_leader():
    """§5.1: a vote request of a higher term moves the follower to that term, no leader known."""
    n = follower(term=1)
    n.step(Message(VOTE, to=1, frm=2, term=5))
    assert (n.raft.term, n.raft.lead, n.raft.vote) == (5, NONE, 2)


@pytest.mark.parametrize("typ", [APP, MsgType.HEARTBEAT, VOTE, MsgType.SNAP])
def test_stale_term_message_is_rejected(typ):
    """§5.1: a request with a stale term is rejected; it changes neither term, log nor vote."""
    n = follower(term=3, log_terms=(1, 2))
    flush(n)
    before = (n.raft.term, n.raft.vote, n.raft.lead, log_terms(n), n.raft.log.committed)
    n.step(Message(typ, to=1, frm=2, term=2, index=2, log_term=2,
                   entries=[Entry(2, 3)], commit=3))
    assert (n.raft.term, n.raft.vote, n.raft.lead, log_terms(n), n.raft.log.committed) == before
    out = take(n)
    # A stale leader is told the new term (so it steps down); nothing else is answered.
    for m in out:
        assert m.term == 3 and m.type == APP_RESP and not m.entries


def test_stale_leader_learns_new_term_from_response():
    """§5.1: a leader that receives a response of a newer term steps down."""
    n = make_leader(follower())
    n.step(Message(APP_RESP, to=1, frm=2, term=n.raft.term + 1))
    assert n.raft.state == StateType.FOLLOWER


# ---------------------------------------------------------------- §5.2 elections
def test_start_as_follower():
    """§5.2: when servers start up, they begin as followers."""
    n = follower()
    assert n.raft.state == StateType.FOLLOWER and n.raft.term == 0


def test_leader_sends_heartbeats_every_heartbeat_interval():
    """§5.2: leaders send periodic heartbeats (empty AppendEntries) to keep authority."""
    n = make_leader(follower(heartbeat_ticks=2))
    flush(n)
    n.tick()
    assert not msgs_of(flush(n), MsgType.HEARTBEAT)
    n.tick()
    hb = msgs_of(flush(n), MsgType.HEARTBEAT)
    assert sorted(m.to for m in hb) == [2, 3]
    assert all(m.term == n.raft.term and not m.entries for m in hb)


@pytest.mark.parametrize("seed", range(40))
def test_randomized_election_timeout_range_and_determinism(seed):
    """§5.2: election timeouts are random in [election_ticks, 2 * election_ticks), drawn from
    the injected rand, so two members built with the same seed draw the same timeouts."""
    a = follower(seed=seed, election_ticks=7)
    b = follower(seed=seed, election_ticks=7)
    for _ in range(5):
        t = a.raft.randomized_election_timeout
        assert 7 <= t < 14
        assert b.raft.randomized_election_timeout == t
        a.raft.reset_randomized_election_timeout()
        b.raft.reset_randomized_election_timeout()


def test_randomized_election_timeout_is_spread():
    """§5.2: randomization spreads timeouts so that split votes are rare."""
    seen = {follower(seed=s).raft.randomized_election_timeout for s in range(200)}
    assert seen == set(range(ELECTION, 2 * ELECTION))


def test_rand_is_the_injected_object():
    """§5.2 (determinism): the core draws only from Config.rand."""
    calls = []

    class Rand:
        def randrange(self, n):
            calls.append(n)
            return n - 1

    node = RawNode(Config(1, new_storage((1, 2, 3)), Rand(), election_ticks=5))
    assert calls and all(c == 5 for c in calls)
    assert node.raft.randomized_election_timeout == 9


@pytest.mark.parametrize("pre_vote", [False, True])
def test_follower_starts_election_exactly_at_timeout(pre_vote):
    """§5.2: a follower that hears nothing for its election timeout starts an election:
    it increments its term, votes for itself and asks every other voter for its vote."""
    n = follower(term=1, pre_vote=pre_vote)
    flush(n)
    timeout = n.raft.randomized_election_timeout
    for _ in range(timeout - 1):
        n.tick()
    assert n.raft.state == StateType.FOLLOWER
    n.tick()
    if pre_vote:
        assert n.raft.state == StateType.PRE_CANDIDATE and n.raft.term == 1
        reqs = msgs_of(take(n), MsgType.PRE_VOTE)
    else:
        assert n.raft.state == StateType.CANDIDATE
        assert (n.raft.term, n.raft.vote) == (2, 1)
        reqs = msgs_of(take(n), VOTE)
    assert sorted(m.to for m in reqs) == [2, 3]
    assert all(m.term == 2 for m in reqs)


def test_leader_heard_resets_election_timer():
    """§5.2: a follower remains follower as long as it receives valid RPCs from a leader."""
    n = follower(term=1)
    for _ in range(5 * ELECTION):
        n.tick()
        n.step(Message(MsgType.HEARTBEAT, to=1, frm=2, term=1))
    assert n.raft.state == StateType.FOLLOWER and n.raft.lead == 2


@pytest.mark.parametrize("size,votes,expect", [
    (1, {}, StateType.LEADER),
    (3, {2: True, 3: True}, StateType.LEADER),
    (3, {2: True}, StateType.LEADER),
    (5, {2: True, 3: True, 4: True, 5: True}, StateType.LEADER),
    (5, {2: True, 3: True}, StateType.LEADER),
    (3, {2: False, 3: False}, StateType.FOLLOWER),
    (5, {2: False, 3: False, 4: False}, StateType.FOLLOWER),
    (5, {2: True, 3: False, 4: False, 5: False}, StateType.FOLLOWER),
    (3, {}, StateType.CANDIDATE),
    (5, {2: True}, StateType.CANDIDATE),
    (5, {2: False, 3: False}, StateType.CANDIDATE),
])
def test_candidate_wins_with_majority(size, votes, expect):
    """§5.2: a candidate wins if it receives votes from a majority of the servers; it loses
    when a majority rejects it; otherwise it waits."""
    n = follower(voters=range(1, size + 1))
    n.campaign()
    for v, granted in votes.items():
        n.step(Message(VOTE_RESP, to=1, frm=v, term=1, reject=not granted))
    assert n.raft.state == expect
    assert n.raft.term == 1


@pytest.mark.parametrize("vote,candidate,granted", [
    (NONE, 2, True), (NONE, 3, True), (2, 2, True), (3, 3, True), (2, 3, False), (3, 2, False),
])
def test_follower_votes_at_most_once_per_term(vote, candidate, granted):
    """§5.2: a follower grants at most one vote per term, first-come-first-served."""
    n = follower(term=1, vote=vote)
    n.step(Message(VOTE, to=1, frm=candidate, term=1))
    [resp] = take(n)
    assert resp.type == VOTE_RESP and resp.to == candidate and resp.term == 1
    assert resp.reject is not granted
    assert n.raft.vote == (candidate if granted else vote)


def test_candidate_steps_down_on_append_from_leader_of_same_term():
    """§5.2: a candidate that hears AppendEntries from a leader of its term becomes follower."""
    n = follower()
    n.campaign()
    n.step(Message(APP, to=1, frm=2, term=1))
    assert n.raft.state == StateType.FOLLOWER and n.raft.lead == 2 and n.raft.term == 1


def test_split_vote_retries_with_new_term():
    """§5.2: when no candidate wins, each times out and starts a new election (term + 1)."""
    n = follower(voters=(1, 2, 3, 4))
    n.campaign()
    n.step(Message(VOTE_RESP, to=1, frm=2, term=1))
    n.step(Message(VOTE_RESP, to=1, frm=3, term=1, reject=True))
    n.step(Message(VOTE_RESP, to=1, frm=4, term=1, reject=True))
    assert n.raft.state == StateType.FOLLOWER  # lost: 2 of 4 cannot make a majority
    take(n)
    for _ in range(2 * ELECTION):
        n.tick()
    assert n.raft.state == StateType.CANDIDATE and n.raft.term == 2
    assert sorted(m.to for m in msgs_of(take(n), VOTE)) == [2, 3, 4]


def test_split_vote_resolves_in_network():
    """§5.2: two simultaneous candidates split the vote; randomized timeouts resolve it."""
    net = Net([1, 2, 3, 4], pre_vote=False)
    # Each candidate keeps its own vote and gets one more: 2 of 4 is no majority.
    net.drop = lambda m: m.type == VOTE and (m.frm, m.to) not in ((1, 3), (2, 4))
    net.nodes[1].campaign()
    net.nodes[2].campaign()
    net.pump()
    assert net.leader() is None
    net.heal()
    for _ in range(4 * ELECTION):
        net.tick()
        if net.leader() is not None:
            break
    lead = net.leader()
    assert lead is not None and net.raft(lead).term >= 2


# ---------------------------------------------------------------- §5.3 replication
def test_leader_starts_replication_with_consistency_check_fields():
    """§5.3: the leader appends the command to its log and issues AppendEntries carrying the
    index and term of the entry preceding the new ones (and its commit index)."""
    n = make_leader(follower())
    flush(n)
    li, lt = n.raft.log.last_index(), n.raft.log.last_term()
    for v in (2, 3):
        n.step(Message(APP_RESP, to=1, frm=v, term=1, index=li))
    flush(n)
    n.propose(b"x")
    apps = msgs_of(flush(n), APP)
    assert sorted(m.to for m in apps) == [2, 3]
    for m in apps:
        assert (m.index, m.log_term, m.commit) == (li, lt, li)
        assert [(e.term, e.index, e.data) for e in m.entries] == [(1, li + 1, b"x")]


def test_leader_commits_once_majority_acknowledges():
    """§5.3: an entry is committed once the leader has replicated it on a majority, and the
    leader then tells followers (commit field of later AppendEntries)."""
    n = make_leader(follower(voters=(1, 2, 3, 4, 5)))
    flush(n)
    n.propose(b"x")
    flush(n)
    li = n.raft.log.last_index()
    n.step(Message(APP_RESP, to=1, frm=2, term=1, index=li))
    assert n.raft.log.committed == 0  # leader + 1 of 5
    flush(n)
    n.step(Message(APP_RESP, to=1, frm=3, term=1, index=li))
    assert n.raft.log.committed == li
    apps = msgs_of(flush(n), APP)
    assert {m.to for m in apps} >= {2, 3} and all(m.commit == li for m in apps)


@pytest.mark.parametrize("size,acks,committed", [
    (1, [], True), (3, [], False), (3, [2], True), (3, [2, 3], True),
    (5, [], False), (5, [2], False), (5, [2, 3], True), (5, [2, 3, 4, 5], True),
])
def test_leader_acknowledge_commit(size, acks, committed):
    """§5.3: commit needs a majority of the voters including the leader."""
    n = make_leader(follower(voters=range(1, size + 1)))
    flush(n)
    n.propose(b"x")
    flush(n)
    li = n.raft.log.last_index()
    for v in acks:
        n.step(Message(APP_RESP, to=1, frm=v, term=1, index=li))
    assert (n.raft.log.committed == li) is committed


def test_leader_commit_covers_preceding_entries():
    """§5.3: committing an entry also commits all preceding entries, incl. earlier leaders'."""
    n = follower(log_terms=(1, 2), term=2)
    make_leader(n)
    flush(n)
    n.propose(b"x")
    flush(n)
    li = n.raft.log.last_index()
    n.step(Message(APP_RESP, to=1, frm=2, term=3, index=li))
    assert n.raft.log.committed == li
    rd = n.ready()
    assert [e.index for e in rd.committed_entries] == list(range(1, li + 1))


def test_follower_commits_what_leader_committed():
    """§5.3: once a follower learns an entry is committed it applies it (in log order)."""
    n = follower(term=1)
    n.step(Message(APP, to=1, frm=2, term=1, index=0, log_term=0,
                   entries=ents(1, 1, 1), commit=2))
    assert n.raft.log.committed == 2
    rd = n.ready()
    assert [e.index for e in rd.committed_entries] == [1, 2]


@pytest.mark.parametrize("index,log_term,reject,hint", [
    (0, 0, False, 0),
    (1, 1, False, 0),
    (2, 2, False, 0),
    (2, 1, True, 1),  # term mismatch at 2: largest index with term <= 1 is 1
    (3, 3, True, 2),  # beyond our log: hint is our last index
])
def test_follower_consistency_check(index, log_term, reject, hint):
    """§5.3: if the follower does not find an entry with the same index and term as the one
    preceding the new entries, it refuses them (and hints where its log can match)."""
    n = follower(log_terms=(1, 2), term=2)
    n.step(Message(APP, to=1, frm=2, term=2, index=index, log_term=log_term))
    [resp] = take(n)
    assert resp.type == APP_RESP and resp.reject is reject
    if reject:
        assert resp.index == index and resp.reject_hint == hint


@pytest.mark.parametrize("index,log_term,new,want", [
    (2, 2, [(3, 3)], [1, 2, 3]),
    (1, 1, [(3, 2), (4, 3)], [1, 3, 4]),  # conflict at 2: suffix replaced
    (0, 0, [(1, 1)], [1, 2]),  # already there: nothing truncated
    (0, 0, [(3, 1)], [3]),  # conflict at 1: everything replaced
])
def test_follower_replaces_conflicting_suffix(index, log_term, new, want):
    """§5.3: an existing entry that conflicts with a new one (same index, different term) is
    deleted with all that follow it; new entries are appended; matching ones are kept."""
    n = follower(log_terms=(1, 2), term=2)
    es = [Entry(term=t, index=index + 1 + k) for k, (t, _) in enumerate(new)]
    n.step(Message(APP, to=1, frm=2, term=3, index=index, log_term=log_term, entries=es))
    assert log_terms(n) == want


FIGURE7_LEADER = (1, 1, 1, 4, 4, 5, 5, 6, 6, 6)
FIGURE7_FOLLOWERS = {
    "a": (1, 1, 1, 4, 4, 5, 5, 6, 6),
    "b": (1, 1, 1, 4),
    "c": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6),
    "d": (1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7),
    "e": (1, 1, 1, 4, 4, 4, 4),
    "f": (1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3),
}


@pytest.mark.parametrize("case", sorted(FIGURE7_FOLLOWERS))
def test_leader_brings_figure7_follower_logs_into_agreement(case):
    """§5.3 / Figure 7: the leader forces followers' logs to duplicate its own (missing entries
    are sent, extraneous and conflicting ones overwritten)."""
    net = Net([], pre_vote=False)
    for mid, terms, t in ((1, FIGURE7_LEADER, 8), (2, FIGURE7_FOLLOWERS[case], 7)):
        s = new_storage((1, 2, 3))
        s.append(ents(*terms))
        s.set_hard_state(HardState(term=t))
        net.add_member(mid, storage=s)
    lead = net.nodes[1]
    lead.campaign()
    lead.step(Message(VOTE_RESP, to=1, frm=3, term=9))  # member 3 exists only as a vote
    net.pump()
    assert net.leader() == 1
    net.tick(n=3)
    assert log_terms(net.nodes[2]) == list(FIGURE7_LEADER) + [9]
    assert net.stores[2].ents[1:] == net.stores[1].ents[1:]


def test_fast_backtracking_skips_a_term_per_round_trip():
    """§5.3 (optimisation): the follower's rejection names the conflicting term's range, so the
    leader skips all conflicting entries of a term in one round trip instead of one index."""
    net = Net([], pre_vote=False)
    for mid, terms, t in ((1, (1,) + (3,) * 50, 3), (2, (1,) + (2,) * 50, 3)):
        s = new_storage((1, 2, 3))
        s.append(ents(*terms))
        s.set_hard_state(HardState(term=t, commit=1))
        net.add_member(mid, storage=s)
    lead = net.nodes[1]
    lead.campaign()
    lead.step(Message(VOTE_RESP, to=1, frm=3, term=4))
    net.pump()
    rejects = [m for m in net.sent if m.type == APP_RESP and m.reject]
    assert 1 <= len(rejects) <= 2, [(m.index, m.reject_hint) for m in rejects]
    assert log_terms(net.nodes[2]) == [1] + [3] * 50 + [4]


def test_follower_with_longer_log_hints_its_last_index():
    """§5.3 (optimisation): a follower missing entries rejects with its last index, so the
    leader does not walk back one entry at a time."""
    n = follower(log_terms=(1, 1), term=1)
    n.step(Message(APP, to=1, frm=2, term=1, index=100, log_term=1))
    [resp] = take(n)
    assert resp.reject and resp.reject_hint == 2


# ---------------------------------------------------------------- §5.4 safety
@pytest.mark.parametrize("cand_index,cand_term,granted", [
    (2, 2, True), (3, 2, True), (1, 2, False),  # same last term: longer or equal log wins
    (1, 3, True), (5, 3, True),  # higher last term wins regardless of length
    (2, 1, False), (9, 1, False),  # lower last term loses regardless of length
])
def test_vote_only_for_up_to_date_log(cand_index, cand_term, granted):
    """§5.4.1: a voter denies its vote if its own log is more up-to-date than the candidate's
    (compare last terms, then lengths)."""
    n = follower(log_terms=(1, 2), term=2)
    n.step(Message(VOTE, to=1, frm=2, term=3, index=cand_index, log_term=cand_term))
    [resp] = take(n)
    assert resp.reject is not granted
    assert n.raft.term == 3  # the term is adopted either way
    assert n.raft.vote == (2 if granted else NONE)


def test_new_leader_appends_noop_of_its_term():
    """§5.4.2 / §8: a new leader appends an empty entry of its own term at once."""
    n = follower(log_terms=(1, 1), term=1)
    make_leader(n)
    last = n.raft.log.unstable.entries[-1]
    assert (last.index, last.term, last.data) == (3, 2, b"")


@pytest.mark.parametrize("acked,committed", [(1, 0), (2, 0), (3, 3)])
def test_leader_only_commits_entries_of_its_term_by_counting(acked, committed):
    """§5.4.2 / Figure 8: a leader never commits an entry of an earlier term by counting
    replicas; only an entry of its own term commits (and with it the earlier ones)."""
    n = follower(log_terms=(1, 2), term=2)
    make_leader(n)  # term 3, no-op at index 3
    flush(n)
    n.step(Message(APP_RESP, to=1, frm=2, term=3, index=acked))
    assert n.raft.log.committed == committed


def test_figure8_old_term_entry_on_majority_is_not_committed():
    """§5.4.2 / Figure 8 (c): S1 (term 4) replicates its term-2 entry to a majority, yet it is
    not committed; S5 may still be elected and overwrite it, which is safe. Once S1 commits an
    entry of its own term (e), the term-2 entry is committed and S5 can no longer win."""
    logs = {1: (1, 2), 2: (1, 2), 3: (1,), 4: (1,), 5: (1, 3)}
    net = Net([], pre_vote=False, check_quorum=False, msg_bytes_max=1)  # one entry per APP
    for mid, terms in logs.items():
        s = new_storage(range(1, 6))
        s.append(ents(*terms))
        s.set_hard_state(HardState(term=3, commit=1))
        net.add_member(mid, storage=s)
    # (c) S1 leads term 4 but only S2 and S3 hear it; its AppendEntries for the no-op (index 3)
    # never arrive, only the repair of S3's log (index 2, term 2) does.
    net.cut(1, 4)
    net.cut(1, 5)
    probes = []

    def drop(m):
        if m.type != APP or not any(e.term == 4 for e in m.entries):
            return False
        if m.to == 3 and not probes:
            probes.append(m)  # the first probe reaches S3 and is refused (it lacks index 2)
            return False
        return True
    net.drop = drop
    net.elect(1)
    assert log_terms(net.nodes[3])[:2] == [1, 2]
    assert net.raft(1).log.committed == 1  # term-2 entry on 3 of 5, still not committed
    # (d) S5 is elected by S2, S3, S4 and overwrites index 2: nothing committed is lost.
    net.heal()
    net.isolate(1)
    net.nodes[5].campaign()  # term 4: S2, S3 already voted for S1
    net.pump()
    net.elect(5)  # term 5
    net.tick(n=2)
    for mid in (2, 3, 4, 5):
        assert log_terms(net.nodes[mid])[1] == 3


def test_committed_old_term_entry_survives_once_current_term_entry_commits():
    """§5.4.2 / Figure 8 (e): once the leader commits an entry of its term on a majority, the
    earlier entries commit too, and a member lacking them can no longer be elected."""
    logs = {1: (1, 2), 2: (1, 2), 3: (1,), 4: (1,), 5: (1, 3)}
    net = Net([], pre_vote=False, check_quorum=False)
    for mid, terms in logs.items():
        s = new_storage(range(1, 6))
        s.append(ents(*terms))
        s.set_hard_state(HardState(term=3, commit=1))
        net.add_member(mid, storage=s)
    net.cut(1, 4)
    net.cut(1, 5)
    net.elect(1)
    assert net.raft(1).log.committed == 3
    net.heal()
    net.isolate(1)
    net.nodes[5].campaign()
    net.pump()
    assert net.raft(5).state != StateType.LEADER
    for mid in (2, 3):
        assert log_terms(net.nodes[mid])[:3] == [1, 2, 4]


def test_config_seeded_rand_reproduces_elections():
    """§5.2 (determinism): the same seeds give the same election outcome and terms."""
    def run():
        net = Net([1, 2, 3])
        net.tick(n=3 * ELECTION)
        return net.leader(), {m: net.raft(m).term for m in net.nodes}
    assert run() == run()
    assert run()[0] is not None
    random.seed(1234)  # global randomness must not matter
    assert run() == run()
