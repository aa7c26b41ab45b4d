# cython: boundscheck=False, wraparound=False, initializedcheck=False
"""C log-entry codec (csrc/crc32c.c, csrc/entry_codec.c): twin of raftkv.storage._pycodec.

Same API and results as the pure-Python twin; the frame layout is documented in
csrc/entry_codec.h. CRC_IMPL names the CRC32C implementation chosen for this CPU ("sse4.2" or
"slice8"). The GIL is released while checksumming large buffers.
"""
import struct

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc

from raftkv.raft.types import Entry
from raftkv.storage.errors import CorruptEntryError

__all__ = ["CRC_IMPL", "FRAME_HEADER_BYTES", "CorruptEntryError", "crc32c", "decode_entries",
           "encode_entries"]


cdef extern from "crc32c.h":
    uint32_t rk_crc32c(uint32_t crc, const void *buf, size_t len) nogil
    uint32_t rk_crc32c_slice8(uint32_t crc, const void *buf, size_t len) nogil
    const char *rk_crc32c_impl()


cdef extern from "entry_codec.h":
    enum:
        RK_FRAME_HEADER_BYTES
        RK_FRAME_OK
        RK_FRAME_TRUNCATED
        RK_FRAME_BAD_LEN
        RK_FRAME_BAD_CRC
    size_t RK_FRAME_PAYLOAD_MAX

    ctypedef struct rk_entry:
        uint64_t term
        uint64_t index
        uint8_t type
        const uint8_t *payload
        size_t payload_len

    size_t rk_encode_entries(uint8_t *out, size_t cap, const rk_entry *entries,
                             size_t n) nogil
    int rk_parse_entry(const uint8_t *buf, size_t n, size_t off, rk_entry *e, size_t *next,
                       uint32_t *bad_len)
    int rk_verify_entries(const uint8_t *buf, size_t n, size_t *good, size_t *bad_off,
                          uint64_t *last_index, uint32_t *bad_len) nogil


CRC_IMPL = rk_crc32c_impl().decode("ascii")
FRAME_HEADER_BYTES = RK_FRAME_HEADER_BYTES

# Below this many bytes, releasing and re-taking the GIL costs more than it can give others.
cdef size_t NOGIL_BYTES = 64 * 1024


def crc32c(data, uint32_t value=0):
    """CRC32C of data (any bytes-like object), continuing from a previous value."""
    cdef Py_buffer view
    cdef uint32_t crc
    if PyBytes_CheckExact(data):
        return rk_crc32c(value, PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if <size_t>view.len >= NOGIL_BYTES:
            with nogil:
                crc = rk_crc32c(value, view.buf, <size_t>view.len)
        else:
            crc = rk_crc32c(value, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return crc


def _crc32c_slice8(data, uint32_t value=0):
    """crc32c through the portable table path whatever the CPU (for tests and benchmarks)."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return rk_crc32c_slice8(value, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)


cdef uint64_t _u64(object v) except? 0xFFFFFFFFFFFFFFFF:
    # The twin packs with struct, so a value that does not fit is a struct.error there too.
    try:
        return v
    except (OverflowError, TypeError) as exc:
        raise struct.error(f"cannot pack {v!r} as u64: {exc}") from None


cdef uint8_t _u8(object v) except? 0xFF:
    try:
        return v
    except (OverflowError, TypeError) as exc:
        raise struct.error(f"cannot pack {v!r} as u8: {exc}") from None


def encode_entries(entries):
    """Frames for each Entry (term, index, type, data), concatenated."""
    cdef list seq = entries if type(entries) is list else list(entries)
    cdef Py_ssize_t n = len(seq), i
    cdef list payloads = [None] * n  # keeps every payload alive while the GIL is released
    cdef rk_entry *arr = <rk_entry *>malloc(<size_t>(n if n > 0 else 1) * sizeof(rk_entry))
    cdef size_t total = 0, written
    cdef bytes out
    cdef char *dst
    if arr == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            e = seq[i]
            term = e.term
            index = e.index
            etype = e.type if type(e.type) is int else int(e.type)
            data = e.data
            if not PyBytes_CheckExact(data):
                data = bytes(data)
            payloads[i] = data
            arr[i].term = _u64(term)
            arr[i].index = _u64(index)
            arr[i].type = _u8(etype)
            arr[i].payload = <const uint8_t *>PyBytes_AS_STRING(data)
            arr[i].payload_len = <size_t>PyBytes_GET_SIZE(data)
            if arr[i].payload_len > RK_FRAME_PAYLOAD_MAX:
                raise struct.error("'I' format requires 0 <= number <= 4294967295")
            total += RK_FRAME_HEADER_BYTES + arr[i].payload_len
        out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>total)
        dst = PyBytes_AS_STRING(out)
        if total >= NOGIL_BYTES:
            with nogil:
                written = rk_encode_entries(<uint8_t *>dst, total, arr, <size_t>n)
        else:
            written = rk_encode_entries(<uint8_t *>dst, total, arr, <size_t>n)
    finally:
        free(arr)
    if written != total:
        raise AssertionError(f"entry encoder wrote {written} of {total} bytes")
    return out


cdef object _corrupt(int status, size_t good, size_t off, uint64_t last_index,
                     uint32_t bad_len):
    bad_index = None if good == 0 else <object>last_index + 1
    if status == RK_FRAME_TRUNCATED:
        msg = f"truncated frame header at offset {off}"
    elif status == RK_FRAME_BAD_LEN:
        msg = f"bad frame length {bad_len} at offset {off}"
    else:
        msg = f"CRC mismatch at offset {off}"
    return CorruptEntryError(msg, bad_index, off)


cdef list _build_entries(const uint8_t *buf, size_t n, size_t count):
    cdef list out = []
    cdef rk_entry e
    cdef size_t off = 0, nxt = 0, i
    cdef uint32_t bad_len = 0
    cdef uint64_t last = 0
    cdef int status
    entry = Entry
    for i in range(count):
        status = rk_parse_entry(buf, n, off, &e, &nxt, &bad_len)
        if status != RK_FRAME_OK:
            # Only if the buffer changed after it was verified (another thread wrote to it).
            raise _corrupt(status, i, off, last, bad_len)
        out.append(entry(e.term, e.index, e.type,
                         PyBytes_FromStringAndSize(<const char *>e.payload,
                                                   <Py_ssize_t>e.payload_len)))
        last = e.index
        off = nxt
    return out


def decode_entries(buf):
    """List of Entry from a concatenation of frames; raises CorruptEntryError on any damage."""
    cdef Py_buffer view
    cdef size_t n, good = 0, bad_off = 0
    cdef uint64_t last_index = 0
    cdef uint32_t bad_len = 0
    cdef int status
    cdef const uint8_t *p
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t *>view.buf
        n = <size_t>view.len
        if n >= NOGIL_BYTES:
            with nogil:
                status = rk_verify_entries(p, n, &good, &bad_off, &last_index, &bad_len)
        else:
            status = rk_verify_entries(p, n, &good, &bad_off, &last_index, &bad_len)
        if status != RK_FRAME_OK:
            raise _corrupt(status, good, bad_off, last_index, bad_len)
        return _build_entries(p, n, good)
    finally:
        PyBuffer_Release(&view)
