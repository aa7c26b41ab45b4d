"""--experimental-enable-lease-checkpoint on real member processes: with it (and a 1 s
checkpoint interval, RAFTKV_LEASE_CHECKPOINT_INTERVAL_S), a 10 s lease expires about on time
although the leader moves three times during its life; without it, each new leader gives the
lease its full TTL again, so it outlives the last leader change by the whole TTL.

The bounds hold however slow the machine is (2 noisy cores): every time is measured on the
side that makes the bound safe. The grant is timed from before it is sent (its deadline is
set after that), a leader change from before the move is sent (the new leader starts the
lease after that) and an answer's TTL as read no later than the answer arrived. So "never
before its TTL" needs no slack, and "clearly earlier than without" compares the checkpointed
lease's expiry with the earliest moment a full TTL from the last leader change would allow.
Elections other than the ones the test makes would only add leader changes: a 3 s election
timeout keeps a loaded machine from holding them, and every leader change is checked by the
term, not by which member won."""
from __future__ import annotations

import time

import pytest

from raftkv.api import wire

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

TTL = 10
CHANGES_AT = (2.5, 5.0, 7.5)  # seconds after the grant
INTERVAL_S = "1"
# Longer than the cluster tests' 500 ms (its later flags win): a loaded machine must not hold
# elections of its own (the lease's minimum TTL, 1.5 election timeouts, stays below TTL).
SLOW_ELECTIONS = ["--heartbeat-interval", "100", "--election-timeout", "3000"]
GIVE_UP_S = 60.0  # after the grant: no lease lives that long here
POLL_S = 0.2
RETRY_S = 10.0
# The checkpointed lease must expire at least this long before the earliest moment the lease
# could have expired had the last leader change renewed its full TTL.
CLEARLY_S = 1.0
TIME_TO_LIVE_TRUNCATION_S = 1  # TimeToLive's TTL is whole seconds, truncated (as etcd's)


def _retry(fn, timeout_s=RETRY_S):
    """fn() until it answers (leader changes make some calls fail for a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except (wire.RaftkvError, ConnectionError, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _ttl(c, lid):
    return _retry(lambda: c.call("lease_timetolive", {"ID": lid}))["TTL"]


def _move_leader(h):
    """Move leadership from the current leader to the next member, until the members agree
    on a leader of a later term (another member than the target may win: any new leader
    starts the lease afresh). Returns the time before the first move was sent."""
    leader = h.leader()
    term = _retry(lambda: h.status(leader)["raftTerm"])
    ids = {m.name: _retry(lambda m=m: h.status(m)["header"]["member_id"]) for m in h.members}
    names = [m.name for m in h.members]
    target = h.members[(names.index(leader.name) + 1) % len(names)]
    c = h.client([leader])
    sent = time.monotonic()
    deadline = sent + RETRY_S
    while True:
        try:
            c.call("move_leader", {"targetID": ids[target.name]})
        except (wire.RaftkvError, ConnectionError, OSError, TimeoutError):
            pass  # the outcome is what the members agree on next
        now = h.leader()
        if _retry(lambda: h.status(now)["raftTerm"]) > term:
            return sent
        assert time.monotonic() < deadline, f"the leader stayed {leader.name} in term {term}"
        time.sleep(0.05)


@pytest.mark.parametrize("checkpoint", [True, False], ids=["with-flag", "without-flag"])
def test_lease_ttl_across_leader_changes(make_cluster, monkeypatch, checkpoint):
    monkeypatch.setenv("RAFTKV_LEASE_CHECKPOINT_INTERVAL_S", INTERVAL_S)
    h = make_cluster(3, extra_args=SLOW_ELECTIONS + (
        ["--experimental-enable-lease-checkpoint"] if checkpoint else []))
    c = h.client()
    t0 = time.monotonic()  # before the grant is sent: its deadline is set later
    lid = c.call("lease_grant", {"TTL": TTL})["ID"]
    granted = time.monotonic() - t0
    _retry(lambda: c.call("put", {"key": b"held", "value": b"v", "lease": lid}))
    changes = []  # (move sent, TimeToLive answered, the TTL it gave), seconds since t0
    for at in CHANGES_AT:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        sent = _move_leader(h) - t0
        ttl = _ttl(c, lid)
        changes.append((round(sent, 2), round(time.monotonic() - t0, 2), ttl))
    last_sent = changes[-1][0]
    expired_at = None
    while time.monotonic() - t0 < GIVE_UP_S:
        if _ttl(c, lid) == -1:
            expired_at = time.monotonic() - t0  # no earlier than the expiry
            break
        time.sleep(POLL_S)
    report = (f"times in s since the grant was sent (granted after {granted:.2f}): leader "
              f"changes (move sent, TTL answered, TTL) {changes}, expired by "
              f"{expired_at if expired_at is None else round(expired_at, 2)}")
    assert expired_at is not None, f"lease alive after {GIVE_UP_S}s: {report}"
    assert _retry(lambda: c.call("range", {"key": b"held"}))["kvs"] == []
    # Never before its TTL (a new leader starts a lease with at least what it had left).
    assert expired_at >= TTL, report
    # A new leader that gave the lease its full TTL started it after the move was sent, so an
    # answer's TTL is then at least TTL - (answered - sent) - truncation.
    full_ttl_floor = [TTL - (answered - sent) - TIME_TO_LIVE_TRUNCATION_S
                      for sent, answered, _ in changes]
    if checkpoint:
        # Each new leader after the first resumed from the last checkpoint: below what a full
        # TTL would have shown (at the first change the two are too close to tell apart)...
        for (_, _, ttl), floor in list(zip(changes, full_ttl_floor))[1:]:
            assert ttl < floor, f"TTL {ttl} not below a full TTL's {floor:.2f}; {report}"
        # ...so it expired clearly before a full TTL after the last change would allow.
        assert expired_at <= last_sent + TTL - CLEARLY_S, report
    else:
        # Each new leader restarted it from its full TTL...
        for (_, _, ttl), floor in zip(changes, full_ttl_floor):
            assert ttl >= floor, f"TTL {ttl} below a full TTL's {floor:.2f}; {report}"
        # ...so it lived a full TTL after the last change.
        assert expired_at >= last_sent + TTL, report
