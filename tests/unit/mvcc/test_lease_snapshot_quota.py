"""Leases (table + Lessor), snapshots (roundtrip, corruption), quota alarm."""
import pytest

from raftkv.errors import RaftkvError
from raftkv.mvcc import Lessor, SnapshotError
from raftkv.mvcc.lease import MAX_TTL
from tests.unit.mvcc.helpers import Harness


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_grant_rules(h):
    assert h.one("lease_grant", {"ID": 5, "TTL": 1}) == {"header": {"revision": 1}, "ID": 5,
                                                         "TTL": 2}
    with pytest.raises(RaftkvError) as exc:
        h.one("lease_grant", {"ID": 5, "TTL": 10})
    assert exc.value.code == "LEASE_EXIST"
    with pytest.raises(RaftkvError) as exc:
        h.one("lease_grant", {"ID": 6, "TTL": MAX_TTL + 1})
    assert exc.value.code == "LEASE_TTL_TOO_LARGE"
    assert h.one("lease_grant", {"ID": 6, "TTL": MAX_TTL})["TTL"] == MAX_TTL
    auto = h.one("lease_grant", {"TTL": 30})
    assert auto["ID"] > 0 and auto["TTL"] == 30
    with pytest.raises(RaftkvError) as exc:
        h.one("lease_revoke", {"ID": 404})
    assert exc.value.code == "LEASE_NOT_FOUND"


def test_revoke_deletes_attached_keys_in_one_revision(h):
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    h.put(b"a", lease=1)
    h.put(b"b", lease=1)
    h.put(b"c")
    h.put(b"b", lease=0)  # detached
    w = h.store.watch(b"\0", b"\0")
    assert h.one("lease_revoke", {"ID": 1}) == {"header": {"revision": 6}}
    assert [x["key"] for x in h.get(b"\0", b"\0")["kvs"]] == [b"b", b"c"]
    (resp,) = w.take()
    assert [(e["type"], e["kv"]["key"]) for e in resp["events"]] == [(1, b"a")]
    h.one("lease_grant", {"ID": 2, "TTL": 10})
    assert h.one("lease_revoke", {"ID": 2}) == {"header": {"revision": 6}}


def test_lessor_expiry_keepalive_and_leader_change(h):
    clock = Clock()
    lessor = Lessor(h.store, clock)
    h.one("lease_grant", {"ID": 1, "TTL": 10})
    assert lessor.expired() == []  # not the leader
    with pytest.raises(RaftkvError):
        lessor.renew(1)
    lessor.promote()
    h.one("lease_grant", {"ID": 2, "TTL": 5})
    h.put(b"k", lease=1)
    clock.now += 6
    assert lessor.expired() == [2]
    assert lessor.renew(1) == 10 and lessor.renew(404) == 0
    ttl = lessor.time_to_live(1, keys=True)
    assert ttl == {"ID": 1, "TTL": 10, "grantedTTL": 10, "keys": [b"k"]}
    assert lessor.time_to_live(404)["TTL"] == -1
    assert lessor.leases() == [1, 2]
    h.one("lease_revoke", {"ID": 2})
    assert lessor.expired() == [] and lessor.leases() == [1]
    clock.now += 9
    assert lessor.time_to_live(1)["TTL"] == 1
    lessor.demote()
    clock.now += 100
    assert lessor.expired() == []
    lessor.promote()  # a new leader gives every lease a full TTL again
    assert lessor.expired() == []
    clock.now += 10
    assert lessor.expired() == [1]


def test_checkpoint_survives_restart_and_promote(h):
    h.one("lease_grant", {"ID": 1, "TTL": 60})
    h.one("lease_checkpoint", {"checkpoints": [{"ID": 1, "remaining_TTL": 7},
                                               {"ID": 9, "remaining_TTL": 3}]})
    store = h.reopen()
    clock = Clock()
    lessor = Lessor(store, clock, checkpoint_interval=5.0)
    lessor.promote()
    assert lessor.checkpoints(clock.now + 5) == [{"ID": 1, "remaining_TTL": 2}]
    clock.now += 7
    assert lessor.expired() == [1]


def test_lease_keys_rebuilt_at_open(h):
    h.one("lease_grant", {"ID": 3, "TTL": 60})
    h.put(b"x", lease=3)
    h.put(b"y", lease=3)
    h.delete(b"y")
    assert h.reopen().lease(3).keys == {b"x"}


def _fill(h):
    h.one("lease_grant", {"ID": 4, "TTL": 60})
    for i in range(300):
        h.put(b"key%03d" % i, b"x" * 100, lease=4 if i % 3 == 0 else 0)
    h.delete(b"key1", b"key2")
    h.one("compact", {"revision": 200})
    h.one("lease_checkpoint", {"checkpoints": [{"ID": 4, "remaining_TTL": 9}]})


def _state(h):
    s = h.store
    return (h.get(b"\0", b"\0"), h.get(b"\0", b"\0", revision=250), s.current_revision,
            s.compact_revision, s.applied_index, s.lease_ids(), sorted(s.lease(4).keys),
            s.lease(4).remaining)


def test_snapshot_roundtrip(tmp_path):
    src = Harness(tmp_path / "src")
    _fill(src)
    chunks = list(src.store.snapshot(chunk_bytes=4096))
    assert len(chunks) > 3
    dst = Harness(tmp_path / "dst")
    dst.put(b"old")
    w = dst.store.watch(b"zzz", start_revision=0)
    dst.store.restore(chunks)
    assert _state(dst) == _state(src)
    assert dst.apply([("put", {"key": b"k"})], index=src.store.applied_index) is None
    dst.reopen()
    assert _state(dst) == _state(src)
    (resp,) = w.take()  # its position (rev 3) is below the restored compact revision
    assert resp["canceled"] and resp["compact_revision"] == 200
    src.close()
    dst.close()


@pytest.mark.parametrize("damage", ["flip", "drop", "truncate", "swap", "short"])
def test_corrupt_snapshot_leaves_store_intact(tmp_path, damage):
    src = Harness(tmp_path / "src")
    _fill(src)
    chunks = list(src.store.snapshot(chunk_bytes=4096))
    if damage == "flip":
        bad = bytearray(chunks[2])
        bad[len(bad) // 2] ^= 1
        chunks[2] = bytes(bad)
    elif damage == "drop":
        del chunks[2]
    elif damage == "truncate":
        chunks = chunks[:-1]
    elif damage == "swap":
        chunks[1], chunks[2] = chunks[2], chunks[1]
    else:
        chunks[1] = chunks[1][:10]
    dst = Harness(tmp_path / "dst")
    dst.put(b"mine", b"1")
    before = _state_simple(dst)
    with pytest.raises(SnapshotError):
        dst.store.restore(chunks)
    assert _state_simple(dst) == before
    dst.reopen()
    assert _state_simple(dst) == before
    src.close()
    dst.close()


def _state_simple(h):
    return h.get(b"\0", b"\0"), h.store.current_revision, h.store.applied_index


def test_quota_alarm(tmp_path):
    h = Harness(tmp_path / "d", quota_bytes=256 * 1024)
    h.one("lease_grant", {"ID": 1, "TTL": 60})
    i = 0
    while not h.store.alarm:
        h.apply([("put", {"key": b"k%06d" % (i + j), "value": b"x" * 1000}) for j in range(50)])
        i += 50
        assert i < 10_000
    resps = h.apply([
        ("put", {"key": b"new"}),
        ("txn", {"success": [{"request_put": {"key": b"t"}}]}),
        ("txn", {"success": [{"request_txn": {"failure": [{"request_put": {"key": b"t"}}]}}]}),
        ("lease_grant", {"ID": 2, "TTL": 60}),
        ("range", {"key": b"k000000"}),
        ("delete_range", {"key": b"k000000"}),
        ("txn", {"success": [{"request_delete_range": {"key": b"k000001"}}]}),
        ("compact", {"revision": 3}),
        ("lease_revoke", {"ID": 1}),
    ])
    codes = [r.code if isinstance(r, RaftkvError) else None for r in resps]
    assert codes == ["NO_SPACE"] * 4 + [None] * 5
    assert str(resps[0]) == "etcdserver: mvcc: database space exceeded"
    assert not h.store.disarm()  # LMDB keeps its size until a defrag
    h.store.quota_bytes = 0
    assert h.store.disarm() and h.put(b"new")
    h.close()


def test_in_use_bytes_of_a_store_without_the_raft_log_tables(tmp_path):
    """in_use_bytes on a KVStore whose engine has no "log" table (a store used without a
    member), or one that exists but was never opened in this process: it raised EINVAL from
    mdb_stat (a sub-db opened after the read txn began). It counts what there is, and creates
    nothing."""
    h = Harness(tmp_path / "d")
    empty = h.store.in_use_bytes()
    assert empty > 0
    for i in range(20):
        h.put(b"k%02d" % i, b"x" * 3000)  # overflow pages
    grown = h.store.in_use_bytes()
    assert grown >= empty + 20 * 3000
    with h.engine.env.begin() as txn:
        assert txn.get(b"log") is None  # not created by the count
    log_db = h.engine.db(b"log")
    with h.engine.env.begin(write=True) as txn:
        txn.put(b"\0" * 8, b"y" * 20_000, db=log_db)
    store = h.reopen()  # "log" exists but this engine has not opened it
    assert store.in_use_bytes() >= grown + 20_000
    h.close()
