"""Pure-Python twin of the C log-entry codec (raftkv.storage._ccodec): same API, same results.

Frame layout (little-endian; csrc/entry_codec.h is the authority):

    len   u32   bytes after the crc field: 17 + len(payload)
    crc   u32   CRC32C (Castagnoli) of everything after the crc field
    term  u64
    index u64
    type  u8
    payload

A buffer is a concatenation of frames. Decoding checks every length and CRC and raises
CorruptEntryError naming the first bad record; it never returns corrupt data.
"""
import struct

from raftkv.raft.types import Entry
from raftkv.storage.errors import CorruptEntryError

FRAME_HEADER_BYTES = 25  # len(4) + crc(4) + term(8) + index(8) + type(1)
_HEAD = struct.Struct("<II")
_BODY = struct.Struct("<QQB")
_POLY = 0x82F63B78  # CRC32C (Castagnoli), reflected


def _make_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data, value=0):
    """CRC32C of data (any bytes-like object), continuing from a previous value."""
    crc = value ^ 0xFFFFFFFF
    table = _TABLE
    for b in memoryview(data).cast("B"):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def encode_entries(entries):
    """Frames for each Entry (term, index, type, data), concatenated."""
    out = bytearray()
    for e in entries:
        body = _BODY.pack(e.term, e.index, int(e.type)) + bytes(e.data)
        out += _HEAD.pack(len(body), crc32c(body))
        out += body
    return bytes(out)


def decode_entries(buf):
    """List of Entry from a concatenation of frames; raises CorruptEntryError on any damage."""
    mv = memoryview(buf).cast("B")
    out = []
    off = 0
    n = len(mv)
    while off < n:
        bad_index = out[-1].index + 1 if out else None
        if n - off < FRAME_HEADER_BYTES:
            raise CorruptEntryError(f"truncated frame header at offset {off}", bad_index, off)
        length, crc = _HEAD.unpack_from(mv, off)
        if length < FRAME_HEADER_BYTES - 8 or length > n - off - 8:
            raise CorruptEntryError(f"bad frame length {length} at offset {off}", bad_index, off)
        body = mv[off + 8 : off + 8 + length]
        if crc32c(body) != crc:
            raise CorruptEntryError(f"CRC mismatch at offset {off}", bad_index, off)
        term, index, etype = _BODY.unpack_from(body)
        out.append(Entry(term, index, etype, bytes(body[17:])))
        off += 8 + length
    return out
