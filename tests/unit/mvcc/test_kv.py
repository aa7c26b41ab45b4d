"""KV core: revisions, put/delete/range options and errors, exactly-once apply, restart."""
import pytest

from raftkv.errors import RaftkvError
from tests.unit.mvcc.helpers import kv


def codes(resps):
    return [r.code if isinstance(r, RaftkvError) else None for r in resps]


def test_empty_store_starts_at_revision_1(h):
    assert h.store.current_revision == 1
    resp = h.get(b"a")
    assert resp == {"header": {"revision": 1}, "kvs": [], "more": False, "count": 0}


def test_put_revisions_versions_and_prev_kv(h):
    assert h.put(b"a", b"1") == {"header": {"revision": 2}}
    h.put(b"b", b"2")
    resp = h.put(b"a", b"3", prev_kv=True)
    assert resp["header"]["revision"] == 4
    assert resp["prev_kv"] == kv(b"a", b"1", 2, 2, 1)
    assert h.get(b"a")["kvs"] == [kv(b"a", b"3", 2, 4, 2)]
    assert "prev_kv" not in h.put(b"new", prev_kv=True)


def test_reads_do_not_bump_revision(h):
    h.put(b"a")
    h.apply([("range", {"key": b"a"}), ("range", {"key": b"zz"})])
    assert h.store.current_revision == 2


def test_delete_tombstone_and_recreate(h):
    h.put(b"a", b"1")
    h.put(b"a", b"2")
    resp = h.delete(b"a", prev_kv=True)
    assert resp == {"header": {"revision": 4}, "deleted": 1,
                    "prev_kvs": [kv(b"a", b"2", 2, 3, 2)]}
    assert h.get(b"a")["kvs"] == []
    h.put(b"a", b"3")
    assert h.get(b"a")["kvs"] == [kv(b"a", b"3", 5, 5, 1)]
    assert h.get(b"a", revision=3)["kvs"] == [kv(b"a", b"2", 2, 3, 2)]
    assert h.get(b"a", revision=4)["kvs"] == []


def test_delete_nothing_does_not_bump(h):
    h.put(b"a")
    assert h.delete(b"zz") == {"header": {"revision": 2}, "deleted": 0}
    assert h.store.current_revision == 2


def test_delete_range_is_one_revision(h):
    for k in (b"a1", b"a2", b"a3", b"b"):
        h.put(k)
    resp = h.delete(b"a", b"b")
    assert resp["deleted"] == 3 and resp["header"]["revision"] == 6
    assert [x["key"] for x in h.get(b"\0", b"\0")["kvs"]] == [b"b"]


def test_delete_all_from_key(h):
    for k in (b"a", b"b", b"c"):
        h.put(k)
    assert h.delete(b"b", b"\0")["deleted"] == 2


def test_range_forms(h):
    for k in (b"a", b"ab", b"abc", b"b", b"c"):
        h.put(k)
    keys = lambda r: [x["key"] for x in r["kvs"]]  # noqa: E731
    assert keys(h.get(b"ab")) == [b"ab"]
    assert keys(h.get(b"ab", b"ac")) == [b"ab", b"abc"]
    assert keys(h.get(b"b", b"\0")) == [b"b", b"c"]
    assert keys(h.get(b"\0", b"\0")) == [b"a", b"ab", b"abc", b"b", b"c"]
    assert keys(h.get(b"c", b"a")) == []


def test_limit_more_count(h):
    for i in range(10):
        h.put(b"k%d" % i)
    r = h.get(b"k", b"l", limit=3)
    assert len(r["kvs"]) == 3 and r["more"] is True and r["count"] == 10
    r = h.get(b"k", b"l", limit=10)
    assert r["more"] is False and r["count"] == 10
    r = h.get(b"k", b"l", count_only=True)
    assert r["kvs"] == [] and r["count"] == 10 and r["more"] is False
    r = h.get(b"k", b"l", keys_only=True, limit=1)
    assert r["kvs"][0]["value"] == b"" and r["kvs"][0]["version"] == 1


def test_sort(h):
    h.put(b"a", b"3")
    h.put(b"b", b"1")
    h.put(b"c", b"2")
    h.put(b"b", b"4")
    keys = lambda **kw: [x["key"] for x in h.get(b"a", b"z", **kw)["kvs"]]  # noqa: E731
    assert keys(sort_order=2) == [b"c", b"b", b"a"]
    assert keys(sort_order=1, sort_target=4) == [b"c", b"a", b"b"]
    assert keys(sort_target=4) == [b"c", b"a", b"b"]  # NONE order with a target: ascend
    assert keys(sort_order=2, sort_target=3) == [b"b", b"c", b"a"]
    assert keys(sort_order=2, sort_target=1) == [b"b", b"a", b"c"]
    assert keys(sort_order=1, sort_target=2, limit=2) == [b"a", b"b"]
    r = h.get(b"a", b"z", sort_order=2, sort_target=2, limit=1)
    assert r["kvs"][0]["key"] == b"c" and r["more"] and r["count"] == 3


def test_min_max_filters_do_not_change_count(h):
    for k in (b"a", b"b", b"c"):
        h.put(k)  # revisions 2, 3, 4
    h.put(b"a")  # 5
    r = h.get(b"a", b"z", min_mod_revision=4)
    assert [x["key"] for x in r["kvs"]] == [b"a", b"c"] and r["count"] == 3
    r = h.get(b"a", b"z", max_create_revision=3)
    assert [x["key"] for x in r["kvs"]] == [b"a", b"b"]
    r = h.get(b"a", b"z", min_create_revision=3, max_mod_revision=3, limit=1)
    assert [x["key"] for x in r["kvs"]] == [b"b"] and not r["more"]


def test_past_revision_and_errors(h):
    h.put(b"a", b"1")
    h.put(b"a", b"2")
    assert h.get(b"a", revision=2)["kvs"][0]["value"] == b"1"
    assert h.get(b"a", revision=2)["header"]["revision"] == 3
    with pytest.raises(RaftkvError) as exc:
        h.get(b"a", revision=4)
    assert exc.value.code == "FUTURE_REV"
    h.one("compact", {"revision": 3})
    with pytest.raises(RaftkvError) as exc:
        h.get(b"a", revision=2)
    assert exc.value.code == "COMPACTED"
    assert str(exc.value) == "etcdserver: mvcc: required revision has been compacted"


def test_ignore_value_and_lease(h):
    lid = h.one("lease_grant", {"TTL": 100, "ID": 7})["ID"]
    h.put(b"a", b"1", lease=lid)
    h.put(b"a", ignore_value=True, value=b"")
    assert h.get(b"a")["kvs"][0]["value"] == b"1"
    assert h.get(b"a")["kvs"][0]["lease"] == 0
    h.put(b"a", b"2", lease=lid)
    h.put(b"a", b"3", ignore_lease=True)
    got = h.get(b"a")["kvs"][0]
    assert got["value"] == b"3" and got["lease"] == lid and got["version"] == 4
    resps = h.apply([
        ("put", {"key": b"zz", "ignore_value": True}),
        ("put", {"key": b"a", "ignore_value": True, "value": b"x"}),
        ("put", {"key": b"a", "ignore_lease": True, "lease": lid}),
        ("put", {"key": b"a", "lease": 99}),
        ("put", {"key": b"", "value": b"x"}),
        ("delete_range", {"key": b""}),
        ("range", {"key": b""}),
        ("nope", {}),
    ])
    assert codes(resps) == ["KEY_NOT_FOUND", "VALUE_PROVIDED", "LEASE_PROVIDED",
                            "LEASE_NOT_FOUND", "EMPTY_KEY", "EMPTY_KEY", "EMPTY_KEY",
                            "UNKNOWN_OP"]
    assert h.store.current_revision == 5  # lease_grant does not bump the revision


def test_errors_are_per_request(h):
    resps = h.apply([("put", {"key": b"a"}), ("put", {"key": b""}), ("put", {"key": b"b"})])
    assert codes(resps) == [None, "EMPTY_KEY", None]
    assert resps[2]["header"]["revision"] == 3


def test_exactly_once_apply(h):
    h.apply([("put", {"key": b"a", "value": b"1"})], index=5)
    assert h.apply([("put", {"key": b"a", "value": b"2"})], index=5) is None
    assert h.apply([("put", {"key": b"a", "value": b"2"})], index=4) is None
    assert h.get(b"a")["kvs"][0]["value"] == b"1"
    assert h.store.applied_index == 5


def test_restart_keeps_state(h):
    lid = h.one("lease_grant", {"TTL": 50, "ID": 3})["ID"]
    h.put(b"a", b"1")
    h.put(b"b", b"2", lease=lid)
    h.put(b"a", b"3")
    h.delete(b"b")
    h.put(b"c", b"4", lease=lid)
    h.one("compact", {"revision": 3})
    before = (h.get(b"\0", b"\0"), h.get(b"\0", b"\0", revision=4), h.store.current_revision,
              h.store.compact_revision, h.store.applied_index)
    store = h.reopen()
    after = (h.get(b"\0", b"\0"), h.get(b"\0", b"\0", revision=4), store.current_revision,
             store.compact_revision, store.applied_index)
    assert before == after
    assert store.lease(lid).keys == {b"c"}
    assert h.apply([("put", {"key": b"a"})], index=store.applied_index) is None
    assert h.put(b"d")["header"]["revision"] == 7


def test_aborted_txn_rolls_back_memory(h):
    h.put(b"a", b"1")
    w = h.store.watch(b"a")
    with pytest.raises(RuntimeError):
        with h.engine.env.begin(write=True) as txn:
            h.store.apply(txn, 10, [("put", {"key": b"a", "value": b"2"}),
                                    ("lease_grant", {"ID": 5, "TTL": 9})])
            raise RuntimeError("disk full")
    h.store.aborted()
    assert h.get(b"a")["kvs"][0]["value"] == b"1"
    assert h.store.current_revision == 2 and h.store.lease(5) is None
    assert h.store.applied_index == 1
    h.put(b"a", b"3")
    assert [e["kv"]["value"] for r in w.take() for e in r["events"]] == [b"3"]


def test_uncommitted_apply_is_invisible_to_reads(h):
    h.put(b"a", b"1")
    with h.engine.env.begin(write=True) as txn:
        h.store.apply(txn, 2, [("put", {"key": b"a", "value": b"2"})])
        assert h.store.range({"key": b"a"})["kvs"][0]["value"] == b"1"
        assert h.store.current_revision == 2
    h.store.committed()
    assert h.store.range({"key": b"a"})["kvs"][0]["value"] == b"2"
