"""Replication flow control: Progress states (probe / replicate / snapshot), the Inflights
window, the message size limit and the leader's uncommitted-bytes limit (thesis §10.2.1 and
etcd-io/raft's flow control)."""
from __future__ import annotations

import pytest

from raftkv.raft import Message, MsgType
from raftkv.raft.errors import ProposalDroppedError
from raftkv.raft.progress import Inflights, Progress, ProgressState
from tests.unit.raft.conftest import Net, flush, make, make_leader, msgs_of

APP, APP_RESP = MsgType.APP, MsgType.APP_RESP


def leader(voters=(1, 2), ack=True, **kw):
    """A leader of term 1 whose followers have acknowledged its no-op (replicate state)."""
    kw.setdefault("pre_vote", False)
    n = make_leader(make(1, voters, **kw))
    flush(n)
    if ack:
        for v in voters:
            if v != 1:
                n.step(Message(APP_RESP, to=1, frm=v, term=1, index=1))
        flush(n)
    return n


def apps(msgs, to=2):
    return msgs_of(msgs, APP, to)


# ---------------------------------------------------------------- Inflights unit tests
def test_inflights_add_free_full():
    """Inflights: a FIFO window of last indexes; free_le releases a prefix."""
    w = Inflights(3)
    for i in (5, 7, 9):
        assert not w.full()
        w.add(i, 10)
    assert w.full() and len(w) == 3
    w.free_le(6)
    assert len(w) == 2 and not w.full()
    w.free_le(4)
    assert len(w) == 2
    w.free_le(100)
    assert len(w) == 0


def test_inflights_bytes_limit():
    """Inflights: the window is also full once bytes_max bytes are in flight."""
    w = Inflights(10, bytes_max=100)
    w.add(1, 60)
    assert not w.full()
    w.add(2, 40)
    assert w.full()
    w.free_le(1)
    assert not w.full()


def test_inflights_refuse_add_when_full_and_non_increasing():
    w = Inflights(1)
    w.add(3, 0)
    with pytest.raises(AssertionError):
        w.add(4, 0)
    w = Inflights(2)
    w.add(3, 0)
    with pytest.raises(AssertionError):
        w.add(3, 0)


# ---------------------------------------------------------------- Progress unit tests
def test_progress_probe_sends_one_then_pauses():
    """Probe: one append at a time until the follower answers."""
    pr = Progress(5, 10)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(7, 0)
    assert pr.is_paused()
    assert pr.maybe_update(7)
    assert not pr.is_paused() and pr.match == 7 and pr.next == 8


def test_progress_replicate_optimistic_next():
    """Replicate: next advances optimistically as appends are sent."""
    pr = Progress(5, 2)
    pr.match = 4
    pr.become_replicate()
    pr.sent_entries(6, 0)
    assert pr.next == 7 and not pr.is_paused()
    pr.sent_entries(8, 0)
    assert pr.next == 9 and pr.is_paused()  # window of 2 full


@pytest.mark.parametrize("state,rejected,hint,ok,next_", [
    (ProgressState.REPLICATE, 5, 5, False, 9),  # stale: rejected <= match
    (ProgressState.REPLICATE, 7, 7, True, 6),  # back to match + 1
    (ProgressState.PROBE, 7, 3, False, 9),  # not the probe in flight (next - 1 = 8)
    (ProgressState.PROBE, 8, 6, True, 7),  # hint + 1
    (ProgressState.PROBE, 8, 2, True, 6),  # but never below match + 1
])
def test_progress_maybe_decr_to(state, rejected, hint, ok, next_):
    """Progress: a rejection moves next back (fast, using the hint) unless it is stale."""
    pr = Progress(9, 10)
    pr.match = 5
    pr.state = state
    assert pr.maybe_decr_to(rejected, hint) is ok
    assert pr.next == next_


def test_progress_snapshot_state():
    """Snapshot: appends pause until the snapshot is reported; then probe after it."""
    pr = Progress(3, 10)
    pr.become_snapshot(10)
    assert pr.is_paused() and pr.pending_snapshot == 10
    pr.become_probe()
    assert pr.state == ProgressState.PROBE and pr.next == 11


# ---------------------------------------------------------------- leader flow control
def test_probe_follower_receives_one_append_per_heartbeat():
    """Probe: the leader sends a probing follower one append and waits (no streaming)."""
    n = leader(ack=False)
    assert n.raft.prs[2].state == ProgressState.PROBE
    for _ in range(3):
        n.propose(b"x")
    assert not apps(flush(n))  # paused: the first probe is outstanding
    n.tick()  # heartbeat; its response resumes probing
    flush(n)
    n.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=1))
    assert len(apps(flush(n))) == 1


def test_probe_becomes_replicate_on_ack():
    """Probe -> replicate once the follower's acknowledgement shows where its log matches."""
    n = leader(ack=False)
    n.step(Message(APP_RESP, to=1, frm=2, term=1, index=1))
    assert n.raft.prs[2].state == ProgressState.REPLICATE


def test_inflight_window_bounds_pipelining():
    """Replicate: with inflight_msgs_max=2 the leader stops sending after two unacknowledged
    appends and resumes when acknowledgements free the window."""
    n = leader(inflight_msgs_max=2)
    sent = []
    for k in range(5):
        n.propose(b"%d" % k)
        sent += apps(flush(n))
    assert [m.entries[-1].index for m in sent] == [2, 3]
    n.step(Message(APP_RESP, to=1, frm=2, term=1, index=2))
    more = apps(flush(n))
    assert more and more[0].index == 3  # the window moved by one message
    assert len(n.raft.prs[2].inflights) <= 2
    n.step(Message(APP_RESP, to=1, frm=2, term=1, index=3))
    n.step(Message(APP_RESP, to=1, frm=2, term=1, index=6))
    flush(n)
    assert n.raft.prs[2].match == 6


def test_heartbeat_response_with_full_window_sends_only_empty_append():
    """Replicate: a heartbeat response to a leader whose window is full (and with more entries
    waiting) must not overfill the window: it may only send an empty append, whose answer
    shows whether the in-flight appends were lost (as etcd-io/raft does)."""
    n = leader(inflight_msgs_max=2)
    for k in range(3):
        n.propose(b"%d" % k)
    flush(n)
    assert n.raft.prs[2].inflights.full()
    n.tick()
    flush(n)
    n.step(Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=1))
    out = apps(flush(n))
    assert all(not m.entries for m in out)
    assert len(n.raft.prs[2].inflights) == 2


def test_lost_window_recovers_through_heartbeats():
    """Replicate: if every append in a full window is lost, heartbeats still lead the follower
    to catch up (the empty append is rejected or acked, which clears the window)."""
    net = Net([1, 2, 3], inflight_msgs_max=2)
    net.elect(1)
    net.drop = lambda m: m.type == APP and m.to == 2 and m.entries
    for k in range(5):
        net.propose(1, b"%d" % k)
    net.drop = None
    net.tick(n=5)
    assert net.applied[2] == [b"%d" % k for k in range(5)]


def test_msg_bytes_max_limits_append_size():
    """msg_bytes_max: an append carries entries up to the limit (but always at least one)."""
    n = leader(ack=False, msg_bytes_max=100)
    for _ in range(6):
        n.propose(b"x" * 30)  # 55 bytes each with framing
    flush(n)
    n.raft.prs[2].become_replicate()
    n.raft.prs[2].next = 2
    n.raft.send_append(2)
    [m] = apps(flush(n))
    assert len(m.entries) == 1
    n2 = leader(ack=False, msg_bytes_max=1)
    n2.propose(b"x" * 1000)
    flush(n2)
    n2.step(Message(APP_RESP, to=1, frm=2, term=1, index=1))
    [m] = apps(flush(n2))
    assert len(m.entries) == 1 and len(m.entries[0].data) == 1000


def test_msg_bytes_max_in_network():
    """msg_bytes_max: many small entries replicate in several bounded appends."""
    net = Net([1, 2, 3], msg_bytes_max=200)
    net.elect(1)
    net.isolate(2)
    for k in range(20):
        net.propose(1, b"v" * 50)
    net.heal()
    net.tick(n=3)
    big = [m for m in net.sent if m.type == APP and m.to == 2 and m.entries]
    assert big and all(sum(e.size() for e in m.entries) <= 200 for m in big)
    assert len(net.applied[2]) == 20


def test_uncommitted_bytes_max_drops_proposals():
    """uncommitted_bytes_max: the leader refuses proposals (ProposalDroppedError) once too many
    bytes are uncommitted, and accepts again after they commit and are applied."""
    net = Net([1, 2, 3], uncommitted_bytes_max=100)
    net.elect(1)
    net.isolate(1)
    net.propose(1, b"a" * 60)  # the first proposal is always accepted
    net.propose(1, b"b" * 40)
    with pytest.raises(ProposalDroppedError):
        net.propose(1, b"c" * 10)
    net.heal()
    net.tick(n=3)
    assert net.applied[2][:2] == [b"a" * 60, b"b" * 40]
    net.propose(1, b"c" * 10)
    assert net.applied[1][-1] == b"c" * 10


def test_uncommitted_bytes_max_admits_a_large_first_entry():
    """uncommitted_bytes_max: a single entry larger than the limit is accepted when nothing is
    uncommitted (else it could never be proposed)."""
    net = Net([1, 2, 3], uncommitted_bytes_max=10)
    net.elect(1)
    net.propose(1, b"z" * 100)
    assert net.applied[1] == [b"z" * 100]


def test_unreachable_moves_replicate_to_probe():
    """report_unreachable: the leader stops streaming to that follower and probes."""
    n = leader()
    assert n.raft.prs[2].state == ProgressState.REPLICATE
    n.report_unreachable(2)
    assert n.raft.prs[2].state == ProgressState.PROBE


def test_reject_in_replicate_falls_back_to_probe():
    """Replicate: a rejection means the optimistic stream was wrong; back to probe."""
    n = leader()
    n.propose(b"x")
    flush(n)
    n.step(Message(APP_RESP, to=1, frm=2, term=1, index=2, reject=True, reject_hint=1,
                   log_term=1))
    assert n.raft.prs[2].state == ProgressState.PROBE
    [m] = apps(flush(n))
    assert m.index == 1 and [e.index for e in m.entries] == [2]
