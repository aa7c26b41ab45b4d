"""raftkv/mvcc/snapshot.py import_bbolt: a store filled from an etcd backend image (the half of
`snapshot restore` that reads the file) holds what the exporting store held: the same "kv",
"lease" and auth records, revision and compaction point, hence the same reads and HashKV."""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from raftkv.api.etcd.proto import auth_pb2, kv_pb2
from raftkv.errors import RaftkvError
from raftkv.mvcc import auth, bbolt, codec, snapshot
from raftkv.mvcc.kvstore import KVStore
from raftkv.storage.engine import Engine
from tests.unit.mvcc.helpers import Harness

ALICE_ETCD_HASH = "$2a$10$5wqpTTKlQNuKdKVB2hO9QOOIFebTJ9tQBm/M67f.MyYkRhvhYKFoW"  # "alicepw"


def export(store, path):
    with open(path, "wb") as f:
        return snapshot.export_bbolt(store, f)


def import_into(path, data_dir):
    engine = Engine(data_dir)
    try:
        with bbolt.Reader(path) as reader:
            info = snapshot.import_bbolt(engine, reader)
    finally:
        engine.close()
    return info


def records(data_dir):
    """{sub-db: [(key, value)]} of the replicated sub-dbs, and the store's meta."""
    engine = Engine(data_dir)
    try:
        out = {}
        for name in (codec.KV_DB, codec.LEASE_DB, auth.AUTH_DB):
            handle = engine.db(name)
            with engine.env.begin() as txn:
                out[name] = list(txn.cursor(db=handle))
        meta = engine.db(codec.META_DB)
        with engine.env.begin() as txn:
            out["meta"] = {k: codec.meta_int(txn, meta, k)
                           for k in (codec.META_REVISION, codec.META_COMPACT,
                                     codec.META_APPLIED)}
            out["pending"] = txn.get(codec.META_COMPACT_CURSOR, db=meta) is not None
        return out
    finally:
        engine.close()


def _history(h):
    h.one("lease_grant", {"TTL": 60, "ID": 7})
    h.one("lease_grant", {"TTL": 600, "ID": 1 << 40})
    h.put(b"a", b"1")                          # rev 2
    h.put(b"b", b"2", lease=7)                 # rev 3
    h.put(b"a", b"3")                          # rev 4
    h.delete(b"b")                             # rev 5
    h.put(b"c", b"\x00\xff" * 300, lease=1 << 40)
    h.put(b"d", b"")
    h.one("compact", {"revision": 5})
    h.put(b"a", b"after compaction")
    h.one("user_add", {"name": "root", "password": auth.hash_password("rootpw", cost=4)})
    h.one("user_grant_role", {"user": "root", "role": "root"})
    h.one("user_add", {"name": "alice", "password": ALICE_ETCD_HASH})
    h.one("user_add", {"name": "cn-only", "no_password": True})
    h.one("role_add", {"name": "reader"})
    h.one("role_grant_permission", {"name": "reader",
                                    "perm": {"permType": auth.READWRITE, "key": b"a",
                                             "range_end": b"c"}})
    h.one("role_grant_permission", {"name": "reader",
                                    "perm": {"permType": auth.READ, "key": b"z"}})
    h.one("user_grant_role", {"user": "alice", "role": "reader"})
    h.one("auth_enable", {})


def test_round_trip_keeps_every_record(tmp_path):
    h = Harness(tmp_path / "src")
    try:
        _history(h)
        export(h.store, tmp_path / "snap.db")
        before = {r: [h.store.range({"key": b"\0", "range_end": b"\0", "revision": r})["kvs"]]
                  for r in range(5, h.store.current_revision + 1)}
        hash_before = [snapshot.etcd_hash_kv(h.store, r)[0]
                       for r in range(6, h.store.current_revision + 1)]
        want = records_of_store(h)
    finally:
        h.close()
    info = import_into(tmp_path / "snap.db", tmp_path / "dst")
    # a@4 (the latest at the compaction), c@6, d@7, a@8; the role root is implicit
    assert info == {"revision": 8, "compact_revision": 5, "keys": 4, "leases": 2, "users": 3,
                    "roles": 1, "auth_enabled": True}
    got = records(tmp_path / "dst")
    for name in (codec.KV_DB, codec.LEASE_DB, auth.AUTH_DB):
        assert got[name] == want[name], name
    assert got["meta"] == {codec.META_REVISION: 8, codec.META_COMPACT: 5,
                           codec.META_APPLIED: 0}
    assert not got["pending"]
    h2 = Harness(tmp_path / "dst")
    try:
        after = {r: [h2.store.range({"key": b"\0", "range_end": b"\0", "revision": r})["kvs"]]
                 for r in range(5, h2.store.current_revision + 1)}
        assert after == before
        assert [snapshot.etcd_hash_kv(h2.store, r)[0]
                for r in range(6, h2.store.current_revision + 1)] == hash_before
        with pytest.raises(RaftkvError) as err:
            h2.store.range({"key": b"a", "revision": 4})
        assert err.value.code == "COMPACTED"
        store_auth = h2.store.auth
        assert store_auth.enabled and sorted(store_auth.user_list()) == \
            ["alice", "cn-only", "root"]
        store_auth.check_password("alice", "alicepw")  # etcd's bcrypt hash, restored
        store_auth.check_password("root", "rootpw")
        assert h2.put(b"e", b"new")["header"]["revision"] == 9  # revisions go on
        assert sorted(h2.store.lease_ids()) == [7, 1 << 40]
        assert h2.store.lease(1 << 40).keys == {b"c"}
    finally:
        h2.close()


def records_of_store(h):
    out = {}
    with h.engine.env.begin() as txn:
        for name in (codec.KV_DB, codec.LEASE_DB, auth.AUTH_DB):
            out[name] = list(txn.cursor(db=h.engine.db(name)))
    return out


def test_auth_records_are_etcds_protobufs(tmp_path):
    h = Harness(tmp_path / "src")
    try:
        _history(h)
        export(h.store, tmp_path / "snap.db")
    finally:
        h.close()
    with bbolt.Reader(tmp_path / "snap.db") as r:
        users = dict(r.items(b"authUsers"))
        roles = dict(r.items(b"authRoles"))
        flags = dict(r.items(b"auth"))
    alice = auth_pb2.User.FromString(users[b"alice"])
    assert (alice.name, alice.password, list(alice.roles)) == \
        (b"alice", ALICE_ETCD_HASH.encode(), ["reader"])
    assert users[b"alice"] == alice.SerializeToString()  # the bytes etcd would store
    assert auth_pb2.User.FromString(users[b"cn-only"]).options.no_password
    reader = auth_pb2.Role.FromString(roles[b"reader"])
    assert [(p.permType, p.key, p.range_end) for p in reader.keyPermission] == \
        [(auth_pb2.Permission.READWRITE, b"a", b"c"), (auth_pb2.Permission.READ, b"z", b"")]
    assert roles[b"reader"] == reader.SerializeToString()
    assert flags[b"authEnabled"] == b"\x01"
    assert struct.unpack(">Q", flags[b"authRevision"])[0] > 0


def test_unfinished_etcd_compaction_is_finished(tmp_path):
    """etcd records scheduledCompactRev before it compacts: an image cut short holds history
    below it, which the restored store then removes as a pending physical compaction."""
    rev = lambda main: struct.pack(">Q1sQ", main, b"_", 0)  # noqa: E731
    kv = lambda k, v, c, m, ver: kv_pb2.KeyValue(  # noqa: E731
        key=k, value=v, create_revision=c, mod_revision=m, version=ver).SerializeToString()
    path = tmp_path / "etcd.db"
    with open(path, "wb") as f:
        bbolt.write_db(f, [
            (b"key", [(rev(2), kv(b"a", b"1", 2, 2, 1)), (rev(3), kv(b"a", b"2", 2, 3, 2)),
                      (rev(4), kv(b"b", b"x", 4, 4, 1))]),
            (b"meta", [(b"finishedCompactRev", rev(0)), (b"scheduledCompactRev", rev(3))])])
    info = import_into(path, tmp_path / "dst")
    assert (info["revision"], info["compact_revision"]) == (4, 3)
    assert records(tmp_path / "dst")["pending"]
    h = Harness(tmp_path / "dst")
    try:
        h.put(b"c", b"y")  # each apply runs a step of the pending compaction
        assert not h.store.compaction_pending
        assert [k for k, _ in records_of_store(h)[codec.KV_DB]] == [rev(3), rev(4), rev(5)]
        assert h.get(b"a")["kvs"][0]["value"] == b"2"
    finally:
        h.close()


def _bolt(path, buckets):
    with open(path, "wb") as f:
        bbolt.write_db(f, buckets)
    return path


@pytest.mark.parametrize("buckets, message", [
    ([(b"meta", [])], "no 'key' or 'meta' bucket"),
    ([(b"key", [(b"not-a-rev", b"\x0a\x01a")]), (b"meta", [])], "not a revision key"),
    ([(b"key", [(struct.pack(">Q1sQ", 2, b"_", 0), b"\x0a\x05ab")]), (b"meta", [])],
     "runs past its record"),
    ([(b"key", [(struct.pack(">Q1sQ", 2, b"_", 0), b"\x10\x02")]), (b"meta", [])],
     "has no key"),
    ([(b"key", []), (b"lease", [(b"\x00" * 8, b"\x08\x05")]), (b"meta", [])],
     "lease bucket: bad record"),
    ([(b"authRoles", [(b"r", b"\x0a\x01r\x12\x02\x08\x07")]), (b"key", []), (b"meta", [])],
     "unknown permission type 7"),
])
def test_bad_images_are_refused(tmp_path, buckets, message):
    path = _bolt(tmp_path / "bad.db", buckets)
    with pytest.raises(snapshot.SnapshotError, match=message):
        import_into(path, tmp_path / "dst")


def test_refuses_a_store_that_is_not_empty(tmp_path):
    h = Harness(tmp_path / "src")
    try:
        h.put(b"a", b"1")
        export(h.store, tmp_path / "snap.db")
    finally:
        h.close()
    with pytest.raises(snapshot.SnapshotError, match="not empty"):
        import_into(tmp_path / "snap.db", tmp_path / "src")


@given(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=1, max_size=6),
       st.binary(max_size=40), st.binary(max_size=300))
@settings(max_examples=60, deadline=None)
def test_pb_fields_reads_what_protobuf_writes(ints, key, value):
    kv = kv_pb2.KeyValue(key=key, value=value, create_revision=ints[0],
                         mod_revision=ints[-1], version=ints[len(ints) // 2], lease=ints[0])
    f = snapshot.pb_fields(kv.SerializeToString())
    got = (f.get(1, [b""])[-1], f.get(5, [b""])[-1], f.get(2, [0])[-1], f.get(3, [0])[-1],
           f.get(4, [0])[-1], f.get(6, [0])[-1])
    assert got == (key, value, ints[0], ints[-1], ints[len(ints) // 2], ints[0])


_OPS = st.lists(st.tuples(st.sampled_from(["put", "delete", "compact"]),
                          st.sampled_from([b"a", b"b", b"c", b"d"]),
                          st.binary(max_size=8)), max_size=25)


@given(_OPS)
@settings(max_examples=25, deadline=None)
def test_any_history_round_trips(tmp_path_factory, ops):
    base = tmp_path_factory.mktemp("rt")
    h = Harness(base / "src")
    try:
        for op, key, value in ops:
            if op == "put":
                h.put(key, value)
            elif op == "delete":
                h.delete(key)
            elif h.store.current_revision > h.store.compact_revision:
                h.one("compact", {"revision": h.store.current_revision})
        export(h.store, base / "snap.db")
        want = records_of_store(h)[codec.KV_DB]
        rev, compact = h.store.current_revision, h.store.compact_revision
    finally:
        h.close()
    import_into(base / "snap.db", base / "dst")
    engine = Engine(base / "dst")
    try:
        store = KVStore(engine)
        assert (store.current_revision, store.compact_revision) == (rev, compact)
        with engine.env.begin() as txn:
            assert list(txn.cursor(db=engine.db(codec.KV_DB))) == want
    finally:
        engine.close()
