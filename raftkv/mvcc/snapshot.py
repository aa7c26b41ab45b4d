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

from raftkv.mvcc import codec
from raftkv.storage import crc32c

MAGIC = b"RKVS"
FORMAT = 1
FLAG_LAST = 1
CHUNK_BYTES_DEFAULT = 1 << 20
_HEADER = struct.Struct(">4sHHII")
_CRC = struct.Struct(">I")
HEADER_BYTES = _HEADER.size + _CRC.size
DBS = (codec.KV_DB, codec.META_DB, codec.LEASE_DB)


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
