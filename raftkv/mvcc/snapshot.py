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
# (consistent_index, finishedCompactRev, scheduledCompactRev), "cluster" (clusterVersion) and
# the auth state: "auth" (authEnabled, authRevision), "authRoles" and "authUsers" (authpb
# Role and User; passwords are bcrypt hashes, as etcd's, see raftkv.mvcc.auth). The other
# buckets etcd creates ("alarm", "members", "members_removed") are present and empty.

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


def etcd_user_value(name, rec):
    """authpb.User{Name, Password, Roles, Options{NoPassword}} bytes (Options always set, as
    etcd 3.4 stores it)."""
    options = _pb_int(0x08, 1) if rec.get("no_password") else b""
    return b"".join((_pb_bytes(0x0A, name.encode()),
                     _pb_bytes(0x12, (rec.get("password") or "").encode()),
                     *(_pb_bytes(0x1A, role.encode()) for role in rec.get("roles", ())),
                     b"\x22" + _varint(len(options)) + options))


def etcd_role_value(name, perms):
    """authpb.Role{Name, KeyPermission[{PermType, Key, RangeEnd}]} bytes."""
    out = [_pb_bytes(0x0A, name.encode())]
    for perm_type, key, range_end in perms:
        perm = _pb_int(0x08, perm_type) + _pb_bytes(0x12, key) + _pb_bytes(0x1A, range_end)
        out.append(b"\x12" + _varint(len(perm)) + perm)
    return b"".join(out)


def etcd_auth_buckets(txn, auth_db):
    """{bucket: [(key, value)]} of etcd's "auth", "authRoles" and "authUsers" buckets."""
    st = auth.read_state(txn, auth_db)
    flags = []
    if st["enabled_set"]:
        flags.append((b"authEnabled", b"\x01" if st["enabled"] else b"\x00"))
    if st["revision"]:
        flags.append((b"authRevision", _BE64.pack(st["revision"])))
    return {b"auth": flags,
            b"authRoles": sorted((n.encode(), etcd_role_value(n, p))
                                 for n, p in st["roles"].items()),
            b"authUsers": sorted((n.encode(), etcd_user_value(n, r))
                                 for n, r in st["users"].items())}


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


def mvcc_state(txn, meta_db):
    """The MVCC position recorded in the store's meta table: consistent (applied) index,
    revision, compact revision and whether a compaction is still being carried out."""
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
                b"lease": leases(), b"meta": meta,
                **etcd_auth_buckets(txn, engine.db(auth.AUTH_DB))}
    return [(name, contents.get(name, ())) for name in ETCD_BUCKETS]


def export_bbolt(store, f):
    """Write the store's committed state to the file object f as etcd's bbolt backend; all
    from one LMDB read txn. Returns {"size", "revision", "compact_revision"}. Memory is
    bounded (bbolt.Writer) except while a physical compaction is pending (compaction_keep)."""
    from raftkv.mvcc import bbolt

    engine = store.engine
    with engine.env.begin() as txn:
        state = mvcc_state(txn, engine.db(codec.META_DB))
        size = bbolt.write_db(f, etcd_backend(engine, txn, state))
    return {"size": size, "revision": state["revision"],
            "compact_revision": state["compact_revision"]}


def etcd_hash(store):
    """etcd's Hash RPC over the backend this store exports: CRC-32C of every bucket name and
    its keys and values, without meta/consistent_index (etcd's DefaultIgnores)."""
    engine = store.engine
    with engine.env.begin() as txn:
        state = mvcc_state(txn, engine.db(codec.META_DB))
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
    (hash, current revision, compact revision or -1 before any); RaftkvError COMPACTED /
    FUTURE_REV as etcd."""
    from raftkv.errors import RaftkvError

    engine = store.engine
    kv_db = engine.db(codec.KV_DB)
    with engine.env.begin() as txn:
        state = mvcc_state(txn, engine.db(codec.META_DB))
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
    return h, current, compact or -1  # etcd's compactMainRev is -1 until a compaction


# ------------------------------------------------------------------ import (snapshot restore)
#
# The inverse of etcd_backend: a store's records from an etcd backend image, whether raftkv's
# Maintenance.Snapshot wrote it or etcd did (etcdctl snapshot save, or a member's
# member/snap/db). Only the state a restored cluster keeps is read: the keys' history, the
# compaction point, leases and auth. Membership ("members"), alarms and the Raft position
# ("meta" consistent_index) belong to the old cluster, as in etcd's snapshot restore.

IMPORT_BATCH = 10_000  # records per LMDB write txn


def _read_varint(data, i):
    shift = value = 0
    while True:
        if i >= len(data) or shift > 63:
            raise SnapshotError("truncated or overlong protobuf varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def pb_fields(data):
    """{field number: [values]} of a protobuf message: varints as ints (int64's two's
    complement), length-delimited fields as bytes; fixed-size fields are skipped. The records
    of etcd's backend use nothing else."""
    out, i, n = {}, 0, len(data)
    while i < n:
        tag, i = _read_varint(data, i)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, i = _read_varint(data, i)
            if value >= 1 << 63:
                value -= 1 << 64
        elif wire_type == 2:
            size, i = _read_varint(data, i)
            if i + size > n:
                raise SnapshotError(f"protobuf field {field} runs past its record")
            value, i = bytes(data[i:i + size]), i + size
        elif wire_type in (1, 5):
            i += 8 if wire_type == 1 else 4
            continue
        else:
            raise SnapshotError(f"protobuf wire type {wire_type} (field {field}) unsupported")
        out.setdefault(field, []).append(value)
    if i != n:
        raise SnapshotError("protobuf record truncated")
    return out


def _one(fields, number, default):
    values = fields.get(number)
    return values[-1] if values else default


def store_fields(dbkey, raw):
    """The "kv" record (stored fields list) of one record of etcd's "key" bucket."""
    if len(dbkey) not in (17, 18) or dbkey[8:9] != b"_" or \
            (len(dbkey) == 18 and dbkey[17:] != b"t"):
        raise SnapshotError(f"key bucket: {dbkey!r} is not a revision key")
    f = pb_fields(raw)
    key = _one(f, 1, b"")
    if not key:
        raise SnapshotError(f"key bucket: the record at {dbkey!r} has no key")
    main = _BE64.unpack_from(dbkey)[0]
    if len(dbkey) == 18:  # a tombstone: etcd keeps only the key
        return [key, 0, main, 0, b"", 0]
    return [key, _one(f, 2, 0), _one(f, 3, 0), _one(f, 4, 0), _one(f, 5, b""), _one(f, 6, 0)]


def _rev_main(raw, what):
    if raw is None:
        return 0
    if len(raw) != 17 or raw[8:9] != b"_":
        raise SnapshotError(f"meta {what}: {raw!r} is not a revision")
    return _BE64.unpack_from(raw)[0]


def _auth_state(reader, names):
    """(enabled, revision, users, roles) of the image's auth buckets (AuthStore's shapes)."""
    items = {n: dict(reader.items(n)) if n in names else {}
             for n in (b"auth", b"authUsers", b"authRoles")}
    enabled = items[b"auth"].get(b"authEnabled", b"\x00") == b"\x01"
    raw_rev = items[b"auth"].get(b"authRevision")
    revision = _BE64.unpack(raw_rev)[0] if raw_rev and len(raw_rev) == 8 else 0
    users, roles = {}, {}
    for name, raw in items[b"authUsers"].items():
        f = pb_fields(raw)
        no_password = bool(_one(pb_fields(_one(f, 4, b"")), 1, 0))
        password = _one(f, 2, b"").decode("ascii", "replace") or None
        users[name.decode()] = {"password": None if no_password else password,
                                "roles": sorted(r.decode() for r in f.get(3, [])),
                                "no_password": no_password}
    for name, raw in items[b"authRoles"].items():
        perms = []
        for perm_raw in pb_fields(raw).get(2, []):
            p = pb_fields(perm_raw)
            perm_type = _one(p, 1, auth.READ)
            if perm_type not in auth.PERM_TYPES:
                raise SnapshotError(f"role {name!r}: unknown permission type {perm_type}")
            perms.append((perm_type, _one(p, 2, b""), _one(p, 3, b"")))
        roles[name.decode()] = perms
    return enabled, revision, users, roles


def import_bbolt(engine, reader, batch=IMPORT_BATCH):
    """Fill an empty store (engine: a fresh data dir's) from an etcd backend image (reader: a
    bbolt.Reader). The store's applied index stays 0: the Raft log that a restore writes next
    starts the new cluster. Returns {"revision", "compact_revision", "keys", "leases",
    "users", "roles", "auth_enabled"}; SnapshotError on records that are not etcd's."""
    names = set(reader.buckets())
    if b"key" not in names or b"meta" not in names:
        raise SnapshotError("not an etcd backend image: no 'key' or 'meta' bucket")
    handles = [engine.db(n) for n in DBS]  # opened before any txn, which must see them
    kv_db, meta_db, lease_db = handles[:3]
    auth_db = engine.db(auth.AUTH_DB)
    env = engine.env
    with env.begin() as txn:
        if any(txn.stat(h)["entries"] for h in handles):
            raise SnapshotError(f"{engine.path}: the store is not empty")
    revision, keys, leases = 1, 0, 0
    pending = []

    def flush(db):
        if pending:
            with env.begin(write=True) as txn, txn.cursor(db=db) as cur:
                _, added = cur.putmulti(pending, append=True)
                assert added == len(pending), "records out of order"
            pending.clear()

    for dbkey, raw in reader.items(b"key"):
        fields = store_fields(dbkey, raw)
        pending.append((dbkey, codec.packb(fields)))
        revision = max(revision, _BE64.unpack_from(dbkey)[0])
        keys += 1
        if len(pending) >= batch:
            flush(kv_db)
    flush(kv_db)
    if b"lease" in names:
        for dbkey, raw in reader.items(b"lease"):
            f = pb_fields(raw)
            lease_id, ttl = _one(f, 1, 0), _one(f, 2, 0)
            if len(dbkey) != 8 or lease_id <= 0 or _BE64.unpack(dbkey)[0] != lease_id:
                raise SnapshotError(f"lease bucket: bad record {dbkey!r}")
            pending.append((codec.lease_key(lease_id), codec.packb([ttl, _one(f, 3, 0)])))
            leases += 1
        pending.sort()
        flush(lease_db)
    meta = dict(reader.items(b"meta"))
    finished = _rev_main(meta.get(b"finishedCompactRev"), "finishedCompactRev")
    scheduled = _rev_main(meta.get(b"scheduledCompactRev"), "scheduledCompactRev")
    compact = max(finished, scheduled)
    revision = max(revision, compact)
    enabled, auth_rev, users, roles = _auth_state(reader, names)
    with env.begin(write=True) as txn:
        codec.put_meta(txn, meta_db, codec.META_REVISION, revision)
        if compact:
            codec.put_meta(txn, meta_db, codec.META_COMPACT, compact)
            codec.put_meta(txn, meta_db, codec.META_COMPACT_TARGET, compact)
        if scheduled > finished:  # etcd's compaction was cut short: the store finishes it
            codec.put_meta(txn, meta_db, codec.META_COMPACT_CURSOR, b"")
        auth.import_records(txn, auth_db, enabled, auth_rev, users, roles)
    return {"revision": revision, "compact_revision": compact, "keys": keys, "leases": leases,
            "users": len(users), "roles": len(roles), "auth_enabled": enabled}
