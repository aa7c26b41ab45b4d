"""Snapshots of the MVCC store: the whole committed state as checksummed chunks.

Chunk layout: a 20-byte header ``magic b"RKVS" | format u16 | flags u16 | seq u32 |
payload length u32 | crc32c u32`` then the msgpack payload. The CRC32C covers the first 16
header bytes and the payload. Chunk 0's payload is the snapshot header {"format",
"applied_index", "revision", "compact_revision", "records"}; later chunks hold lists of
[sub-db name, key, value] records of the "kv", "kvmeta" and "lease" sub-dbs; the last chunk has
flag 1. All chunks come from one LMDB read txn, so they are one consistent state.

Restore writes into one LMDB write txn, verifying each chunk first: a corrupt, reordered or
truncated stream raises SnapshotError and the txn is aborted, leaving the store as it was.
"""
from __future__ import annotations

import struct

from raftkv.mvcc import auth, codec
from raftkv.storage import crc32c

MAGIC = b"RKVS"
FORMAT = 1
FLAG_LAST = 1
CHUNK_BYTES_DEFAULT = 1 << 20
_HEADER = struct.Struct(">4sHHII")
_CRC = struct.Struct(">I")
HEADER_BYTES = _HEADER.size + _CRC.size
# The store's sub-dbs, then the member's idempotency table (raftkv.server.member._remember),
# which is replicated state too.
DBS = (codec.KV_DB, codec.META_DB, codec.LEASE_DB, "dedup", "dedup_order", auth.AUTH_DB)


class SnapshotError(Exception):
    """A snapshot stream is corrupt, truncated or of an unknown format."""


def _chunk(seq, payload, last):
    head = _HEADER.pack(MAGIC, FORMAT, FLAG_LAST if last else 0, seq, len(payload))
    return head + _CRC.pack(crc32c(head + payload)) + payload


def parse_chunk(chunk, expect_seq):
    """(payload, last) of a chunk; SnapshotError if it does not check out."""
    chunk = bytes(chunk)
    if len(chunk) < HEADER_BYTES:
        raise SnapshotError(f"snapshot chunk {expect_seq}: {len(chunk)} bytes, too short")
    head = chunk[:_HEADER.size]
    magic, fmt, flags, seq, length = _HEADER.unpack(head)
    (crc,) = _CRC.unpack_from(chunk, _HEADER.size)
    payload = chunk[HEADER_BYTES:]
    if magic != MAGIC or fmt != FORMAT:
        raise SnapshotError(f"snapshot chunk {expect_seq}: bad magic or format {fmt}")
    if length != len(payload) or crc32c(head + payload) != crc:
        raise SnapshotError(f"snapshot chunk {expect_seq}: checksum mismatch (corrupt)")
    if seq != expect_seq:
        raise SnapshotError(f"snapshot chunk {seq} out of order (expected {expect_seq})")
    return payload, bool(flags & FLAG_LAST)


def export_chunks(store, chunk_bytes=None):
    """Generator of the chunks of the store's committed state."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES_DEFAULT
    env = store.engine.env
    for name in DBS:
        store.engine.db(name)  # opened (created) before the read txn, which must see them
    with env.begin() as txn:
        meta = store.engine.db(codec.META_DB)
        head = {"format": FORMAT,
                "applied_index": codec.meta_int(txn, meta, codec.META_APPLIED),
                "revision": codec.meta_int(txn, meta, codec.META_REVISION, 1),
                "compact_revision": codec.meta_int(txn, meta, codec.META_COMPACT),
                "records": sum(txn.stat(store.engine.db(n))["entries"] for n in DBS)}
        seq = 0
        pending = _chunk(seq, codec.packb(head), False)
        batch, size = [], 0
        for name in DBS:
            for key, value in txn.cursor(db=store.engine.db(name)):
                batch.append([name, key, value])
                size += len(key) + len(value) + 16
                if size >= chunk_bytes:
                    yield pending
                    seq += 1
                    pending = _chunk(seq, codec.packb(batch), False)
                    batch, size = [], 0
        yield pending
        yield _chunk(seq + 1, codec.packb(batch), True)


def restore_chunks(store, chunks, also=None):
    """Replace the store's sub-dbs with the snapshot's records in one write txn.
    also(txn), if given, writes more in the same txn once the image checked out.
    Returns the snapshot header. The caller reloads the in-memory state."""
    env = store.engine.env
    handles = {name: store.engine.db(name) for name in DBS}
    with env.begin(write=True) as txn:
        for handle in handles.values():
            txn.drop(handle, delete=False)
        head, count, last, seq = None, 0, False, 0
        for seq, chunk in enumerate(chunks):
            if last:
                raise SnapshotError(f"snapshot chunk {seq} after the last chunk")
            payload, last = parse_chunk(chunk, seq)
            obj = codec.unpackb(payload)
            if seq == 0:
                head = _check_head(obj)
                continue
            for name, key, value in obj:
                if name not in handles:
                    raise SnapshotError(f"snapshot record for unknown sub-db {name!r}")
                txn.put(key, value, db=handles[name])
                count += 1
        if not last or head is None:
            raise SnapshotError(f"snapshot truncated after chunk {seq}")
        if count != head["records"]:
            raise SnapshotError(f"snapshot has {count} records, header says {head['records']}")
        if also is not None:
            also(txn)
    return head


def _check_head(obj):
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or "records" not in obj:
        raise SnapshotError("snapshot chunk 0 is not a snapshot header")
    return obj


# ------------------------------------------------------------------ etcd backend image (bbolt)
#
# Maintenance.Snapshot sends what etcd sends: its backend, a bbolt file. The records are
# etcd 3.4's: bucket "key" (the "kv" sub-db's keys, which are already etcd's 17/18-byte
# revision keys, with mvccpb.KeyValue values; a tombstone's value holds only the key, as in
# etcd), "lease" (8-byte big-endian ID -> leasepb.Lease{ID, TTL, RemainingTTL}), "meta"
# (consistent_index, finishedCompactRev, scheduledCompactRev) and "cluster"
# (clusterVersion); the other buckets etcd creates are present and empty.

ETCD_BUCKETS = (b"alarm", b"auth", b"authRoles", b"authUsers", b"cluster", b"key", b"lease",
                b"members", b"members_removed", b"meta")
CLUSTER_VERSION = b"3.4.0"
_BE64 = struct.Struct(">Q")


def _varint(n):
    n &= 0xFFFFFFFFFFFFFFFF  # int64 fields: negatives take 10 bytes, as in Go
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_int(tag, n):
    return bytes((tag,)) + _varint(n) if n else b""


def _pb_bytes(tag, data):
    return bytes((tag,)) + _varint(len(data)) + data if data else b""


def etcd_kv_value(fields, tombstone):
    """mvccpb.KeyValue bytes (as etcd's gogoproto Marshal) of a stored "kv" record."""
    key, create, mod, version, value, lease = (list(fields) + [b"", 0, 0, 0, b"", 0])[:6]
    if tombstone:  # etcd stores KeyValue{Key: key} for a deletion
        return _pb_bytes(0x0A, key)
    return b"".join((_pb_bytes(0x0A, key), _pb_int(0x10, create), _pb_int(0x18, mod),
                     _pb_int(0x20, version), _pb_bytes(0x2A, value), _pb_int(0x30, lease)))


def etcd_lease_value(lease_id, ttl, remaining):
    """leasepb.Lease{ID, TTL, RemainingTTL} bytes."""
    return _pb_int(0x08, lease_id) + _pb_int(0x10, ttl) + _pb_int(0x18, remaining)


def _rev_bytes(main):
    return codec.main_key(main)


def compaction_keep(txn, kv_db, compact):
    """The "kv" keys at or below `compact` that etcd keeps after compacting there (each key's
    latest revision at or below it, unless a tombstone), or None when nothing at or below it
    can be stale. Only needed while a physical compaction is in progress (raftkv compacts in
    bounded steps; etcd's file would already be compacted)."""
    if not compact:
        return None
    latest = {}
    upper = codec.main_key(compact + 1)
    for dbkey, raw in txn.cursor(db=kv_db):
        if dbkey >= upper:
            break
        latest[codec.unpackb(raw)[0]] = dbkey
    return {k for k in latest.values() if len(k) == 17}


def etcd_key_records(txn, kv_db, compact, keep, upper=None):
    """(key, KeyValue bytes) of etcd's "key" bucket: every revision, except those at or below
    the compact revision that etcd's compaction removes (when keep is not None); up to
    (excluding) the revision key `upper` if given."""
    lower = codec.main_key(compact + 1)
    for dbkey, raw in txn.cursor(db=kv_db):
        if upper is not None and dbkey >= upper:
            break
        if keep is not None and dbkey < lower and dbkey not in keep:
            continue
        yield dbkey, etcd_kv_value(codec.unpackb(raw), len(dbkey) > 17)


def _state(txn, meta_db):
    applied = codec.meta_int(txn, meta_db, codec.META_APPLIED)
    return {"consistent_index": codec.meta_int(txn, meta_db, codec.META_CONSISTENT, applied),
            "revision": codec.meta_int(txn, meta_db, codec.META_REVISION, 1),
            "compact_revision": codec.meta_int(txn, meta_db, codec.META_COMPACT),
            "pending": txn.get(codec.META_COMPACT_CURSOR, db=meta_db) is not None}


def etcd_backend(engine, txn, state):
    """[(bucket name, iterable of (key, value))] of etcd's backend for the state in txn,
    bucket names ascending (generators: consume them in order, inside the txn)."""
    kv_db, _, lease_db = (engine.db(n) for n in DBS[:3])
    compact = state["compact_revision"]
    keep = compaction_keep(txn, kv_db, compact) if state["pending"] else None

    def leases():
        for dbkey, raw in txn.cursor(db=lease_db):
            ttl, remaining = codec.unpackb(raw)
            yield dbkey, etcd_lease_value(codec.lease_id_of(dbkey), ttl, remaining)

    meta = [(b"consistent_index", _BE64.pack(state["consistent_index"]))]
    if compact:
        meta += [(b"finishedCompactRev", _rev_bytes(compact)),
                 (b"scheduledCompactRev", _rev_bytes(compact))]
    contents = {b"cluster": [(b"clusterVersion", CLUSTER_VERSION)],
                b"key": etcd_key_records(txn, kv_db, compact, keep),
                b"lease": leases(), b"meta": meta}
    return [(name, contents.get(name, ())) for name in ETCD_BUCKETS]


def export_bbolt(store, f):
    """Write the store's committed state to the file object f as etcd's bbolt backend; all
    from one LMDB read txn. Returns {"size", "revision", "compact_revision"}. Memory is
    bounded (bbolt.Writer) except while a physical compaction is pending (compaction_keep)."""
    from raftkv.mvcc import bbolt

    engine = store.engine
    with engine.env.begin() as txn:
        state = _state(txn, engine.db(codec.META_DB))
        size = bbolt.write_db(f, etcd_backend(engine, txn, state))
    return {"size": size, "revision": state["revision"],
            "compact_revision": state["compact_revision"]}


def etcd_hash(store):
    """etcd's Hash RPC over the backend this store exports: CRC-32C of every bucket name and
    its keys and values, without meta/consistent_index (etcd's DefaultIgnores)."""
    engine = store.engine
    with engine.env.begin() as txn:
        state = _state(txn, engine.db(codec.META_DB))
        h = 0
        for name, items in etcd_backend(engine, txn, state):
            h = crc32c(name, h)
            for key, value in items:
                if name == b"meta" and key == b"consistent_index":
                    continue
                h = crc32c(value, crc32c(key, h))
    return h, state["revision"]


def etcd_hash_kv(store, rev=0):
    """etcd 3.4's HashKV (mvcc store.HashByRev): CRC-32C of b"key" then the "key" bucket's
    keys and KeyValue bytes up to revision rev (0: the current one), where a revision at or
    below the compact revision counts only if it is its key's latest at or below rev and not a
    tombstone (etcd's kvindex.Keep(rev); all of them if no key is live at rev). Returns
    (hash, current revision, compact revision); RaftkvError COMPACTED / FUTURE_REV as etcd."""
    from raftkv.errors import RaftkvError

    engine = store.engine
    kv_db = engine.db(codec.KV_DB)
    with engine.env.begin() as txn:
        state = _state(txn, engine.db(codec.META_DB))
        current, compact = state["revision"], state["compact_revision"]
        if rev and rev <= compact:
            raise RaftkvError("COMPACTED")
        if rev and rev > current:
            raise RaftkvError("FUTURE_REV")
        upper = codec.main_key((rev or current) + 1)
        latest = {}
        for dbkey, raw in txn.cursor(db=kv_db):
            if dbkey >= upper:
                break
            latest[codec.unpackb(raw)[0]] = dbkey
        keep = {k for k in latest.values() if len(k) == 17}
        del latest
        if not keep:  # etcd then counts what its compaction left at or below compact
            keep = compaction_keep(txn, kv_db, compact) if state["pending"] else None
        h = crc32c(b"key")
        for dbkey, value in etcd_key_records(txn, kv_db, compact, keep, upper):
            h = crc32c(value, crc32c(dbkey, h))
    return h, current, compact
