"""On-disk encodings of the MVCC store (sub-dbs "kv", "kvmeta", "lease").

Revisions. A revision is (main, sub): one main revision per write request or txn, sub counts
the changes inside it. In memory a revision is the int ``main << 32 | sub``; a key's history
entry is ``rev << 1 | tombstone`` so one sorted list of ints holds a key's whole history.

"kv" keys are etcd's: 8-byte big-endian main, b"_", 8-byte big-endian sub (17 bytes), plus b"t"
for a tombstone, so LMDB order is revision order. Values are msgpack of the KeyValue fields as
a list [key, create_revision, mod_revision, version, value, lease] (a tombstone keeps only key
and mod_revision). "kvmeta" values and "lease" values are msgpack too.
"""
from __future__ import annotations

import struct

import msgpack

SUB_BITS = 32
SUB_MASK = (1 << SUB_BITS) - 1
_REV = struct.Struct(">Q1sQ")
_ID = struct.Struct(">q")

KV_DB = "kv"
META_DB = "kvmeta"
LEASE_DB = "lease"

META_APPLIED = b"applied_index"
META_CONSISTENT = b"consistent_index"
META_REVISION = b"revision"
META_COMPACT = b"compact_revision"
META_COMPACT_CURSOR = b"compact_cursor"  # next key to compact physically (absent: none pending)
META_COMPACT_TARGET = b"compact_target"

packb = msgpack.packb  # thread-safe; the store keeps its own Packer for the apply path


def unpackb(data):
    return msgpack.unpackb(data, raw=False, use_list=True)


def make_rev(main, sub=0):
    return main << SUB_BITS | sub


def entry_main(entry):
    """Main revision of a history entry (rev << 1 | tombstone)."""
    return entry >> (SUB_BITS + 1)


def rev_key(entry):
    """The "kv" sub-db key of a history entry."""
    rev = entry >> 1
    key = _REV.pack(rev >> SUB_BITS, b"_", rev & SUB_MASK)
    return key + b"t" if entry & 1 else key


def key_entry(dbkey):
    """Inverse of rev_key."""
    main, _, sub = _REV.unpack_from(dbkey)
    return (main << SUB_BITS | sub) << 1 | (len(dbkey) > 17)


def main_key(main):
    """The smallest "kv" key of a main revision (for scans from a revision)."""
    return _REV.pack(main, b"_", 0)


def kv_dict(fields):
    """A KeyValue dict (etcd field names) from the stored list."""
    key, create, mod, version, value, lease = fields
    return {"key": key, "create_revision": create, "mod_revision": mod, "version": version,
            "value": value, "lease": lease}


def lease_key(lease_id):
    return _ID.pack(lease_id)


def lease_id_of(dbkey):
    return _ID.unpack(dbkey)[0]


def meta_int(txn, db, name, default=0):
    raw = txn.get(name, db=db)
    return default if raw is None else int(unpackb(raw))


def put_meta(txn, db, name, value):
    txn.put(name, packb(value), db=db)
