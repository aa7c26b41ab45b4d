"""raftkv/mvcc/bbolt.py: the bbolt writer round-trips through the reader and passes the
reader's tx.Check()-like check; the MVCC store's etcd backend export (snapshot.export_bbolt)."""
import struct

import pytest

from raftkv.api.etcd.proto import kv_pb2
from raftkv.errors import RaftkvError
from raftkv.mvcc import bbolt, snapshot
from raftkv.storage import crc32c
from tests.unit.mvcc.helpers import Harness


def write(path, buckets):
    with open(path, "wb") as f:
        size = bbolt.write_db(f, buckets)
    assert size % bbolt.PAGE_SIZE == 0
    return size


def read_all(path):
    with bbolt.Reader(path) as r:
        assert r.check() == []
        return {name: list(r.items(name)) for name in r.buckets()}


def page_types(path):
    with bbolt.Reader(path) as r:
        high = r.meta["pgid"]
        out = {}
        pgid = 0
        while pgid < high:
            _, flags, _, overflow = r.page_header(pgid)
            out[pgid] = (flags, overflow)
            pgid += overflow + 1
        return out


def test_empty_db(tmp_path):
    path = tmp_path / "empty.db"
    size = write(path, [])
    assert size == 4 * bbolt.PAGE_SIZE  # meta, meta, freelist, root leaf: as `bolt` makes it
    assert read_all(path) == {}
    with open(path, "rb") as f:
        head = f.read(bbolt.PAGE_SIZE + 64)
    magic, version, page_size = struct.unpack_from("<III", head, 16)
    assert (magic, version, page_size) == (0xED0CDAED, 2, 4096)
    assert bbolt.snapshot_status(path) == {"hash": 0, "revision": 0, "totalKey": 0,
                                           "totalSize": size}


def test_one_key_inline_bucket(tmp_path):
    path = tmp_path / "one.db"
    size = write(path, [(b"b", [(b"k", b"v")])])
    assert size == 4 * bbolt.PAGE_SIZE  # the small bucket is inline in the root leaf
    assert read_all(path) == {b"b": [(b"k", b"v")]}
    want = crc32c(b"v", crc32c(b"k", crc32c(b"b")))
    assert bbolt.snapshot_status(path)["hash"] == want


def test_empty_buckets(tmp_path):
    path = tmp_path / "e.db"
    write(path, [(b"a", []), (b"b", []), (b"c", [(b"x", b"y")])])
    assert read_all(path) == {b"a": [], b"b": [], b"c": [(b"x", b"y")]}


def test_10000_keys_branch_and_overflow_pages(tmp_path):
    path = tmp_path / "big.db"
    items = [(b"key%06d" % i, b"value-%d" % i * (i % 7)) for i in range(10_000)]
    big = bytes(range(256)) * 400  # 100 KB value: a 26-page leaf
    items.insert(5001, (b"key005000.5", big))
    write(path, [(b"data", items), (b"more", [(b"z", b"1")])])
    got = read_all(path)
    assert got[b"data"] == items and got[b"more"] == [(b"z", b"1")]
    types = page_types(path)
    flags = [f for f, _ in types.values()]
    assert flags.count(bbolt.BRANCH_PAGE) >= 1 and flags.count(bbolt.LEAF_PAGE) > 100
    assert max(o for _, o in types.values()) == -(-(len(big) + 16 + 16 + 11) // 4096) - 1


def test_three_level_tree_and_big_keys(tmp_path):
    path = tmp_path / "deep.db"
    # 600-byte keys: few keys per leaf and per branch, so the tree gets 3+ levels
    items = [(b"%05d" % i + b"k" * 600, b"v") for i in range(2000)]
    write(path, [(b"deep", items)])
    assert read_all(path)[b"deep"] == items
    with bbolt.Reader(path) as r:
        root_value = r._bucket_value(b"deep")
        root, _ = struct.unpack_from("<QQ", root_value)
        _, flags, _, _ = r.page_header(root)
        assert flags == bbolt.BRANCH_PAGE
        # its first child is a branch too
        child = struct.unpack_from("<IIQ", r.buf, root * 4096 + 16)[2]
        assert r.page_header(child)[1] == bbolt.BRANCH_PAGE


def test_many_buckets(tmp_path):
    path = tmp_path / "many.db"
    buckets = [(b"bucket%04d" % i, [(b"k%02d" % j, b"v" * (i % 50)) for j in range(i % 30)])
               for i in range(500)]
    write(path, buckets)
    got = read_all(path)
    assert got == {name: items for name, items in buckets}


def test_writer_rejects_unsorted_input(tmp_path):
    with open(tmp_path / "x.db", "wb") as f:
        with pytest.raises(bbolt.BoltError):
            bbolt.write_db(f, [(b"b", [(b"2", b""), (b"1", b"")])])
    with open(tmp_path / "y.db", "wb") as f:
        with pytest.raises(bbolt.BoltError):
            bbolt.write_db(f, [(b"b", []), (b"a", [])])


def test_reader_rejects_bad_checksum(tmp_path):
    path = tmp_path / "bad.db"
    write(path, [(b"b", [(b"k", b"v")])])
    data = bytearray(path.read_bytes())
    for page in (0, 1):
        data[page * 4096 + 16 + 32] ^= 1  # freelist pgid of both metas
    path.write_bytes(bytes(data))
    with pytest.raises(bbolt.BoltError, match="checksum"):
        bbolt.Reader(path)


def test_check_reports_unreachable_pages(tmp_path):
    path = tmp_path / "u.db"
    write(path, [(b"b", [(b"k%04d" % i, b"v" * 100) for i in range(200)])])
    data = bytearray(path.read_bytes())
    body = bytearray(data[16:16 + 56])
    high = struct.unpack_from("<Q", body, 40)[0]
    struct.pack_into("<Q", body, 40, high + 1)  # claim one more page than the tree uses
    data[16:16 + 56] = body
    struct.pack_into("<Q", data, 16 + 56, bbolt.fnv1a64(bytes(body)))
    data[4096:8192] = bytes(4096)  # meta 1 invalid: meta 0 is used
    data += bytes(4096)
    path.write_bytes(bytes(data))
    with bbolt.Reader(path) as r:
        assert r.check() == [f"page {high}: unreachable unfreed"]


def test_store_export_is_etcd_backend(tmp_path):
    h = Harness(tmp_path / "data")
    try:
        grant = h.one("lease_grant", {"TTL": 60, "ID": 7})
        assert grant["ID"] == 7
        h.put(b"a", b"1")                      # rev 2
        h.put(b"b", b"2", lease=7)             # rev 3
        h.put(b"a", b"3")                      # rev 4
        h.delete(b"b")                         # rev 5
        h.put(b"c", b"4")                      # rev 6
        h.one("compact", {"revision": 5})      # drops a@2, b@3 and b's tombstone @5
        path = tmp_path / "snap.db"
        with open(path, "wb") as f:
            info = snapshot.export_bbolt(h.store, f)
        assert info["revision"] == 6 and info["compact_revision"] == 5
        got = read_all(path)
        assert sorted(got) == sorted(snapshot.ETCD_BUCKETS)
        keys = [(struct.unpack(">Q", k[:8])[0], k[17:]) for k, _ in got[b"key"]]
        assert keys == [(4, b""), (6, b"")]
        kv = kv_pb2.KeyValue.FromString(got[b"key"][0][1])
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == \
            (b"a", b"3", 2, 4, 2)
        assert got[b"key"][0][1] == kv.SerializeToString()  # the bytes etcd would store
        assert got[b"lease"] == [(struct.pack(">q", 7), b"\x08\x07\x10\x3c")]
        meta = dict(got[b"meta"])
        assert meta[b"finishedCompactRev"] == struct.pack(">Q1sQ", 5, b"_", 0)
        assert meta[b"consistent_index"] == struct.pack(">Q", h.index)
        status = bbolt.snapshot_status(path)
        assert status["revision"] == 6 and status["totalKey"] == 2 + 1 + 3 + 1
    finally:
        h.close()


def test_export_filters_pending_compaction(tmp_path):
    h = Harness(tmp_path / "data", compaction_batch=1)
    try:
        for i in range(5):
            h.put(b"k%d" % i, b"old")
        for i in range(5):
            h.put(b"k%d" % i, b"new")
        h.delete(b"k0")
        h.one("compact", {"revision": h.store.current_revision})  # 1 key per step: pending
        assert h.store.compaction_pending
        path = tmp_path / "snap.db"
        with open(path, "wb") as f:
            snapshot.export_bbolt(h.store, f)
        values = [kv_pb2.KeyValue.FromString(v) for _, v in read_all(path)[b"key"]]
        assert sorted((kv.key, kv.value) for kv in values) == [
            (b"k%d" % i, b"new") for i in range(1, 5)]
    finally:
        h.close()


def test_tombstone_value_is_key_only():
    assert snapshot.etcd_kv_value([b"k", 0, 9, 0, b"", 0], True) == \
        kv_pb2.KeyValue(key=b"k").SerializeToString()
    fields = [b"k", 3, 9, 2, b"v", -5]
    assert snapshot.etcd_kv_value(fields, False) == kv_pb2.KeyValue(
        key=b"k", create_revision=3, mod_revision=9, version=2, value=b"v",
        lease=-5).SerializeToString()


def _history(h):
    for i in range(6):
        h.put(b"k%d" % i, b"old%d" % i)
    for i in range(3):
        h.put(b"k%d" % i, b"new%d" % i)
    h.delete(b"k4")
    h.put(b"k5", b"newer")


def test_hash_kv_ignores_physical_compaction_progress(tmp_path):
    """HashKV depends on the history, not on how far the physical compaction got (etcd's
    kvindex.Keep), and rev=R hashes only revisions up to R."""
    a = Harness(tmp_path / "a", compaction_batch=1)
    b = Harness(tmp_path / "b")
    try:
        for h in (a, b):
            _history(h)
            h.one("compact", {"revision": 8})
        assert a.store.compaction_pending and not b.store.compaction_pending
        assert snapshot.etcd_hash_kv(a.store) == snapshot.etcd_hash_kv(b.store)
        assert snapshot.etcd_hash_kv(a.store, 10) == snapshot.etcd_hash_kv(b.store, 10)
        assert snapshot.etcd_hash(a.store) == snapshot.etcd_hash(b.store)
        h10, cur, compact = snapshot.etcd_hash_kv(b.store, 10)
        assert (cur, compact) == (b.store.current_revision, 8)
        assert h10 != snapshot.etcd_hash_kv(b.store)[0]
        with pytest.raises(RaftkvError, match="compacted"):
            snapshot.etcd_hash_kv(b.store, 8)
        with pytest.raises(RaftkvError, match="future revision"):
            snapshot.etcd_hash_kv(b.store, cur + 1)
    finally:
        a.close()
        b.close()


def test_hash_kv_by_hand():
    """The algorithm on a tiny history, computed independently from the "key" records."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        h = Harness(d)
        try:
            h.put(b"a", b"1")   # 2
            h.put(b"a", b"2")   # 3
            h.put(b"b", b"3")   # 4
            h.one("compact", {"revision": 3})  # drops a@2
            h.put(b"a", b"4")   # 5

            def rec(main, fields):
                return struct.pack(">Q1sQ", main, b"_", 0), kv_pb2.KeyValue(
                    **fields).SerializeToString()
            a3 = rec(3, dict(key=b"a", value=b"2", create_revision=2, mod_revision=3,
                             version=2))
            b4 = rec(4, dict(key=b"b", value=b"3", create_revision=4, mod_revision=4,
                             version=1))
            a5 = rec(5, dict(key=b"a", value=b"4", create_revision=2, mod_revision=5,
                             version=3))

            def crc(*records):
                out = crc32c(b"key")
                for k, v in records:
                    out = crc32c(v, crc32c(k, out))
                return out
            # at 5, a@3 (at or below the compact revision) is not a's latest: left out
            assert snapshot.etcd_hash_kv(h.store)[0] == crc(b4, a5)
            assert snapshot.etcd_hash_kv(h.store, 4)[0] == crc(a3, b4)
        finally:
            h.close()
