"""Pure-Python twin of raftkv.mvcc._cputs: the loop of KVStore's bulk "puts" op.

apply_puts(index, keys, values, main, key_index, pack, items, events, detach) -> last main

Plain puts keys[i] = values[i] at main revisions main + 1, main + 2, ... (sub revision 0, no
lease): updates the key index (a BTree of KeyIndex, `key_index` is the class), appends
(kv db key, pack(fields)) to `items` and (entry, fields, prev_entry) to `events`, and calls
detach(key, lease) for a live key that had a lease. Returns the main revision of the last put.
Both twins give the same index, items and events (tests/unit/mvcc/test_puts.py).
"""
import struct

from raftkv.mvcc.codec import SUB_BITS

_SHIFT = SUB_BITS + 1
_MAIN_KEY = struct.Struct(">Q1sQ").pack


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
