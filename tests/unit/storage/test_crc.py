"""CRC32C: check vectors, C against the pure-Python twin, chaining, any buffer type."""
import random
import zlib

import pytest

# (data, CRC32C): the catalogue check value and the iSCSI (RFC 3720, B.4) test patterns.
VECTORS = [
    (b"", 0x00000000),
    (b"a", 0xC1D04330),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("data,expected", VECTORS)
def test_check_vectors(backend, data, expected):
    assert backend.codec.crc32c(data) == expected


def test_crc_impl_is_named(both_backends):
    c, _ = both_backends
    assert c.codec.CRC_IMPL in ("sse4.2", "slice8")


def test_result_is_a_32_bit_int(backend):
    value = backend.codec.crc32c(b"hello")
    assert type(value) is int and 0 <= value < 2**32


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_buffer_types_agree(backend, kind):
    data = bytes(random.Random(7).randrange(256) for _ in range(1000))
    assert backend.codec.crc32c(kind(data)) == backend.codec.crc32c(data)


def test_non_buffer_is_a_type_error(backend):
    with pytest.raises(TypeError):
        backend.codec.crc32c("text")


def test_c_matches_pure_on_random_lengths_and_offsets(both_backends):
    c, py = both_backends
    rng = random.Random(1)
    blob = rng.randbytes(70_000)
    lengths = list(range(0, 80)) + [255, 256, 257, 767, 768, 769, 1000, 4096, 24_575, 24_576,
                                     24_577, 30_000]
    for length in lengths:
        for start in (0, 1, 3, 7):
            view = memoryview(blob)[start:start + length]
            expected = _pure_reference(py, view)
            assert c.codec.crc32c(view) == expected, (length, start)
            assert c.codec.crc32c(bytearray(view)) == expected


def _pure_reference(py, view):
    # The pure twin's CRC, chained over pieces (same value; chaining is tested on its own).
    value = 0
    for off in range(0, len(view), 4096):
        value = py.codec.crc32c(view[off:off + 4096], value)
    return value


def test_chaining(backend):
    rng = random.Random(2)
    data = rng.randbytes(3000)
    whole = backend.codec.crc32c(data)
    for cut in (0, 1, 7, 8, 9, 1000, 2999, 3000):
        first = backend.codec.crc32c(data[:cut])
        assert backend.codec.crc32c(data[cut:], first) == whole


def test_c_chaining_matches_pure(both_backends):
    c, py = both_backends
    rng = random.Random(3)
    for _ in range(200):
        data = rng.randbytes(rng.randrange(0, 300))
        value = rng.randrange(2**32)
        assert c.codec.crc32c(data, value) == py.codec.crc32c(data, value)


def test_large_buffer_releases_gil_and_agrees(both_backends):
    c, _ = both_backends
    data = random.Random(4).randbytes(1 << 20)
    # Two halves, chained, against the whole: exercises the 3-way long path and the nogil path.
    half = c.codec.crc32c(memoryview(data)[: 1 << 19])
    assert c.codec.crc32c(memoryview(data)[1 << 19:], half) == c.codec.crc32c(data)
    assert c.codec.crc32c(data) != zlib.crc32(data)  # a different polynomial from zlib's


def test_slice8_fallback_agrees_with_hardware(both_backends):
    """The table path is what runs on a CPU without SSE4.2: it must give the same values."""
    _ccodec = both_backends[0].codec

    assert _ccodec._crc32c_slice8(b"123456789") == 0xE3069283
    rng = random.Random(5)
    for length in (0, 1, 7, 8, 9, 63, 64, 65, 1000, 30_000):
        data = rng.randbytes(length + 3)
        view = memoryview(data)[3:]
        value = rng.randrange(2**32)
        assert _ccodec._crc32c_slice8(view, value) == _ccodec.crc32c(view, value)
