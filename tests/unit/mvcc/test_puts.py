"""The bulk "puts" op (one request, many plain puts) against the same puts sent one by one:
identical store contents, key index, responses' revisions, lease attachments and watch events."""
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from raftkv.errors import RaftkvError
from tests.unit.mvcc.helpers import Harness

KEYS = [b"a", b"ab", b"b", b"c"]
LEASE = 7

_put = st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=4),
                 st.booleans())  # (kind, key, value, with the lease)
_puts = st.tuples(st.just("puts"), st.lists(st.tuples(st.sampled_from(KEYS),
                                                      st.binary(max_size=4)), max_size=6))
_delete = st.tuples(st.just("delete"), st.sampled_from(KEYS))
_txn = st.tuples(st.just("txn"), st.sampled_from(KEYS))  # reads what the entry wrote so far
_request = st.one_of(_put, _puts, _delete, _txn)
_entries = st.lists(st.lists(_request, min_size=1, max_size=4), min_size=1, max_size=8)


def _requests(entry, bulk):
    out = []
    for req in entry:
        kind = req[0]
        if kind == "put":
            body = {"key": req[1], "value": req[2]}
            if req[3]:
                body["lease"] = LEASE
            out.append(("put", body))
        elif kind == "puts":
            if bulk:
                out.append(("puts", {"kvs": [x for pair in req[1] for x in pair]}))
            else:
                out.extend(("put", {"key": k, "value": v}) for k, v in req[1])
        elif kind == "delete":
            out.append(("delete_range", {"key": req[1]}))
        else:
            out.append(("txn", {"compare": [{"key": req[1], "target": 0, "result": 0,
                                             "version": 0}],
                                "success": [{"request_range": {"key": b"\0",
                                                               "range_end": b"\0"}}],
                                "failure": [{"request_put": {"key": req[1], "value": b"t"}}]}))
    return out


def _state(h):
    """Everything observable: the raw kv db, the store's revisions, every key's history
    (a range at each revision), the lease's keys."""
    with h.engine.env.begin() as txn:
        raw = list(txn.cursor(db=h.engine.db("kv")))
    store = h.store
    history = [store.range({"key": b"\0", "range_end": b"\0", "revision": rev})["kvs"]
               for rev in range(1, store.current_revision + 1)]
    lease = store.lease(LEASE)
    return (raw, store.current_revision, store.applied_index, history,
            sorted(lease.keys) if lease else None)


def _events(w):
    out = []
    for resp in w.take():
        out.extend(resp["events"])
    return out


def _revision_of(resp):
    return None if isinstance(resp, RaftkvError) else resp["header"]["revision"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_entries)
def test_puts_equals_one_put_per_pair(entries):
    with tempfile.TemporaryDirectory() as d:
        fast, slow = Harness(d + "/fast"), Harness(d + "/slow")
        try:
            for h in (fast, slow):
                h.one("lease_grant", {"ID": LEASE, "TTL": 60})
            wf = fast.store.watch(b"\0", b"\0", prev_kv=True)
            ws = slow.store.watch(b"\0", b"\0", prev_kv=True)
            for entry in entries:
                out_fast = fast.apply(_requests(entry, True))
                out_slow = slow.apply(_requests(entry, False))
                # The bulk request answers with the revision of its last put and a count.
                it = iter(out_slow)
                for req, resp in zip(entry, out_fast):
                    if req[0] == "puts":
                        mine = [next(it) for _ in req[1]]
                        assert resp["count"] == len(mine)
                        want = _revision_of(mine[-1]) if mine else slow.store.current_revision
                        if mine:
                            assert resp["header"]["revision"] == want
                    else:
                        other = next(it)
                        if isinstance(resp, RaftkvError):
                            assert resp.code == other.code
                        elif req[0] == "txn":
                            assert resp == other
                        else:
                            assert _revision_of(resp) == _revision_of(other)
                assert _events(wf) == _events(ws)
            assert _state(fast) == _state(slow)
            # And after a restart (the index rebuilt from disk) too.
            fast.reopen()
            slow.reopen()
            assert _state(fast) == _state(slow)
        finally:
            fast.close()
            slow.close()


def test_puts_response_and_versions(h):
    h.put(b"k", b"0")
    (resp,) = h.apply([("puts", {"kvs": [b"k", b"1", b"n", b"x", b"k", b"2"]})])
    assert resp == {"header": {"revision": 5}, "count": 3}
    kvs = h.get(b"\0", b"\0")["kvs"]
    assert [(kv["key"], kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"])
            for kv in kvs] == [(b"k", b"2", 2, 5, 3), (b"n", b"x", 4, 4, 1)]


def test_puts_detaches_the_lease(h):
    h.one("lease_grant", {"ID": 9, "TTL": 60})
    h.put(b"k", b"0", lease=9)
    h.apply([("puts", {"kvs": [b"k", b"1"]})])
    assert h.store.lease(9).keys == set()
    assert h.get(b"k")["kvs"][0]["lease"] == 0


@pytest.mark.parametrize("kvs, code", [
    ([b"a", b"1", b"", b"2"], "EMPTY_KEY"),
    ([b"a"], "BAD_REQUEST"),
    ([b"a", "str"], "BAD_REQUEST"),
    ("nope", "BAD_REQUEST"),
])
def test_puts_bad_requests_change_nothing(h, kvs, code):
    before = h.store.current_revision
    (resp,) = h.apply([("puts", {"kvs": kvs})])
    assert isinstance(resp, RaftkvError) and resp.code == code
    assert h.store.current_revision == before
    assert h.get(b"a")["kvs"] == []


def test_puts_refused_under_the_alarm(h):
    h.one("alarm_set", {"on": True})
    (resp,) = h.apply([("puts", {"kvs": [b"a", b"1"]})])
    assert resp.code == "NO_SPACE"
    assert h.get(b"a")["kvs"] == []


def test_puts_empty(h):
    (resp,) = h.apply([("puts", {"kvs": []})])
    assert resp == {"header": {"revision": 1}, "count": 0}


def _twin_run(apply_puts, key_index, main):
    """One apply_puts call over keys and values of every msgpack size class, some keys
    already live (with versions and create revisions at size-class edges, one with a lease),
    one deleted, one repeated."""
    import msgpack

    from raftkv.storage._pybtree import BTree

    index = BTree()
    for key, create, version, lease in [(b"live", 127, 255, 0), (b"leased", 65535, 65536, 5),
                                        (b"big", 2 ** 32, 2 ** 32 - 1, 0),
                                        (b"gone", 0, 0, 0)]:
        ki = key_index()
        # History at main revision 1, before every put below (main >= 1); the cached create
        # revisions and versions sit at size-class edges for the encoded records.
        for entry in [1 << 33, ((1 << 32 | 1) << 1) | 1] if not create else [1 << 33]:
            ki.push(entry)
        ki.create, ki.version, ki.lease = create, version, lease
        index.insert(key, ki)
    keys = [b"k", b"live", b"x" * 255, b"x" * 256, b"y" * 65535, b"y" * 65536, b"leased",
            b"big", b"gone", b"k", b"new"]
    values = [b"", b"v" * 31, b"v" * 255, b"v" * 256, b"v" * 65535, b"v" * 65536, b"\x00",
              b"v" * 70000, b"w", b"again", b"n"]
    items, events, detached = [], [], []
    last = apply_puts(index, keys, values, main, key_index,
                      msgpack.Packer(use_bin_type=True).pack, items, events,
                      lambda k, lid: detached.append((k, lid)))
    state = [(k, ki.entries(), ki.create, ki.version, ki.lease) for k, ki in index.items()]
    return last, items, events, detached, state


@pytest.mark.parametrize("main", [1, 100, 126, 127, 250, 255, 65530, 65535, 2 ** 32 - 5,
                                  2 ** 40])
def test_c_and_python_puts_loops_agree(main):
    cputs = pytest.importorskip("raftkv.mvcc._cputs")
    cindex = pytest.importorskip("raftkv.mvcc._cindex")
    from raftkv.mvcc import _pyindex, _pyputs

    want = _twin_run(_pyputs.apply_puts, _pyindex.KeyIndex, main)
    assert want[0] == main + 11
    assert want[3] == [(b"leased", 5)]
    assert _twin_run(cputs.apply_puts, cindex.KeyIndex, main) == want


def test_c_puts_loop_refuses_the_pure_key_index():
    cputs = pytest.importorskip("raftkv.mvcc._cputs")
    from raftkv.mvcc import _pyindex

    with pytest.raises(TypeError, match="_cindex.KeyIndex"):
        _twin_run(cputs.apply_puts, _pyindex.KeyIndex, 0)
