"""load_index, the start-up rebuild of the key index from the stored records: the C loop
(raftkv.mvcc._cputs) against the pure one (raftkv.mvcc._pyputs) on records of every msgpack
size class and on records the C loop hands to msgpack, and both against the index a store built
by applying the same history."""
import tempfile

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from raftkv.mvcc import _pyindex, _pyputs, codec
from raftkv.storage._pybtree import BTree
from tests.unit.mvcc.helpers import Harness


def twins():
    """(load_index, KeyIndex) of each twin built here."""
    out = [("pure", _pyputs.load_index, _pyindex.KeyIndex)]
    try:
        from raftkv.mvcc import _cindex, _cputs
    except ImportError:  # a pure build
        return out
    return out + [("c", _cputs.load_index, _cindex.KeyIndex)]


def load(twin, records):
    _, load_index, key_index = twin
    index = BTree()
    n = load_index(index, records, key_index)
    return n, [(k, ki.entries(), ki.create, ki.version, ki.lease) for k, ki in index.items()]


def record(key, create, mod, version, value, lease):
    return msgpack.packb([key, create, mod, version, value, lease], use_bin_type=True)


def entry(main, sub=0, tomb=False):
    return ((main << 32 | sub) << 1) | int(tomb)


# Ints at every msgpack size edge, signed and unsigned, within int64 (the C KeyIndex's fields).
INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 63 - 1, -1, -32,
        -33, -128, -129, -32768, -32769, -2 ** 31, -2 ** 31 - 1, -2 ** 63]


def mixed_records():
    """A history over a few keys with every int size class in create/version/lease, keys and
    values of every bin size class, tombstones, sub revisions, and records the C loop's fast
    path does not read (a str value, a record of 7 fields: msgpack decodes those)."""
    out, main = [], 0
    keys = [b"a", b"k" * 255, b"k" * 256, b"m" * 65536, b""]
    values = [b"", b"v" * 31, b"v" * 256, b"v" * 65536]
    for i, n in enumerate(INTS):
        main += 1
        key = keys[i % len(keys)]
        out.append((codec.rev_key(entry(main)),
                    record(key, n, main, INTS[-1 - i], values[i % len(values)], n)))
        out.append((codec.rev_key(entry(main, 1)), record(b"sub", main, main, 1, b"x", 0)))
        if i % 4 == 3:
            out.append((codec.rev_key(entry(main, 2, True)), record(key, 0, main, 0, b"", 0)))
    main += 1
    out.append((codec.rev_key(entry(main)), msgpack.packb([b"strval", 1, main, 1, "str", 0],
                                                          use_bin_type=True)))
    main += 1
    out.append((codec.rev_key(entry(main)),
                msgpack.packb([b"tail", 1, main, 1, b"x", 0, "extra"], use_bin_type=True)))
    return out


def test_twins_agree_on_every_size_class():
    records = mixed_records()
    results = [load(twin, records) for twin in twins()]
    n, state = results[0]
    assert n == len(records)
    by_key = {k: (entries, create, version, lease) for k, entries, create, version, lease
              in state}
    assert by_key[b"strval"][1:] == (1, 1, 0)  # a str value: the slow path reads the rest
    assert by_key[b"sub"][0] == [entry(m, 1) for m in range(1, len(INTS) + 1)]
    assert by_key[b"tail"][1:] == (1, 1, 0)  # extra fields: the slow path reads them right
    for other in results[1:]:
        assert other == results[0]


@pytest.mark.parametrize("dbkey", [b"", b"\0" * 16, b"\0" * 8 + b"-" + b"\0" * 8,
                                   b"\0" * 17 + b"x", b"\0" * 19,
                                   b"\0" * 8 + b"_" + (1 << 32).to_bytes(8, "big")])
def test_a_record_key_that_is_no_revision_key_is_refused(dbkey):
    for twin in twins():
        with pytest.raises(ValueError, match="not a revision key"):
            load(twin, [(dbkey, record(b"a", 1, 1, 1, b"v", 0))])


def test_a_str_key_is_refused_by_the_index():
    raw = msgpack.packb(["a", 1, 1, 1, b"v", 0], use_bin_type=True)
    for twin in twins():
        with pytest.raises(TypeError, match="keys must be bytes"):
            load(twin, [(codec.rev_key(entry(1)), raw)])


def test_a_history_out_of_order_is_refused():
    records = [(codec.rev_key(entry(5)), record(b"a", 5, 5, 1, b"v", 0)),
               (codec.rev_key(entry(4)), record(b"a", 5, 4, 2, b"v", 0))]
    for twin in twins():
        with pytest.raises(ValueError, match="not after"):
            load(twin, records)


@pytest.mark.parametrize("damage", ["truncated", "trailing bytes"])
def test_damaged_records_fail_in_both_twins(damage):
    raw = record(b"a", 1, 1, 1, b"v", 0)
    raw = raw[:-3] if damage == "truncated" else raw + b"\0"
    for twin in twins():
        with pytest.raises(ValueError):  # msgpack's truncation and ExtraData errors are these
            load(twin, [(codec.rev_key(entry(1)), raw)])


def test_c_loop_refuses_the_pure_key_index():
    cputs = pytest.importorskip("raftkv.mvcc._cputs")
    with pytest.raises(TypeError, match="_cindex.KeyIndex"):
        cputs.load_index(BTree(), [], _pyindex.KeyIndex)


KEYS = [b"a", b"b", b"c"]
_op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=3), st.booleans()),
    st.tuples(st.just("puts"), st.lists(st.sampled_from(KEYS), max_size=4)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
    st.tuples(st.just("compact"),))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_op, min_size=1, max_size=3), min_size=1, max_size=10))
def test_reload_gives_the_index_the_applies_built(entries):
    """Apply a history (puts with and without a lease, bulk puts, deletes, compactions), then
    load the stored records with each twin: the same index the applies left in memory, and a
    reopened store sees the same."""
    with tempfile.TemporaryDirectory() as d:
        h = Harness(d + "/data")
        try:
            lease = h.one("lease_grant", {"TTL": 60, "ID": 9})["ID"]
            for ops in entries:
                reqs = []
                for op in ops:
                    if op[0] == "put":
                        body = {"key": op[1], "value": op[2]}
                        if op[3]:
                            body["lease"] = lease
                        reqs.append(("put", body))
                    elif op[0] == "puts":
                        reqs.append(("puts", {"kvs": [x for k in op[1] for x in (k, b"p")]}))
                    elif op[0] == "delete":
                        reqs.append(("delete_range", {"key": op[1]}))
                    elif h.store.current_revision > 1:
                        reqs.append(("compact", {"revision": h.store.current_revision - 1,
                                                 "physical": True}))
                if reqs:
                    h.apply(reqs)
            live = [(k, ki.entries(), ki.create, ki.version, ki.lease)
                    for k, ki in h.store._index.items()]
            with h.engine.env.begin() as txn:
                records = list(txn.cursor(db=h.engine.db(codec.KV_DB)))
            for twin in twins():
                assert load(twin, records) == (len(records), live)
            keys_before = sorted(h.store.lease(lease).keys)
            h.reopen()
            assert [(k, ki.entries(), ki.create, ki.version, ki.lease)
                    for k, ki in h.store._index.items()] == live
            assert sorted(h.store.lease(lease).keys) == keys_before
        finally:
            h.close()


def test_a_store_without_leases_still_loads_its_keys(tmp_path):
    h = Harness(tmp_path / "data")
    try:
        h.put(b"a", b"1")
        h.put(b"b", b"2")
        h.delete(b"a")
        store = h.reopen()
        assert store.lease_ids() == []
        assert [k for k, ki in store._index.items() if ki.create] == [b"b"]
        assert h.get(b"b")["kvs"][0]["value"] == b"2"
    finally:
        h.close()
