# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""C twin of raftkv.mvcc._pyputs (the loop of KVStore's bulk "puts" op): same API, same index,
items and events. The stored record is encoded here directly, byte for byte what
msgpack.Packer(use_bin_type=True).pack([key, create, mod, version, value, 0]) gives, so the
`pack` argument is not called.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy

from raftkv.mvcc._cindex cimport KeyIndex
from raftkv.mvcc.codec import SUB_BITS

cdef enum:
    SHIFT = 33  # history entry = main << SHIFT for sub revision 0, no tombstone

assert SHIFT == SUB_BITS + 1


cdef inline Py_ssize_t _uint_size(uint64_t v):
    if v < 128:
        return 1
    if v < 256:
        return 2
    if v < 65536:
        return 3
    if v < 4294967296:
        return 5
    return 9


cdef inline uint8_t *_put_uint(uint8_t *p, uint64_t v):
    cdef int i, n
    if v < 128:
        p[0] = <uint8_t>v
        return p + 1
    if v < 256:
        p[0] = 0xcc
        n = 1
    elif v < 65536:
        p[0] = 0xcd
        n = 2
    elif v < 4294967296:
        p[0] = 0xce
        n = 4
    else:
        p[0] = 0xcf
        n = 8
    for i in range(n):
        p[n - i] = <uint8_t>(v >> (8 * i))
    return p + 1 + n


cdef inline Py_ssize_t _bin_header_size(Py_ssize_t n):
    if n < 256:
        return 2
    if n < 65536:
        return 3
    return 5


cdef inline uint8_t *_put_bin(uint8_t *p, bytes b):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    if n < 256:
        p[0] = 0xc4
        p[1] = <uint8_t>n
        p += 2
    elif n < 65536:
        p[0] = 0xc5
        p[1] = <uint8_t>(n >> 8)
        p[2] = <uint8_t>n
        p += 3
    else:
        p[0] = 0xc6
        p[1] = <uint8_t>(n >> 24)
        p[2] = <uint8_t>(n >> 16)
        p[3] = <uint8_t>(n >> 8)
        p[4] = <uint8_t>n
        p += 5
    memcpy(p, PyBytes_AS_STRING(b), n)
    return p + n


cdef bytes _record(bytes key, uint64_t create, uint64_t mod, uint64_t version, bytes value):
    """msgpack of [key, create, mod, version, value, 0]."""
    cdef Py_ssize_t size = (1 + _bin_header_size(PyBytes_GET_SIZE(key)) + PyBytes_GET_SIZE(key)
                            + _uint_size(create) + _uint_size(mod) + _uint_size(version)
                            + _bin_header_size(PyBytes_GET_SIZE(value))
                            + PyBytes_GET_SIZE(value) + 1)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    p[0] = 0x96
    p = _put_bin(p + 1, key)
    p = _put_uint(p, create)
    p = _put_uint(p, mod)
    p = _put_uint(p, version)
    p = _put_bin(p, value)
    p[0] = 0
    return out


cdef bytes _main_key(uint64_t main):
    """codec.rev_key of (main, 0): >Q, "_", >Q."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 17)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef int i
    for i in range(8):
        p[7 - i] = <uint8_t>(main >> (8 * i))
        p[16 - i] = 0
    p[8] = 0x5f  # "_"
    return out


def apply_puts(index, list keys, list values, main, key_index, pack, list items, list events,
               detach):
    cdef Py_ssize_t i, n = len(keys)
    cdef uint64_t m = main, create, version
    cdef object key, value, prev_entry, entry, fields, got, get = index.get
    cdef KeyIndex ki
    cdef object insert = index.insert
    assert len(values) == n
    if key_index is not KeyIndex:
        raise TypeError("apply_puts (C): the key index must be raftkv.mvcc._cindex.KeyIndex")
    for i in range(n):
        key = keys[i]
        value = values[i]
        if not (PyBytes_CheckExact(key) and PyBytes_CheckExact(value)):
            raise TypeError("puts: keys and values must be bytes")
        m += 1
        got = get(key)
        if got is None:
            ki = KeyIndex()
            insert(key, ki)
            create, version, prev_entry = m, 1, None
        else:
            ki = <KeyIndex?>got
            if ki.create:
                create = ki.create
                version = ki.version + 1
                prev_entry = ki.last_c()  # live: the history is not empty
                if ki.lease:
                    detach(key, ki.lease)
                    ki.lease = 0
            else:
                create, version, prev_entry = m, 1, None
        ki.push_c(m, 0)
        entry = (<object>m) << SHIFT  # a Python int: main may need more than 31 bits
        fields = [key, create, m, version, value, 0]
        items.append((_main_key(m), _record(key, create, m, version, value)))
        ki.create = create
        ki.version = version
        events.append((entry, fields, prev_entry))
    return m
