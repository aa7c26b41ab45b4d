# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""C twin of raftkv.mvcc._pyputs (the loops of KVStore's bulk "puts" op and of its start-up
index load): same API, same index, items and events. The stored record is encoded here
directly, byte for byte what msgpack.Packer(use_bin_type=True).pack([key, create, mod, version,
value, 0]) gives, so the `pack` argument is not called; load_index reads the fields it needs
from the record's msgpack in place, and hands a record of any other shape to codec.unpackb.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from raftkv.mvcc._cindex cimport KeyIndex
from raftkv.mvcc.codec import SUB_BITS, unpackb

cdef object _unpackb = unpackb

cdef enum:
    SHIFT = 33  # history entry = main << SHIFT for sub revision 0, no tombstone
    SUB_BITS_C = 32  # bits of a sub revision (codec.SUB_BITS)

assert SHIFT == SUB_BITS + 1
assert SUB_BITS_C == SUB_BITS


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


# ---- load_index: the "kv" sub-db's records back into the key index at start -----------------

cdef enum:
    REV_KEY_BYTES = 17  # codec.rev_key: >Q, "_", >Q; a tombstone's has one more byte, "t"


cdef inline uint64_t _be(const uint8_t *p, int n):
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


# A msgpack reader for the stored record [key, create, mod, version, value, lease]. Each step
# reads one item at p (items end at `end`) and returns the position after it, or NULL when the
# item is not of the kind the fast path expects or runs past the end; the caller then decodes
# the record with msgpack itself, so an unusual record is slower, never misread.

cdef inline const uint8_t *_read_int(const uint8_t *p, const uint8_t *end, int64_t *out):
    cdef uint8_t t
    cdef uint64_t u
    if p >= end:
        return NULL
    t = p[0]
    if t < 0x80:  # positive fixint
        out[0] = t
        return p + 1
    if t >= 0xe0:  # negative fixint
        out[0] = <int8_t>t
        return p + 1
    if t == 0xcc or t == 0xd0:
        if end - p < 2:
            return NULL
        out[0] = p[1] if t == 0xcc else <int8_t>p[1]
        return p + 2
    if t == 0xcd or t == 0xd1:
        if end - p < 3:
            return NULL
        u = _be(p + 1, 2)
        out[0] = <int64_t>u if t == 0xcd else <int16_t>u
        return p + 3
    if t == 0xce or t == 0xd2:
        if end - p < 5:
            return NULL
        u = _be(p + 1, 4)
        out[0] = <int64_t>u if t == 0xce else <int32_t>u
        return p + 5
    if t == 0xcf or t == 0xd3:
        if end - p < 9:
            return NULL
        u = _be(p + 1, 8)
        if t == 0xcf and u > <uint64_t>0x7fffffffffffffff:
            return NULL  # past int64: the slow path says so (OverflowError)
        out[0] = <int64_t>u
        return p + 9
    return NULL


cdef inline const uint8_t *_read_bin(const uint8_t *p, const uint8_t *end,
                                     const uint8_t **data, Py_ssize_t *size):
    """A msgpack bin (bytes); a str is left to the slow path, which decodes it as str."""
    cdef uint8_t t
    cdef int head
    if p >= end:
        return NULL
    t = p[0]
    if t == 0xc4:
        head = 1
    elif t == 0xc5:
        head = 2
    elif t == 0xc6:
        head = 4
    else:
        return NULL
    if end - p < 1 + head:
        return NULL
    size[0] = <Py_ssize_t>_be(p + 1, head)
    p += 1 + head
    if end - p < size[0]:
        return NULL
    data[0] = p
    return p + size[0]


def load_index(index, records, key_index):
    cdef bytes dbkey, raw
    cdef const uint8_t *k
    cdef const uint8_t *p
    cdef const uint8_t *end
    cdef const uint8_t *key_data = NULL
    cdef Py_ssize_t key_size = 0, value_size = 0, size
    cdef const uint8_t *value_data = NULL
    cdef int64_t create = 0, mod = 0, version = 0, lease = 0
    cdef uint64_t main, sub
    cdef bint tombstone
    cdef Py_ssize_t n = 0
    cdef KeyIndex ki
    cdef object key, got, fields, get = index.get, insert = index.insert
    if key_index is not KeyIndex:
        raise TypeError("load_index (C): the key index must be raftkv.mvcc._cindex.KeyIndex")
    for dbkey, raw in records:
        size = PyBytes_GET_SIZE(dbkey)
        k = <const uint8_t *>PyBytes_AS_STRING(dbkey)
        if size != REV_KEY_BYTES and (size != REV_KEY_BYTES + 1 or k[REV_KEY_BYTES] != 0x74):
            raise ValueError(f"load_index: {dbkey!r} is not a revision key")
        main, sub = _be(k, 8), _be(k + 9, 8)
        if k[8] != 0x5f or sub >> SUB_BITS_C:  # "_"; a sub revision fits SUB_BITS
            raise ValueError(f"load_index: {dbkey!r} is not a revision key")
        tombstone = size > REV_KEY_BYTES
        p = <const uint8_t *>PyBytes_AS_STRING(raw)
        end = p + PyBytes_GET_SIZE(raw)
        if p < end and p[0] == 0x96:  # fixarray of 6
            p = _read_bin(p + 1, end, &key_data, &key_size)
            if p != NULL:
                p = _read_int(p, end, &create)
            if p != NULL:
                p = _read_int(p, end, &mod)
            if p != NULL:
                p = _read_int(p, end, &version)
            if p != NULL:
                p = _read_bin(p, end, &value_data, &value_size)
            if p != NULL:
                p = _read_int(p, end, &lease)
            if p != end:  # NULL, or bytes after the record: not the shape the fast path reads
                p = NULL
        else:
            p = NULL
        if p != NULL:
            key = PyBytes_FromStringAndSize(<const char *>key_data, key_size)
        else:
            fields = _unpackb(raw)
            key = fields[0]
        got = get(key)
        if got is None:
            ki = KeyIndex()
            insert(key, ki)
        else:
            ki = <KeyIndex?>got
        ki.push_c(main, sub << 1 | tombstone)
        if tombstone:
            ki.create = ki.version = ki.lease = 0
        elif p != NULL:
            ki.create, ki.version, ki.lease = create, version, lease
        else:
            ki.create, ki.version, ki.lease = fields[1], fields[3], fields[5]
        n += 1
    return n
