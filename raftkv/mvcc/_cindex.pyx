# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""C twin of raftkv.mvcc._pyindex: KeyIndex, one key's revision history.

Same API and results as the pure twin (tests/unit/mvcc/test_index.py), in far less memory:
the history is a C array of (main, sub << 1 | tombstone) pairs, kept inside the object while
it holds one entry (most keys), and the object holds no Python references, so the cyclic GC
never tracks it. A history entry crosses into Python as the int main << 33 | low
(codec.py's ``rev << 1 | tombstone``); main may need more than 31 bits, so a pair is stored
rather than one 64-bit word.
"""
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memmove

from raftkv.mvcc.codec import SUB_BITS

cdef enum:
    SHIFT = 33  # SUB_BITS + 1

assert SHIFT == SUB_BITS + 1
cdef object LOW_MASK = ((<object>1) << SHIFT) - 1


cdef inline object _entry(const rk_hist *h):
    return ((<object>h.main) << SHIFT) | h.low


cdef inline int _cmp(const rk_hist *h, uint64_t main, uint64_t low):
    if h.main != main:
        return -1 if h.main < main else 1
    if h.low != low:
        return -1 if h.low < low else 1
    return 0


cdef class KeyIndex:

    def __cinit__(self):
        self.create = 0
        self.version = 0
        self.lease = 0
        self.n = 0
        self.cap = 0
        self.more = NULL

    def __dealloc__(self):
        PyMem_Free(self.more)

    cdef rk_hist *hist(self):
        return self.more if self.cap else &self.one

    cdef int push_c(self, uint64_t main, uint64_t low) except -1:
        cdef rk_hist *h = self.hist()
        cdef uint32_t cap
        cdef void *p
        if self.n and _cmp(&h[self.n - 1], main, low) >= 0:
            raise ValueError(f"KeyIndex.push: entry {((<object>main) << SHIFT) | low} is not after "
                             f"{_entry(&h[self.n - 1])}")
        if self.n == 0 and self.cap == 0:
            self.one.main, self.one.low = main, low
            self.n = 1
            return 0
        if self.n == self.cap or self.cap == 0:
            if self.n >= 0x7fffffff:
                raise OverflowError("KeyIndex.push: history too long")
            cap = 4 if self.n < 4 else self.n + (self.n >> 1)
            p = PyMem_Realloc(self.more, cap * sizeof(rk_hist))
            if p == NULL:
                raise MemoryError()
            if self.cap == 0:
                (<rk_hist *>p)[0] = self.one
            self.more, self.cap = <rk_hist *>p, cap
        self.more[self.n].main, self.more[self.n].low = main, low
        self.n += 1
        return 0

    cdef object last_c(self):
        return _entry(&self.hist()[self.n - 1])

    def push(self, entry):
        """Append a history entry, which must be later than every entry held."""
        if entry < 0:
            raise ValueError(f"KeyIndex.push: negative entry {entry}")
        self.push_c(entry >> SHIFT, entry & LOW_MASK)

    def last(self):
        """The latest history entry (the history must not be empty)."""
        if self.n == 0:
            raise IndexError("KeyIndex.last: empty history")
        return self.last_c()

    def empty(self):
        return self.n == 0

    def entries(self):
        """The whole history, ascending (a new list)."""
        cdef rk_hist *h = self.hist()
        cdef uint32_t i
        return [_entry(&h[i]) for i in range(self.n)]

    cdef uint32_t _first_after_main(self, uint64_t main):
        """Index of the first entry whose main revision is greater than main (n when none is;
        checked first: reads and compactions mostly look at or past the latest entry)."""
        cdef rk_hist *h = self.hist()
        cdef uint32_t lo = 0, hi = self.n, mid
        if hi == 0 or h[hi - 1].main <= main:
            return hi
        while lo < hi:
            mid = (lo + hi) >> 1
            if h[mid].main <= main:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def at(self, main):
        """The live entry visible at main revision `main`, or None (absent or deleted)."""
        if self.n == 0 or main < 0:
            return None
        cdef rk_hist *h = self.hist()
        cdef uint32_t i = self._first_after_main(main)
        if i == 0 or h[i - 1].low & 1:
            return None
        return _entry(&h[i - 1])

    def before(self, entry):
        """The live entry just before `entry` (the previous value), or None."""
        if entry <= 0:
            return None
        cdef rk_hist *h = self.hist()
        cdef uint64_t main = entry >> SHIFT, low = entry & LOW_MASK
        cdef uint32_t lo = 0, hi = self.n, mid
        while lo < hi:  # first index whose entry is >= entry
            mid = (lo + hi) >> 1
            if _cmp(&h[mid], main, low) < 0:
                lo = mid + 1
            else:
                hi = mid
        if lo == 0 or h[lo - 1].low & 1:
            return None
        return _entry(&h[lo - 1])

    def compact(self, main):
        """Drop history below `main`, keeping the latest entry at or below it unless it is a
        tombstone. Returns the dropped entries; an empty history means drop the key."""
        if self.n == 0 or main < 0:
            return []
        cdef rk_hist *h = self.hist()
        cdef uint32_t i = self._first_after_main(main), j
        if i == 0:
            return []
        i -= 1
        if h[i].low & 1:
            i += 1
        dropped = [_entry(&h[j]) for j in range(i)]
        if i:
            memmove(h, h + i, (self.n - i) * sizeof(rk_hist))
            self.n -= i
        return dropped

    def __repr__(self):
        return (f"KeyIndex(create={self.create}, version={self.version}, lease={self.lease}, "
                f"entries={self.entries()})")
