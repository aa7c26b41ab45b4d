"""Lease checkpoints (etcd's --experimental-enable-lease-checkpoint): the Lessor's schedule,
rate and batch limits, promote with and without checkpoints, renew clearing a checkpoint, and
the store's lease_checkpoint op (persisted, through reopen, snapshots and the bbolt image)."""
import io

import pytest

from raftkv.errors import RaftkvError
from raftkv.mvcc import Lessor
from raftkv.mvcc import snapshot
from raftkv.mvcc.lease import CHECKPOINT_BATCH_MAX, CHECKPOINT_INTERVAL_S, CHECKPOINT_RATE
from tests.unit.mvcc.helpers import Harness


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Recorder:
    """A checkpointer that records what the lessor asked to propose."""

    def __init__(self):
        self.sent = []

    def __call__(self, checkpoints):
        self.sent.append(checkpoints)


def cp(lid, remaining):
    return {"ID": lid, "remaining_TTL": remaining}


def make_lessor(h, interval=3.0, clock=None, checkpointer=None):
    clock = clock or Clock()
    lessor = Lessor(h.store, clock, checkpoint_interval=interval,
                    checkpointer=checkpointer if checkpointer is not None else Recorder())
    return lessor, clock


def apply_checkpoints(h, cps):
    h.one("lease_checkpoint", {"checkpoints": cps})


def test_etcd_defaults():
    assert (CHECKPOINT_INTERVAL_S, CHECKPOINT_RATE, CHECKPOINT_BATCH_MAX) == (300.0, 1000, 1000)


def test_schedule_every_interval_while_the_remaining_ttl_is_longer(h):
    lessor, clock = make_lessor(h, interval=3.0)
    lessor.promote()
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    h.one("lease_grant", {"ID": 2, "TTL": 3})  # not longer than the interval: never
    assert lessor.checkpoints() == []
    clock.now += 2.9
    assert lessor.checkpoints() == []
    clock.now += 0.1
    assert lessor.checkpoints() == [cp(1, 7)]
    assert lessor.checkpoints() == []  # one per interval
    clock.now += 3
    assert lessor.checkpoints() == [cp(1, 4)]
    clock.now += 3
    assert lessor.checkpoints() == [cp(1, 1)]  # 4 > 3 scheduled this one; 1 schedules none
    clock.now += 3
    assert lessor.checkpoints() == []
    assert lessor.expired() == [2, 1]


def test_remaining_ttl_is_rounded_up(h):
    lessor, clock = make_lessor(h, interval=2.0)
    lessor.promote()
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    clock.now += 2.4
    assert lessor.checkpoints() == [cp(1, 8)]  # 7.6 left: never less than the truth


def test_renewed_lease_is_skipped_but_stays_scheduled(h):
    rec = Recorder()
    lessor, clock = make_lessor(h, interval=3.0, checkpointer=rec)
    lessor.promote()
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    clock.now += 2.5
    assert lessor.renew(1) == 10
    clock.now += 0.5
    assert lessor.checkpoints() == []  # 9.5 left: ceil is the full TTL, nothing to record
    assert rec.sent == []  # nothing was checkpointed, so nothing to clear
    clock.now += 3
    assert lessor.checkpoints() == [cp(1, 7)]  # keep-alives stopped: checkpointed again


def test_expired_and_revoked_leases_are_not_checkpointed(h):
    lessor, clock = make_lessor(h, interval=3.0)
    lessor.promote()
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    h.one("lease_grant", {"ID": 2, "TTL": 10})
    h.one("lease_revoke", {"ID": 2})
    clock.now += 3
    assert lessor.checkpoints() == [cp(1, 7)]
    clock.now += 20  # the deadline passed before the next checkpoint: revoking is due
    assert lessor.checkpoints() == []
    assert lessor.expired() == [1]


def test_only_the_primary_checkpoints_and_demote_drops_the_schedule(h):
    lessor, clock = make_lessor(h, interval=3.0)
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    clock.now += 5
    assert lessor.checkpoints() == []  # a follower
    lessor.promote()
    lessor.demote()
    clock.now += 5
    assert lessor.checkpoints() == []


def test_off_without_an_interval(h):
    rec = Recorder()
    lessor, clock = make_lessor(h, interval=0.0, checkpointer=rec)
    lessor.promote()
    h.one("lease_grant", {"ID": 1, "TTL": 1000})
    clock.now += 900
    assert lessor.checkpoints() == [] and lessor.checkpoint_batches() == []
    lessor.renew(1)
    assert rec.sent == []


def test_rate_and_batch_limits(h):
    lessor, clock = make_lessor(h, interval=3.0)
    lessor.promote()
    for lid in range(1, 26):
        h.one("lease_grant", {"ID": lid, "TTL": 60})
        clock.now += 0.01  # earlier grants are due earlier
    clock.now += 3
    first = lessor.checkpoints(limit=10)
    assert [c["ID"] for c in first] == list(range(1, 11))
    batches = lessor.checkpoint_batches(rate=12, batch=5)
    assert [[c["ID"] for c in b] for b in batches] == \
        [list(range(11, 16)), list(range(16, 21)), [21, 22]]
    assert [c["ID"] for c in lessor.checkpoints()] == [23, 24, 25]  # the rest, next turn
    assert lessor.checkpoints() == []


def test_promote_resumes_from_the_checkpoint_and_schedules_every_lease(h):
    h.one("lease_grant", {"ID": 1, "TTL": 60})
    h.one("lease_grant", {"ID": 2, "TTL": 60})
    apply_checkpoints(h, [cp(1, 20)])
    lessor, clock = make_lessor(h, interval=5.0)
    lessor.promote()
    assert lessor.time_to_live(1)["TTL"] == 20 and lessor.time_to_live(2)["TTL"] == 60
    # Both are scheduled by promote (etcd 3.4.0 scheduled none here: checkpoints stopped
    # after the first leader change).
    clock.now += 5
    assert lessor.checkpoints() == [cp(1, 15), cp(2, 55)]
    clock.now += 15
    assert lessor.expired() == [1]


def test_promote_without_checkpointing_gives_the_full_ttl(h):
    h.one("lease_grant", {"ID": 1, "TTL": 60})
    apply_checkpoints(h, [cp(1, 20)])  # e.g. recorded before a restart without the flag
    lessor, clock = make_lessor(h, interval=0.0)
    assert lessor.time_to_live(1)["TTL"] == 60
    lessor.promote()
    clock.now += 20
    assert lessor.expired() == []
    clock.now += 40
    assert lessor.expired() == [1]


def test_renew_clears_an_applied_checkpoint_once(h):
    rec = Recorder()
    lessor, clock = make_lessor(h, interval=3.0, checkpointer=rec)
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    apply_checkpoints(h, [cp(1, 4)])
    lessor.promote()
    assert lessor.time_to_live(1)["TTL"] == 4
    assert lessor.renew(1) == 10
    assert rec.sent == [[cp(1, 0)]]
    assert lessor.renew(1) == 10
    assert len(rec.sent) == 2  # not applied yet: still set, so cleared again (as etcd)
    apply_checkpoints(h, rec.sent[0])
    assert h.store.lease(1).remaining == 0
    lessor.renew(1)
    assert len(rec.sent) == 2
    # The next leader gives the renewed lease its full TTL, not the stale 4 s.
    lessor.demote()
    lessor.promote()
    assert lessor.time_to_live(1)["TTL"] == 10


def test_renew_clears_a_checkpoint_still_on_its_way(h):
    """A checkpoint proposed just before a renew is applied after it: the clear must follow it
    through the log, though the store shows no checkpoint at the time of the renew."""
    rec = Recorder()
    lessor, clock = make_lessor(h, interval=3.0, checkpointer=rec)
    lessor.promote()
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    clock.now += 3
    (sent,) = lessor.checkpoint_batches()
    assert sent == [cp(1, 7)] and h.store.lease(1).remaining == 0
    lessor.renew(1)
    assert rec.sent == [[cp(1, 0)]]
    apply_checkpoints(h, sent)
    apply_checkpoints(h, rec.sent[0])  # the log's order: checkpoint, then the clear
    assert h.store.lease(1).remaining == 0
    lessor.renew(1)
    assert len(rec.sent) == 1


def test_renew_clears_a_stale_checkpoint_with_checkpointing_off(h):
    rec = Recorder()
    lessor, _ = make_lessor(h, interval=0.0, checkpointer=rec)
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    apply_checkpoints(h, [cp(1, 4)])
    lessor.promote()
    lessor.renew(1)
    assert rec.sent == [[cp(1, 0)]]


def _leader_changes(h, interval, changes, spacing):
    """Two lessors on one store take turns as leader every `spacing` s, applying their
    checkpoints as they go; returns when the lease (TTL 10, granted at 100) expires."""
    clock = Clock()
    lessors = [Lessor(h.store, clock, checkpoint_interval=interval) for _ in range(2)]
    lessors[0].promote()
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    leader = 0
    next_change = clock.now + spacing
    while clock.now < 200:
        clock.now += 0.5  # the member's lease loop
        for batch in lessors[leader].checkpoint_batches():
            apply_checkpoints(h, batch)
        if lessors[leader].expired():
            return clock.now - 100
        if changes and clock.now >= next_change:
            changes -= 1
            next_change += spacing
            lessors[leader].demote()
            leader = 1 - leader
            lessors[leader].promote()
    raise AssertionError("never expired")


@pytest.mark.parametrize("spacing", [1.3, 1.7, 2.0, 2.3])
def test_leader_changes_with_and_without_checkpoints(tmp_path, spacing):
    with_cp = _leader_changes(Harness(tmp_path / "a"), 1.0, changes=6, spacing=spacing)
    without = _leader_changes(Harness(tmp_path / "b"), 0.0, changes=6, spacing=spacing)
    # A change may add up to an interval plus rounding (here far less: the new leader
    # checkpoints from where the old one's last checkpoint left it); without checkpoints the
    # last change (at about 6 x spacing, on a lease loop turn) restarts the full TTL.
    assert 10 <= with_cp <= 12
    assert 6 * spacing + 10 <= without <= 6 * spacing + 10.5


# ------------------------------------------------------------------ the store's op

def test_checkpoint_op_persists_and_clears(h):
    h.one("lease_grant", {"ID": 1, "TTL": 60})
    h.one("lease_grant", {"ID": 2, "TTL": 60})
    assert h.one("lease_checkpoint", {"checkpoints": [cp(1, 30), cp(2, 40), cp(404, 5)]}) \
        == {"header": {"revision": 1}}  # no revision of its own; an unknown ID is skipped
    store = h.reopen()
    assert (store.lease(1).remaining, store.lease(2).remaining) == (30, 40)
    assert 404 not in store.lease_ids()
    h.one("lease_checkpoint", {"checkpoints": [cp(1, 0)]})
    store = h.reopen()
    assert (store.lease(1).ttl, store.lease(1).remaining, store.lease(2).remaining) == \
        (60, 0, 40)


def test_checkpoint_survives_snapshot_and_bbolt_image(tmp_path):
    src = Harness(tmp_path / "src")
    src.one("lease_grant", {"ID": 7, "TTL": 600})
    src.put(b"k", lease=7)
    src.one("lease_checkpoint", {"checkpoints": [cp(7, 250)]})
    dst = Harness(tmp_path / "dst")
    dst.store.restore(list(src.store.snapshot(chunk_bytes=4096)))
    assert (dst.store.lease(7).ttl, dst.store.lease(7).remaining) == (600, 250)
    assert dst.reopen().lease(7).remaining == 250
    lessor = Lessor(dst.store, Clock(), checkpoint_interval=300.0)
    lessor.promote()
    assert lessor.time_to_live(7, keys=True) == {"ID": 7, "TTL": 250, "grantedTTL": 600,
                                                 "keys": [b"k"]}
    # etcd's snapshot file: leasepb.Lease{ID, TTL, RemainingTTL}
    buf = io.BytesIO()
    snapshot.export_bbolt(src.store, buf)
    assert snapshot.etcd_lease_value(7, 600, 250) in buf.getvalue()


@pytest.mark.parametrize("bad", [{"checkpoints": [1]}, {"checkpoints": "x"}])
def test_checkpoint_op_refuses_bad_shapes(h, bad):
    with pytest.raises(RaftkvError) as exc:
        h.one("lease_checkpoint", bad)
    assert exc.value.code == "BAD_REQUEST"
