"""Pure-Python twin of raftkv.mvcc._cputs: the loops of KVStore's bulk "puts" op and of its
start-up index load.

apply_puts(index, keys, values, main, key_index, pack, items, events, detach) -> last main

Plain puts keys[i] = values[i] at main revisions main + 1, main + 2, ... (sub revision 0, no
lease): updates the key index (a BTree of KeyIndex, `key_index` is the class), appends
(kv db key, pack(fields)) to `items` and (entry, fields, prev_entry) to `events`, and calls
detach(key, lease) for a live key that had a lease. Returns the main revision of the last put.
Both twins give the same index, items and events (tests/unit/mvcc/test_puts.py).

load_index(index, records, key_index) -> number of records

Rebuilds the key index from the "kv" sub-db's records [(rev key, stored fields)] in key order
(revision order, codec.py): pushes each record's history entry onto its key's KeyIndex (created
with `key_index` and inserted into `index` on the key's first record) and caches the fields of
the key's latest record (create revision, version and lease; zeros after a tombstone). A
record key that is not a revision key raises ValueError, a history out of order ValueError from
KeyIndex.push. Both twins build the same index (tests/unit/mvcc/test_load_index.py).
"""
import struct

from raftkv.mvcc.codec import SUB_BITS, SUB_MASK, unpackb

_SHIFT = SUB_BITS + 1
_MAIN_KEY = struct.Struct(">Q1sQ").pack
_REV = struct.Struct(">Q1sQ")
_REV_KEY_BYTES = _REV.size  # a tombstone's key has one more byte, b"t"


def apply_puts(index, keys, values, main, key_index, pack, items, events, detach):
    get, insert, append_item, append_event = index.get, index.insert, items.append, events.append
    for key, value in zip(keys, values):
        main += 1
        ki = get(key)
        if ki is None:
            ki = key_index()
            insert(key, ki)
            create, version, prev_entry = main, 1, None
        elif ki.create:
            create, version, prev_entry = ki.create, ki.version + 1, ki.last()
            if ki.lease:
                detach(key, ki.lease)
                ki.lease = 0
        else:
            create, version, prev_entry = main, 1, None
        entry = main << _SHIFT
        fields = [key, create, main, version, value, 0]
        append_item((_MAIN_KEY(main, b"_", 0), pack(fields)))
        ki.push(entry)
        ki.create, ki.version = create, version
        append_event((entry, fields, prev_entry))
    return main


def load_index(index, records, key_index):
    get, insert, unpack_rev = index.get, index.insert, _REV.unpack_from
    n = 0
    for dbkey, raw in records:
        size = len(dbkey)
        if size != _REV_KEY_BYTES and (size != _REV_KEY_BYTES + 1 or dbkey[-1:] != b"t"):
            raise ValueError(f"load_index: {dbkey!r} is not a revision key")
        main, sep, sub = unpack_rev(dbkey)
        if sep != b"_" or sub > SUB_MASK:
            raise ValueError(f"load_index: {dbkey!r} is not a revision key")
        tombstone = size > _REV_KEY_BYTES
        entry = (main << SUB_BITS | sub) << 1 | tombstone
        fields = unpackb(raw)
        key = fields[0]
        ki = get(key)
        if ki is None:
            ki = key_index()
            insert(key, ki)
        ki.push(entry)
        if tombstone:
            ki.create = ki.version = ki.lease = 0
        else:
            ki.create, ki.version, ki.lease = fields[1], fields[3], fields[5]
        n += 1
    return n
