"""The in-memory key index: key -> KeyIndex (a key's revision history), kept in a BTree.

A KeyIndex is etcd's keyIndex with its generations flattened into one ascending list of history
entries (``rev << 1 | tombstone``, see codec.py): a generation is the run of entries up to and
including a tombstone. It also caches the live generation's create revision, version and lease
so a put needs no disk read.
"""
from __future__ import annotations

from bisect import bisect_left

from raftkv.mvcc.codec import SUB_BITS

_SHIFT = SUB_BITS + 1


class KeyIndex:
    __slots__ = ("revs", "create", "version", "lease")

    def __init__(self):
        self.revs = []  # Invariant: strictly ascending history entries.
        self.create = 0  # create revision of the live generation; 0 when deleted/absent
        self.version = 0
        self.lease = 0

    def at(self, main):
        """The live entry visible at main revision `main`, or None (absent or deleted)."""
        revs = self.revs
        if not revs:
            return None
        last = revs[-1]
        if last >> _SHIFT <= main:
            return None if last & 1 else last
        i = bisect_left(revs, (main + 1) << _SHIFT) - 1
        if i < 0 or revs[i] & 1:
            return None
        return revs[i]

    def before(self, entry):
        """The live entry just before `entry` (the previous value), or None."""
        i = bisect_left(self.revs, entry) - 1
        if i < 0 or self.revs[i] & 1:
            return None
        return self.revs[i]

    def compact(self, main):
        """Drop history below `main`, keeping the latest entry at or below it unless it is a
        tombstone. Returns the dropped entries; an empty `revs` means drop the key."""
        revs = self.revs
        i = bisect_left(revs, (main + 1) << _SHIFT) - 1
        if i < 0:
            return []
        if revs[i] & 1:
            i += 1
        dropped = revs[:i]
        del revs[:i]
        return dropped
