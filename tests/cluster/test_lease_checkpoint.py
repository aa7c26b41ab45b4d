"""--experimental-enable-lease-checkpoint on real member processes: with it (and a 1 s
checkpoint interval, RAFTKV_LEASE_CHECKPOINT_INTERVAL_S), a 10 s lease expires about on time
although the leader moves three times during its life; without it, each new leader gives the
lease its full TTL again, so it outlives the last leader change by the whole TTL."""
from __future__ import annotations

import time

import pytest

from raftkv.api import wire

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

TTL = 10
CHANGES_AT = (2.5, 5.0, 7.5)  # seconds after the grant
INTERVAL_S = "1"
GIVE_UP_S = 30.0  # after the grant: no lease lives that long here
POLL_S = 0.2
RETRY_S = 10.0
# How much a checkpointed lease may overshoot its TTL here: each leader change may add up to
# an interval, the rounding up to whole seconds and the new leader's start; then the lease
# loop's turn and our polling. Expected: a second or two.
CHECKPOINT_SLACK_S = len(CHANGES_AT) * 2.5 + 1.5


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
    """Move leadership from the current leader to the next member; returns when every member
    agrees on the new one."""
    leader = h.leader()
    ids = {m.name: h.status(m)["header"]["member_id"] for m in h.members}
    names = [m.name for m in h.members]
    target = h.members[(names.index(leader.name) + 1) % len(names)]
    c = h.client([leader])
    _retry(lambda: c.call("move_leader", {"targetID": ids[target.name]}))
    assert h.leader().name == target.name


@pytest.mark.parametrize("checkpoint", [True, False], ids=["with-flag", "without-flag"])
def test_lease_ttl_across_leader_changes(make_cluster, monkeypatch, checkpoint):
    monkeypatch.setenv("RAFTKV_LEASE_CHECKPOINT_INTERVAL_S", INTERVAL_S)
    h = make_cluster(3, extra_args=["--experimental-enable-lease-checkpoint"]
                     if checkpoint else [])
    c = h.client()
    lid = c.call("lease_grant", {"TTL": TTL})["ID"]
    t0 = time.monotonic()
    _retry(lambda: c.call("put", {"key": b"held", "value": b"v", "lease": lid}))
    after_change = []  # (seconds since the grant, TTL the new leader reports)
    for at in CHANGES_AT:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        _move_leader(h)
        after_change.append((time.monotonic() - t0, _ttl(c, lid)))
    last_change = after_change[-1][0]
    expired_at = None
    while time.monotonic() - t0 < GIVE_UP_S:
        if _ttl(c, lid) == -1:
            expired_at = time.monotonic() - t0
            break
        time.sleep(POLL_S)
    assert expired_at is not None, f"lease alive after {GIVE_UP_S}s: {after_change}"
    assert _retry(lambda: c.call("range", {"key": b"held"}))["kvs"] == []
    report = f"TTL after each change {after_change}, expired at +{expired_at:.1f}s"
    if checkpoint:
        # Each new leader resumed from the last checkpoint: less than the full TTL left...
        for elapsed, ttl in after_change[1:]:
            assert ttl <= TTL - elapsed + 2.5, report
        # ...so it expired about on time, well before a full TTL after the last change.
        assert TTL - 0.5 <= expired_at <= TTL + CHECKPOINT_SLACK_S, report
        assert expired_at < last_change + TTL, report
    else:
        # Each new leader restarted it from its full TTL.
        for _, ttl in after_change:
            assert ttl >= TTL - 3, report
        assert expired_at >= last_change + TTL - 1, report
