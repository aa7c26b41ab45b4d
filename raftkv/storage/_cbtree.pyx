# cython: wraparound=False, initializedcheck=False
"""C B+tree (csrc/btree.c): twin of raftkv.storage._pybtree, same API and results.

The C tree maps byte-string keys to uint64 handles; a handle indexes this module's slot table,
which holds the key object (the tree borrows its bytes, so the slot keeps it alive) and the
value. Freed handles are reused. The key table is a plain C array of strong references: bytes
cannot take part in reference cycles, so the garbage collector never needs to see it, and it
can never be cleared while the tree still points into its keys.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc, realloc

__all__ = ["BTree", "prefix_end"]


cdef extern from "btree.h":
    enum:
        RK_BT_NOMEM
        RK_BT_EXISTS
        RK_BT_INSERTED
        RK_BT_MAX
    ctypedef struct rk_btree:
        pass
    rk_btree *rk_bt_new()
    void rk_bt_free(rk_btree *t)
    size_t rk_bt_size(const rk_btree *t)
    size_t rk_bt_leaves(const rk_btree *t)
    int rk_bt_find(const rk_btree *t, const void *key, size_t len, uint64_t *handle)
    int rk_bt_insert(rk_btree *t, const void *key, size_t len, uint64_t handle,
                     uint64_t *existing)
    int rk_bt_delete(rk_btree *t, const void *key, size_t len, uint64_t *handle)
    size_t rk_bt_count(const rk_btree *t, const void *start, size_t slen, const void *end,
                       size_t elen, int has_end)
    size_t rk_bt_collect(const rk_btree *t, const void *start, size_t slen, const void *end,
                         size_t elen, int has_end, int reverse, uint64_t *out, size_t max)
    int64_t rk_bt_check(const rk_btree *t, char *err, size_t errlen)


FANOUT = RK_BT_MAX


cdef inline int _check_key(object key) except -1:
    if not PyBytes_Check(key):
        raise TypeError(f"BTree keys must be bytes, not {type(key).__name__}")
    return 0


@cython.final
@cython.no_gc_clear
cdef class BTree:
    """Ordered map from bytes to any object (see raftkv.storage._pybtree for the contract)."""

    cdef rk_btree *_t
    cdef PyObject **_keys  # handle -> key (strong reference), NULL for a free slot
    cdef uint64_t *_free   # stack of free handles
    cdef size_t _nfree
    cdef size_t _cap       # capacity of _keys
    cdef size_t _free_cap  # capacity of _free: grows with the free handles, not the keys
    cdef size_t _nslots    # handles ever handed out: len(_vals) unless the GC cleared it
    cdef list _vals        # handle -> value (indexing stays bounds-checked)

    def __cinit__(self):
        self._t = rk_bt_new()
        if self._t == NULL:
            raise MemoryError()
        self._vals = []

    def __dealloc__(self):
        cdef size_t i
        if self._t != NULL:
            rk_bt_free(self._t)
            self._t = NULL
        if self._keys != NULL:
            for i in range(self._nslots):
                if self._keys[i] != NULL:
                    Py_DECREF(<object>self._keys[i])
            free(self._keys)
        free(self._free)

    cdef int _reserve_slot(self) except -1:
        """Make sure a free handle exists (the top of the free stack)."""
        cdef size_t n = self._nslots, cap
        cdef void *p
        if self._nfree > 0:
            return 0
        if self._free_cap == 0:
            self._grow_free()
        if n == self._cap:
            cap = self._cap * 2 if self._cap else 16
            p = realloc(self._keys, cap * sizeof(PyObject *))
            if p == NULL:
                raise MemoryError()
            self._keys = <PyObject **>p
            self._cap = cap
        self._vals.append(None)
        self._nslots = n + 1
        self._keys[n] = NULL
        self._free[0] = n
        self._nfree = 1
        return 0

    cdef int _grow_free(self) except -1:
        cdef size_t cap = self._free_cap * 2 if self._free_cap else 16
        cdef void *p = realloc(self._free, cap * sizeof(uint64_t))
        if p == NULL:
            raise MemoryError()
        self._free = <uint64_t *>p
        self._free_cap = cap
        return 0

    def __len__(self):
        return rk_bt_size(self._t)

    def __contains__(self, key):
        cdef uint64_t h
        _check_key(key)
        return rk_bt_find(self._t, PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key),
                          &h) == 1

    def get(self, key, default=None):
        cdef uint64_t h
        _check_key(key)
        if rk_bt_find(self._t, PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key), &h):
            return self._vals[h]
        return default

    def __getitem__(self, key):
        cdef uint64_t h
        _check_key(key)
        if rk_bt_find(self._t, PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key), &h):
            return self._vals[h]
        raise KeyError(key)

    def insert(self, key, value):
        """Set key to value; returns True if the key is new, False if it replaced a value."""
        cdef uint64_t h, old = 0
        cdef int r
        _check_key(key)
        self._reserve_slot()
        h = self._free[self._nfree - 1]
        r = rk_bt_insert(self._t, PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key), h,
                         &old)
        if r == RK_BT_EXISTS:
            self._vals[old] = value
            return False
        if r != RK_BT_INSERTED:
            raise MemoryError()
        self._nfree -= 1
        Py_INCREF(key)
        self._keys[h] = <PyObject *>key
        self._vals[h] = value
        return True

    def __setitem__(self, key, value):
        self.insert(key, value)

    def delete(self, key):
        """Remove key; returns True if it was present."""
        cdef uint64_t h
        cdef PyObject *k
        _check_key(key)
        if self._nfree == self._free_cap:
            self._grow_free()  # before the tree changes: a failed allocation changes nothing
        if not rk_bt_delete(self._t, PyBytes_AS_STRING(key), <size_t>PyBytes_GET_SIZE(key),
                            &h):
            return False
        # Leave the table consistent before dropping references (a finaliser may run).
        k = self._keys[h]
        self._keys[h] = NULL
        self._free[self._nfree] = h
        self._nfree += 1
        self._vals[h] = None
        Py_DECREF(<object>k)
        return True

    def range(self, start, end=None, limit=0, reverse=False):
        """Items with start <= key < end (end None: to the last key), at most limit (0: all)."""
        cdef size_t n = self._count(start, end)
        if limit > 0 and limit < n:
            n = limit
        return self._collect(start, end, n, 1 if reverse else 0)

    cdef size_t _count(self, start, end) except? 0:
        _check_key(start)
        if end is None:
            return rk_bt_count(self._t, PyBytes_AS_STRING(start),
                               <size_t>PyBytes_GET_SIZE(start), NULL, 0, 0)
        _check_key(end)
        return rk_bt_count(self._t, PyBytes_AS_STRING(start), <size_t>PyBytes_GET_SIZE(start),
                           PyBytes_AS_STRING(end), <size_t>PyBytes_GET_SIZE(end), 1)

    cdef list _collect(self, start, end, size_t n, int reverse):
        cdef uint64_t *hs
        cdef size_t got, i
        cdef list out
        cdef PyObject *k
        if n == 0:
            return []
        hs = <uint64_t *>malloc(n * sizeof(uint64_t))
        if hs == NULL:
            raise MemoryError()
        try:
            if end is None:
                got = rk_bt_collect(self._t, PyBytes_AS_STRING(start),
                                    <size_t>PyBytes_GET_SIZE(start), NULL, 0, 0, reverse, hs, n)
            else:
                got = rk_bt_collect(self._t, PyBytes_AS_STRING(start),
                                    <size_t>PyBytes_GET_SIZE(start), PyBytes_AS_STRING(end),
                                    <size_t>PyBytes_GET_SIZE(end), 1, reverse, hs, n)
            out = [None] * got
            vals = self._vals
            for i in range(got):
                k = self._keys[hs[i]]
                if k == NULL:
                    # Only if a finaliser run by an allocation here deleted keys meanwhile.
                    raise RuntimeError("BTree changed while a range was being read")
                out[i] = (<object>k, vals[hs[i]])
            return out
        finally:
            free(hs)

    def count(self, start, end=None):
        return self._count(start, end)

    def prefix(self, prefix, limit=0, reverse=False):
        return self.range(prefix, prefix_end(prefix), limit, reverse)

    def items(self):
        return self._collect(b"", None, rk_bt_size(self._t), 0)

    def leaf_count(self):
        """Leaf nodes in use (C tree only: memory diagnostics and tests)."""
        return rk_bt_leaves(self._t)

    def check(self):
        """Assert every invariant; returns the number of keys."""
        cdef char err[256]
        cdef int64_t n = rk_bt_check(self._t, err, sizeof(err))
        cdef size_t live = 0, i, nslots = self._nslots
        if n < 0:
            raise AssertionError(err.decode("utf-8", "replace"))
        for i in range(nslots):
            if self._keys[i] != NULL:
                live += 1
            elif self._vals[i] is not None:
                raise AssertionError(f"free slot {i} holds a value")
        if live != <size_t>n or live + self._nfree != nslots:
            raise AssertionError(f"slot table: {live} live, {self._nfree} free, {nslots} slots,"
                                 f" tree has {n} keys")
        return n


@cython.wraparound(True)
def prefix_end(prefix):
    """The smallest key greater than every key with this prefix, or None (no upper bound)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None
