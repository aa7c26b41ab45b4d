"""Leadership transfer (thesis §3.10): catch the target up, then TimeoutNow."""
from __future__ import annotations

import pytest

from raftkv.raft import MsgType, StateType
from raftkv.raft.errors import ProposalDroppedError
from tests.unit.raft.conftest import ELECTION, Net


def sent(net, typ):
    return [m for m in net.sent if m.type == typ]


def test_transfer_to_up_to_date_follower():
    """Thesis §3.10: an up-to-date target gets TimeoutNow at once, campaigns without waiting
    for its timer (and without PreVote) and wins in the next term."""
    net = Net([1, 2, 3])
    net.elect(1)
    term = net.raft(1).term
    net.nodes[1].transfer_leader(2)
    net.pump()
    assert [(m.frm, m.to) for m in sent(net, MsgType.TIMEOUT_NOW)] == [(1, 2)]
    assert net.leader() == 2 and net.raft(2).term == term + 1
    assert net.raft(1).state == StateType.FOLLOWER and net.raft(1).lead == 2


def test_transfer_catches_target_up_first():
    """Thesis §3.10 step 2: the leader first brings the target's log up to date; TimeoutNow
    follows its acknowledgement of the last entry."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for k in range(3):
        net.propose(1, b"%d" % k)
    net.heal()
    net.nodes[1].transfer_leader(3)
    net.pump()
    tn = sent(net, MsgType.TIMEOUT_NOW)
    assert [m.to for m in tn] == [3]
    first_tn = net.sent.index(tn[0])
    acks = [m for m in net.sent[:first_tn] if m.type == MsgType.APP_RESP and m.frm == 3]
    assert acks and acks[-1].index == net.raft(1).log.last_index() - 1  # before the new no-op
    assert net.leader() == 3
    assert net.applied[3][:3] == [b"0", b"1", b"2"]


def test_proposals_dropped_during_transfer():
    """Thesis §3.10 step 1: the leader stops accepting client requests during a transfer."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)  # the transfer cannot finish
    net.nodes[1].transfer_leader(3)
    net.pump()
    with pytest.raises(ProposalDroppedError):
        net.nodes[1].propose(b"x")


def test_transfer_aborted_after_election_timeout():
    """Thesis §3.10: if the transfer does not complete within an election timeout the leader
    aborts it and resumes accepting requests."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.nodes[1].transfer_leader(3)
    net.pump()
    net.tick(n=ELECTION)
    assert net.leader() == 1
    assert net.raft(1).lead_transferee == 0
    net.propose(1, b"after")
    assert net.applied[2] == [b"after"]


def test_transfer_target_campaign_overrides_lease():
    """Thesis §3.10 / §4.2.3: the target's TimeoutNow campaign is marked as a transfer, so
    voters that heard the leader recently still grant it."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.tick(n=1)
    net.nodes[1].transfer_leader(2)
    net.pump()
    votes = [m for m in sent(net, MsgType.VOTE) if m.frm == 2]
    assert votes and all(m.context == b"CampaignTransfer" for m in votes)
    assert net.leader() == 2


def test_transfer_requested_at_follower_is_forwarded():
    """Thesis §3.10: a transfer request received by a follower goes to the leader."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.nodes[3].transfer_leader(2)
    net.pump()
    assert net.leader() == 2


def test_transfer_to_self_or_learner_is_ignored():
    """Thesis §3.10: transferring to the leader itself or to a learner does nothing."""
    net = Net([1, 2, 3], learners=[4])
    net.elect(1)
    net.nodes[1].transfer_leader(1)
    net.nodes[4].transfer_leader(4)  # forwarded by the learner
    net.pump()
    assert net.leader() == 1 and net.raft(1).lead_transferee == 0
    net.propose(1, b"ok")
    assert net.applied[4] == [b"ok"]


def test_second_transfer_to_other_target_replaces_first():
    """Thesis §3.10: a new transfer request to a different member restarts the transfer."""
    net = Net([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    net.nodes[1].transfer_leader(3)
    net.pump()
    assert net.raft(1).lead_transferee == 3
    net.nodes[1].transfer_leader(2)
    net.pump()
    assert net.leader() == 2
