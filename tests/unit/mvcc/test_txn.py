"""Txn: compares (targets x results, ranges), branches, nesting, checks; compaction."""
import pytest

from raftkv.errors import RaftkvError
from tests.unit.mvcc.helpers import Harness


def put_op(key, value=b"v", **kw):
    return {"request_put": dict(key=key, value=value, **kw)}


def cmp(key, target, result, **kw):
    return dict(key=key, target=target, result=result, **kw)


def txn(h, compare=(), success=(), failure=()):
    return h.one("txn", {"compare": list(compare), "success": list(success),
                         "failure": list(failure)})


@pytest.fixture
def h3(h):
    h.one("lease_grant", {"ID": 9, "TTL": 100})
    h.put(b"a", b"m")  # rev 2: create 2, version 1
    h.put(b"a", b"m", lease=9)  # rev 3: version 2, lease 9
    h.put(b"b", b"z")  # rev 4
    return h


@pytest.mark.parametrize("target,field,value,expect", [
    (0, "version", 2, (True, False, False, False)),
    (0, "version", 1, (False, True, False, True)),
    (1, "create_revision", 3, (False, False, True, True)),
    (2, "mod_revision", 3, (True, False, False, False)),
    (3, "value", b"a", (False, True, False, True)),
    (3, "value", b"n", (False, False, True, True)),
    (4, "lease", 9, (True, False, False, False)),
])
def test_compare_targets_and_results(h3, target, field, value, expect):
    got = tuple(txn(h3, [cmp(b"a", target, result, **{field: value})])["succeeded"]
                for result in range(4))
    assert got == expect


def test_compare_missing_key(h3):
    assert txn(h3, [cmp(b"zz", 0, 0, version=0)])["succeeded"]
    assert txn(h3, [cmp(b"zz", 1, 0, create_revision=0)])["succeeded"]
    assert not txn(h3, [cmp(b"zz", 3, 0, value=b"")])["succeeded"]
    assert not txn(h3, [cmp(b"zz", 3, 3, value=b"x")])["succeeded"]


def test_compare_over_range(h3):
    assert txn(h3, [cmp(b"a", 2, 1, range_end=b"c", mod_revision=1)])["succeeded"]
    assert not txn(h3, [cmp(b"a", 2, 1, range_end=b"c", mod_revision=3)])["succeeded"]
    assert txn(h3, [cmp(b"a", 2, 1, range_end=b"\0", mod_revision=1)])["succeeded"]


def test_txn_one_revision_and_responses(h3):
    resp = txn(h3, [cmp(b"a", 0, 0, version=2)],
               [put_op(b"c", prev_kv=True), put_op(b"a", b"new", prev_kv=True),
                {"request_range": {"key": b"a"}},
                {"request_delete_range": {"key": b"b", "prev_kv": True}}])
    assert resp["succeeded"] and resp["header"]["revision"] == 5
    put_c, put_a, rng, dele = [next(iter(r.values())) for r in resp["responses"]]
    assert "prev_kv" not in put_c and put_a["prev_kv"]["value"] == b"m"
    assert rng["kvs"][0]["value"] == b"new" and rng["kvs"][0]["mod_revision"] == 5
    assert dele["deleted"] == 1 and dele["prev_kvs"][0]["key"] == b"b"
    assert all(next(iter(r.values()))["header"]["revision"] == 5 for r in resp["responses"])
    assert h3.store.current_revision == 5
    assert h3.get(b"c")["kvs"][0]["mod_revision"] == 5


def test_txn_sub_response_headers_as_etcd(h3):
    """etcd 3.4 (apply.go, mvcc/kvstore_txn.go): a range or a delete that deletes nothing
    before any write sees the starting revision; a put, and anything after the first write,
    the txn's revision; only the outer header gets cluster/member/term (not set here)."""
    resp = txn(h3, [], [{"request_range": {"key": b"a"}},
                        {"request_delete_range": {"key": b"nothing"}},
                        put_op(b"a", b"y"),
                        {"request_range": {"key": b"a"}},
                        {"request_delete_range": {"key": b"nothing"}}])
    revs = [next(iter(r.values()))["header"] for r in resp["responses"]]
    assert revs == [{"revision": 4}, {"revision": 4}, {"revision": 5}, {"revision": 5},
                    {"revision": 5}]
    assert resp["header"] == {"revision": 5}
    first = resp["responses"][0]["response_range"]["kvs"][0]
    assert first["mod_revision"] < 5


def test_txn_failure_branch_and_readonly(h3):
    resp = txn(h3, [cmp(b"a", 0, 0, version=7)], [put_op(b"x")],
               [{"request_range": {"key": b"b"}}])
    assert not resp["succeeded"] and resp["header"]["revision"] == 4
    assert resp["responses"][0]["response_range"]["kvs"][0]["key"] == b"b"
    assert h3.store.current_revision == 4


def test_nested_txn(h3):
    inner = {"compare": [cmp(b"a", 0, 0, version=2)], "success": [put_op(b"n1")],
             "failure": [put_op(b"n2")]}
    resp = txn(h3, [], [put_op(b"a", b"x"), {"request_txn": inner}])
    # nested compares see the state before the outer txn's writes (etcd compareToPath)
    inner_resp = resp["responses"][1]["response_txn"]
    assert inner_resp["succeeded"] and inner_resp["header"] == {}  # etcd leaves it unset
    assert inner_resp["responses"][0]["response_put"]["header"] == {"revision": 5}
    assert h3.get(b"n1")["count"] == 1 and h3.get(b"n2")["count"] == 0
    assert h3.get(b"n1")["kvs"][0]["mod_revision"] == 5


def test_txn_checks(h3):
    def code(**body):
        (r,) = h3.apply([("txn", body)])
        return r.code if isinstance(r, RaftkvError) else None

    assert code(success=[put_op(b"k%d" % i) for i in range(129)]) == "TOO_MANY_OPS"
    assert code(compare=[cmp(b"a", 0, 0)] * 129) == "TOO_MANY_OPS"
    assert code(success=[put_op(b"k%d" % i) for i in range(128)]) is None
    assert code(success=[put_op(b"d"), put_op(b"d")]) == "DUPLICATE_KEY"
    assert code(success=[put_op(b"d")], failure=[put_op(b"d")]) is None
    assert code(success=[put_op(b"d"), {"request_delete_range": {"key": b"c",
                                                                 "range_end": b"e"}}]) \
        == "DUPLICATE_KEY"
    assert code(success=[{"request_delete_range": {"key": b"d"}},
                         {"request_delete_range": {"key": b"d"}}]) is None
    nested = {"success": [put_op(b"d")], "failure": [put_op(b"d")]}
    assert code(success=[{"request_txn": nested}]) is None
    assert code(success=[put_op(b"d"), {"request_txn": nested}]) == "DUPLICATE_KEY"
    assert code(success=[put_op(b"")]) == "EMPTY_KEY"
    assert code(success=[put_op(b"q", lease=77)]) == "LEASE_NOT_FOUND"
    assert code(failure=[put_op(b"q", lease=77)]) is None  # only the chosen path is checked
    assert code(success=[put_op(b"nokey", ignore_value=True, value=b"")]) == "KEY_NOT_FOUND"
    assert code(success=[{"request_range": {"key": b"a", "revision": 99}}]) == "FUTURE_REV"
    before = h3.store.current_revision
    assert code(success=[put_op(b"ok"), put_op(b"bad", lease=77)]) == "LEASE_NOT_FOUND"
    assert h3.store.current_revision == before and h3.get(b"ok")["count"] == 0


def test_compact_errors_and_history(h):
    for i in range(5):
        h.put(b"a", b"%d" % i)  # revs 2..6
    h.put(b"b")  # 7
    h.delete(b"b")  # 8
    with pytest.raises(RaftkvError, match="future revision"):
        h.one("compact", {"revision": 9})
    assert h.one("compact", {"revision": 4}) == {"header": {"revision": 8}}
    with pytest.raises(RaftkvError) as exc:
        h.one("compact", {"revision": 4})
    assert exc.value.code == "COMPACTED"
    assert h.get(b"a", revision=4)["kvs"][0]["value"] == b"2"
    assert h.get(b"a", revision=6)["kvs"][0]["value"] == b"4"
    h.one("compact", {"revision": 8})
    assert h.store._index.get(b"b") is None  # tombstoned key dropped entirely
    assert h.store._index.get(b"a").entries() == [6 << 33]
    with h.engine.env.begin() as txn:
        assert txn.stat(h.engine.db("kv"))["entries"] == 1
    assert h.get(b"a", revision=8)["kvs"][0]["value"] == b"4"


def test_compaction_in_bounded_steps_survives_restart(tmp_path):
    h = Harness(tmp_path / "d", compaction_batch=10)
    h.apply([("put", {"key": b"k%03d" % i, "value": b"1"}) for i in range(35)])
    h.apply([("put", {"key": b"k%03d" % i, "value": b"2"}) for i in range(35)])
    h.apply([("compact", {"revision": h.store.current_revision})])
    assert h.store.compaction_pending
    h.reopen()
    assert h.store.compaction_pending
    with pytest.raises(RaftkvError):
        h.get(b"k000", revision=2)
    steps = 0
    while h.store.compaction_pending:
        with h.engine.env.begin(write=True) as txn:
            h.store.compact_step(txn, 10)
        h.store.committed()
        steps += 1
    assert steps >= 2
    with h.engine.env.begin() as txn:
        assert txn.stat(h.engine.db("kv"))["entries"] == 35
    h.reopen()
    assert h.get(b"k", b"l")["count"] == 35
    h.close()


def test_physical_compaction_completes_at_once(tmp_path):
    h = Harness(tmp_path / "d", compaction_batch=3)
    for v in (b"1", b"2"):
        h.apply([("put", {"key": b"k%02d" % i, "value": v}) for i in range(20)])
    h.one("compact", {"revision": h.store.current_revision, "physical": True})
    assert not h.store.compaction_pending
    with h.engine.env.begin() as txn:
        assert txn.stat(h.engine.db("kv"))["entries"] == 20
    h.close()


# ---- found by the differential test against etcd 3.4.23 (tests/etcdctl/differential.py)
def _code(fn, *args, **kw):
    with pytest.raises(RaftkvError) as exc:
        fn(*args, **kw)
    return exc.value.code


def range_op(key, **kw):
    return {"request_range": dict(key=key, **kw)}


def test_txn_request_checks_in_etcds_order(h3):
    """etcd's checkTxnRequest: a compare without a key is "key is not provided", an empty
    RequestOp "key not found", both before the duplicate-key check; a nested txn may hold
    only what its parent's longest list leaves of --max-txn-ops."""
    dup = [put_op(b"x"), put_op(b"x")]
    assert _code(txn, h3, [cmp(b"", 0, 0, version=0)], dup) == "EMPTY_KEY"
    assert _code(txn, h3, [], [put_op(b"x"), {}]) == "KEY_NOT_FOUND"
    assert _code(txn, h3, [], [*dup, {}]) == "KEY_NOT_FOUND"
    nested = {"request_txn": {"success": [range_op(b"a")] * 2}}
    assert txn(h3, [], [range_op(b"a")] * 125 + [nested])["succeeded"]  # 126: 2 left
    assert _code(txn, h3, [], [range_op(b"a")] * 126 + [nested]) == "TOO_MANY_OPS"


def test_from_key_delete_does_not_count_as_duplicate(h3):
    """etcd's checkIntervals takes a delete's range_end "\\0" literally: an interval that
    holds no key, so a put in the same txn is no duplicate; the delete then removes it."""
    resp = txn(h3, [], [put_op(b"a/1"), {"request_delete_range": {"key": b"a",
                                                                  "range_end": b"\0"}}])
    assert resp["responses"][1]["response_delete_range"]["deleted"] == 3  # a, a/1, b
    assert h3.get(b"\0", b"\0")["count"] == 0


def test_put_keeping_a_deleted_keys_value_refuses_the_whole_txn(h3):
    """A put with ignore_value or ignore_lease after a from-key delete of its key has
    nothing to keep: refused before anything is written (etcd 3.4.23 panics here; raftkv
    answered INTERNAL after writing the delete)."""
    for flag in ("ignore_value", "ignore_lease"):
        ops = [{"request_delete_range": {"key": b"a", "range_end": b"\0"}},
               {"request_put": {"key": b"b", flag: True}}]
        assert _code(txn, h3, [], ops) == "KEY_NOT_FOUND"
        assert h3.get(b"\0", b"\0")["count"] == 2
        assert h3.store.current_revision == 4


def test_txn_checks_puts_of_the_path_before_its_ranges(h3):
    """etcd's checkRequests runs checkRequestPut over the whole chosen path, then
    checkRequestRange: an unknown lease after a future-revision range is the error."""
    ops = [range_op(b"a", revision=99), put_op(b"x", lease=77)]
    assert _code(txn, h3, [], ops) == "LEASE_NOT_FOUND"
    assert _code(txn, h3, [], ops[:1]) == "FUTURE_REV"


def test_txn_range_with_negative_revision_against_compact_revision(h3):
    """In a txn (checkRequestRange), unlike a plain range, a negative revision is compared
    with etcd's compactMainRev: -1 before any compaction, then the compacted revision."""
    assert txn(h3, [], [range_op(b"a", revision=-1)])["succeeded"]
    assert _code(txn, h3, [], [range_op(b"a", revision=-2)]) == "COMPACTED"
    assert h3.get(b"a", revision=-2)["count"] == 1  # a plain range: the latest
    h3.one("compact", {"revision": 2})
    assert _code(txn, h3, [], [range_op(b"a", revision=-1)]) == "COMPACTED"


def test_compact_at_zero_on_a_fresh_store(h):
    """etcd's compactMainRev starts at -1, so Compact(0) succeeds once; and survives a
    restart."""
    assert _code(h.one, "compact", {"revision": -1}) == "COMPACTED"
    assert h.one("compact", {"revision": 0})["header"]["revision"] == 1
    assert h.store.compact_revision == 0
    h.reopen()
    assert _code(h.one, "compact", {"revision": 0}) == "COMPACTED"
    assert h.one("compact", {"revision": 1})["header"]["revision"] == 1


def test_plain_put_checks_its_lease_before_ignore_value(h):
    """applierV3backend.Put looks the lease up first; a put in a txn checks it last."""
    assert _code(h.put, b"nokey", b"", ignore_value=True, lease=77) == "LEASE_NOT_FOUND"
    ops = [{"request_put": {"key": b"nokey", "ignore_value": True, "lease": 77}}]
    assert _code(txn, h, [], ops) == "KEY_NOT_FOUND"


def test_negative_limit_is_no_limit(h3):
    for read in (lambda: h3.get(b"a", b"c", limit=-1),
                 lambda: txn(h3, [], [range_op(b"a", range_end=b"c", limit=-1)])[
                     "responses"][0]["response_range"]):
        resp = read()
        assert [kv["key"] for kv in resp["kvs"]] == [b"a", b"b"]
        assert resp["count"] == 2 and not resp["more"]


def test_sort_target_without_order_sorts_only_the_first_limit_plus_one(h):
    """etcd 3.4 reads limit + 1 keys in key order when the request names a sort target but
    no sort order (no revision filter either), then sorts those ASCEND and truncates; with
    an order named it reads the whole range first."""
    for key in (b"k3", b"k2", b"k1", b"k0"):  # mod revisions 2, 3, 4, 5
        h.put(key)
    kvs = h.get(b"k", b"l", limit=2, sort_target=3)["kvs"]  # MOD, order NONE
    assert [kv["key"] for kv in kvs] == [b"k2", b"k1"]  # k0, k1, k2 read, sorted
    kvs = h.get(b"k", b"l", limit=2, sort_target=3, sort_order=1)["kvs"]
    assert [kv["key"] for kv in kvs] == [b"k3", b"k2"]
    kvs = h.get(b"k", b"l", limit=2, sort_target=3, min_mod_revision=1)["kvs"]  # filtered
    assert [kv["key"] for kv in kvs] == [b"k3", b"k2"]
