"""Pure-Python twin of the C B+tree (raftkv.storage._cbtree): same API, same results.

An ordered map from non-empty byte strings to arbitrary Python objects, kept as two parallel
sorted lists. It is the reference the C tree is tested against and the fallback when the
extension is not built.
"""
from bisect import bisect_left


def _check_key(key):
    if not isinstance(key, bytes):
        raise TypeError(f"BTree keys must be bytes, not {type(key).__name__}")


class BTree:
    __slots__ = ("_keys", "_vals")

    def __init__(self):
        self._keys = []  # Invariant: strictly increasing.
        self._vals = []  # Invariant: len(_vals) == len(_keys).

    def __len__(self):
        return len(self._keys)

    def __contains__(self, key):
        _check_key(key)
        i = bisect_left(self._keys, key)
        return i < len(self._keys) and self._keys[i] == key

    def get(self, key, default=None):
        _check_key(key)
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return self._vals[i]
        return default

    def __getitem__(self, key):
        _check_key(key)
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return self._vals[i]
        raise KeyError(key)

    def insert(self, key, value):
        """Set key to value; returns True if the key is new, False if it replaced a value."""
        _check_key(key)
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            self._vals[i] = value
            return False
        self._keys.insert(i, key)
        self._vals.insert(i, value)
        return True

    __setitem__ = insert

    def delete(self, key):
        """Remove key; returns True if it was present."""
        _check_key(key)
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]
            del self._vals[i]
            return True
        return False

    def _bounds(self, start, end):
        _check_key(start)
        lo = bisect_left(self._keys, start)
        if end is None:
            hi = len(self._keys)
        else:
            _check_key(end)
            hi = max(lo, bisect_left(self._keys, end))
        return lo, hi

    def range(self, start, end=None, limit=0, reverse=False):
        """Items with start <= key < end (end None: to the last key), at most limit (0: all)."""
        lo, hi = self._bounds(start, end)
        if reverse:
            idx = range(hi - 1, lo - 1, -1)
        else:
            idx = range(lo, hi)
        if limit > 0:
            idx = idx[:limit]
        return [(self._keys[i], self._vals[i]) for i in idx]

    def count(self, start, end=None):
        lo, hi = self._bounds(start, end)
        return hi - lo

    def prefix(self, prefix, limit=0, reverse=False):
        return self.range(prefix, prefix_end(prefix), limit, reverse)

    def items(self):
        return list(zip(self._keys, self._vals))

    def check(self):
        """Assert every invariant; returns the number of keys."""
        assert len(self._keys) == len(self._vals)
        for a, b in zip(self._keys, self._keys[1:]):
            assert a < b, (a, b)
        return len(self._keys)


def prefix_end(prefix):
    """The smallest key greater than every key with this prefix, or None (no upper bound)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None
