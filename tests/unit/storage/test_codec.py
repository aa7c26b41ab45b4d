"""Log entry codec: layout, roundtrip, C against pure byte for byte, every kind of damage."""
import random
import struct

import pytest

from raftkv.raft.types import Entry, EntryType
from raftkv.storage.errors import CorruptEntryError, StorageError


def _entries(rng, n, first_index=1, max_payload=300):
    return [
        Entry(
            term=rng.randrange(1, 2**64),
            index=first_index + i,
            type=rng.choice([EntryType.NORMAL, EntryType.CONF_CHANGE]),
            data=rng.randbytes(rng.randrange(0, max_payload)),
        )
        for i in range(n)
    ]


def test_frame_layout(backend):
    buf = backend.codec.encode_entries([Entry(2, 7, EntryType.CONF_CHANGE, b"xyz")])
    length, crc = struct.unpack_from("<II", buf)
    assert length == 17 + 3 and len(buf) == 8 + length
    assert crc == backend.codec.crc32c(buf[8:])
    assert struct.unpack_from("<QQB", buf, 8) == (2, 7, 1)
    assert buf[25:] == b"xyz"


def test_empty(backend):
    assert backend.codec.encode_entries([]) == b""
    assert backend.codec.decode_entries(b"") == []


def test_roundtrip(backend):
    entries = _entries(random.Random(1), 200)
    buf = backend.codec.encode_entries(entries)
    out = backend.codec.decode_entries(buf)
    assert out == entries
    assert all(type(e.data) is bytes and type(e.type) is int for e in out)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_decode_accepts_any_buffer(backend, kind):
    entries = _entries(random.Random(2), 20)
    buf = backend.codec.encode_entries(entries)
    assert backend.codec.decode_entries(kind(buf)) == entries
    padded = b"!!!" + buf
    assert backend.codec.decode_entries(memoryview(padded)[3:]) == entries


def test_encode_accepts_any_iterable_and_payload_buffer(backend):
    entries = [Entry(1, 1, 0, bytearray(b"ab")), Entry(1, 2, 0, memoryview(b"cd"))]
    buf = backend.codec.encode_entries(iter(entries))
    assert backend.codec.decode_entries(buf) == [Entry(1, 1, 0, b"ab"), Entry(1, 2, 0, b"cd")]


def test_c_and_pure_agree_byte_for_byte(both_backends):
    c, py = both_backends
    rng = random.Random(3)
    for _ in range(20):
        entries = _entries(rng, rng.randrange(0, 50), first_index=rng.randrange(1, 2**40))
        buf = c.codec.encode_entries(entries)
        assert buf == py.codec.encode_entries(entries)
        assert c.codec.decode_entries(buf) == py.codec.decode_entries(buf) == entries


def test_large_batch_roundtrip(backend):
    # Over the C extension's GIL-release threshold in both directions.
    entries = _entries(random.Random(4), 300, max_payload=2000)
    entries.append(Entry(9, 301, 0, bytes(100_000)))
    assert backend.codec.decode_entries(backend.codec.encode_entries(entries)) == entries


@pytest.mark.parametrize(
    "entry",
    [Entry(-1, 1), Entry(2**64, 1), Entry(1, -1), Entry(1, 2**64), Entry(1, 1, 256)],
)
def test_out_of_range_fields_are_struct_errors(backend, entry):
    with pytest.raises(struct.error):
        backend.codec.encode_entries([entry])


def _decode_error(backend, buf):
    with pytest.raises(CorruptEntryError) as info:
        backend.codec.decode_entries(buf)
    assert isinstance(info.value, StorageError)
    return info.value


def _frame_offsets(buf):
    offsets, off = [], 0
    while off < len(buf):
        offsets.append(off)
        off += 8 + struct.unpack_from("<I", buf, off)[0]
    return offsets


def test_every_flipped_bit_names_the_first_bad_record(backend):
    """A flipped bit anywhere (len, crc, term, index, type, payload) is caught and named."""
    entries = _entries(random.Random(5), 4, first_index=100, max_payload=6)
    buf = backend.codec.encode_entries(entries)
    offsets = _frame_offsets(buf)
    for pos in range(len(buf)):
        k = max(i for i, off in enumerate(offsets) if off <= pos)
        for bit in (0, 3, 7):
            damaged = bytearray(buf)
            damaged[pos] ^= 1 << bit
            err = _decode_error(backend, damaged)
            assert err.offset == offsets[k], (pos, bit)
            assert err.index == (None if k == 0 else entries[k - 1].index + 1), (pos, bit)


def test_truncated_tail(backend):
    entries = _entries(random.Random(6), 3, first_index=10, max_payload=40)
    buf = backend.codec.encode_entries(entries)
    last = _frame_offsets(buf)[-1]
    for cut in range(last + 1, len(buf)):
        err = _decode_error(backend, buf[:cut])
        assert (err.index, err.offset) == (12, last)
        if cut - last < 25:
            assert str(err) == f"truncated frame header at offset {last}"
        else:
            assert str(err).startswith("bad frame length")


@pytest.mark.parametrize("bad_len", [0, 1, 16, 2**32 - 1])
def test_bad_len(backend, bad_len):
    entries = _entries(random.Random(7), 2, first_index=5)
    buf = bytearray(backend.codec.encode_entries(entries))
    off = _frame_offsets(buf)[1]
    struct.pack_into("<I", buf, off, bad_len)
    err = _decode_error(backend, buf)
    assert (err.index, err.offset) == (6, off)
    assert str(err) == f"bad frame length {bad_len} at offset {off}"


def test_crc_mismatch_message(backend):
    buf = bytearray(backend.codec.encode_entries([Entry(1, 1, 0, b"payload")]))
    buf[-1] ^= 0xFF
    err = _decode_error(backend, buf)
    assert (str(err), err.index, err.offset) == ("CRC mismatch at offset 0", None, 0)


def test_c_and_pure_errors_agree_on_random_damage(both_backends):
    c, py = both_backends
    rng = random.Random(8)
    for _ in range(300):
        entries = _entries(rng, rng.randrange(1, 6), first_index=rng.randrange(1, 1000),
                           max_payload=30)
        buf = bytearray(c.codec.encode_entries(entries))
        action = rng.randrange(3)
        if action == 0:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif action == 1:
            del buf[rng.randrange(len(buf)):]
        else:
            buf += rng.randbytes(rng.randrange(1, 40))
        outcomes = []
        for b in (c, py):
            try:
                outcomes.append(("ok", b.codec.decode_entries(bytes(buf))))
            except CorruptEntryError as exc:
                outcomes.append(("err", str(exc), exc.index, exc.offset))
        assert outcomes[0] == outcomes[1]


def test_reexported_error_is_the_shared_class(backend):
    assert backend.codec.CorruptEntryError is CorruptEntryError
