"""Pure-Python twin of raftkv.mvcc._cindex: KeyIndex, one key's revision history.

A KeyIndex is etcd's keyIndex with its generations flattened into one ascending list of history
entries (``rev << 1 | tombstone``, see codec.py): a generation is the run of entries up to and
including a tombstone. It also caches the live generation's create revision, version and lease
so a put needs no disk read. Both twins have the same API and results
(tests/unit/mvcc/test_index.py); raftkv.mvcc.index picks one.
"""
from __future__ import annotations

from bisect import bisect_left

from raftkv.mvcc.codec import SUB_BITS

_SHIFT = SUB_BITS + 1


class KeyIndex:
    __slots__ = ("_revs", "create", "version", "lease")

    def __init__(self):
        self._revs = []  # Invariant: strictly ascending history entries.
        self.create = 0  # create revision of the live generation; 0 when deleted/absent
        self.version = 0
        self.lease = 0

    def push(self, entry):
        """Append a history entry, which must be later than every entry held."""
        revs = self._revs
        if revs and entry <= revs[-1]:
            raise ValueError(f"KeyIndex.push: entry {entry} is not after {revs[-1]}")
        if entry < 0:
            raise ValueError(f"KeyIndex.push: negative entry {entry}")
        revs.append(entry)

    def last(self):
        """The latest history entry (the history must not be empty)."""
        return self._revs[-1]

    def empty(self):
        return not self._revs

    def entries(self):
        """The whole history, ascending (a new list)."""
        return list(self._revs)

    def at(self, main):
        """The live entry visible at main revision `main`, or None (absent or deleted)."""
        revs = self._revs
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
        i = bisect_left(self._revs, entry) - 1
        if i < 0 or self._revs[i] & 1:
            return None
        return self._revs[i]

    def compact(self, main):
        """Drop history below `main`, keeping the latest entry at or below it unless it is a
        tombstone. Returns the dropped entries; an empty history means drop the key."""
        revs = self._revs
        i = bisect_left(revs, (main + 1) << _SHIFT) - 1
        if i < 0:
            return []
        if revs[i] & 1:
            i += 1
        dropped = revs[:i]
        del revs[:i]
        return dropped
