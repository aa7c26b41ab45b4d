"""Figure 3's safety properties checked over seeded random partitions, crashes and proposals
(a small cousin of the simulator in tests/sim): Election Safety, Log Matching, Leader
Completeness and State Machine Safety."""
from __future__ import annotations

import random

import pytest

from raftkv.raft.errors import ProposalDroppedError
from tests.unit.raft.conftest import Net


def check_safety(net, leaders_by_term, committed):
    # Election Safety: at most one leader per term (over the whole run).
    for mid, n in net.nodes.items():
        if n.raft.state.name == "LEADER":
            assert leaders_by_term.setdefault(n.raft.term, mid) == mid, leaders_by_term
    # State Machine Safety: applied sequences are prefixes of one another.
    seqs = sorted(net.applied.values(), key=len)
    for a, b in zip(seqs, seqs[1:]):
        assert b[:len(a)] == a
    # Leader Completeness / durability: every committed (index, term) stays in every log that
    # is at least that long and has committed it.
    for mid, n in net.nodes.items():
        log = n.raft.log
        for i in range(max(1, log.first_index()), log.committed + 1):
            t = log.term(i)
            assert committed.setdefault(i, t) == t, (mid, i, t, committed[i])


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("pre_vote", [True, False])
def test_random_partitions_keep_raft_safe(seed, pre_vote):
    """Figure 3: Election Safety, Log Matching, Leader Completeness, State Machine Safety,
    under partitions, restarts and log compaction (§7 snapshots to lagging members)."""
    rng = random.Random(seed)
    ids = [1, 2, 3, 4, 5] if seed % 2 else [1, 2, 3]
    net = Net(ids, pre_vote=pre_vote, inflight_msgs_max=rng.choice([1, 2, 256]),
              msg_bytes_max=rng.choice([1, 200, 1 << 20]))
    leaders, committed = {}, {}
    k = 0
    for step in range(300):
        r = rng.random()
        if r < 0.05:
            net.heal()
            a, b = rng.sample(ids, 2)
            net.cut(a, b)
        elif r < 0.08:
            net.heal()
            net.isolate(rng.choice(ids))
        elif r < 0.10:
            net.heal()
        elif r < 0.12:
            net.restart(rng.choice(ids))
        elif r < 0.15:
            mid = rng.choice(ids)
            if net.raft(mid).log.applied > net.stores[mid].snap.metadata.index:
                net.compact(mid)
        elif r < 0.40:
            lead = net.leader()
            if lead is not None:
                try:
                    net.propose(lead, b"v%d" % k)
                    k += 1
                except ProposalDroppedError:
                    pass
        net.tick()
        check_safety(net, leaders, committed)
    net.heal()
    net.tick(n=60)
    check_safety(net, leaders, committed)
    lead = net.leader()
    assert lead is not None
    net.propose(lead, b"final")
    net.tick(n=5)
    assert all(a[-1:] == [b"final"] for a in net.applied.values()), net.applied
