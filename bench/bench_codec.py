"""CRC32C and log entry codec: C against the pure-Python twin (and zlib's CRC-32 for scale).

Run: python -m pytest bench/bench_codec.py --benchmark-only
Throughput: 1 MiB / mean for the CRC rows, 1000 entries / mean for encode and decode.
"""
import random
import zlib

import pytest

from raftkv.raft.types import Entry
from raftkv.storage import _ccodec, _pycodec

MIB = 1 << 20
PURE_CRC_BYTES = 64 * 1024  # the pure twin is ~10^4 times slower: time it on 64 KiB

CRC_IMPLS = {
    "c": _ccodec.crc32c,
    "c-slice8": _ccodec._crc32c_slice8,
    "zlib-crc32": zlib.crc32,
    "pure": _pycodec.crc32c,
}


@pytest.mark.parametrize("impl", list(CRC_IMPLS))
def test_crc32c_1mib(benchmark, scaled, impl):
    size = scaled(PURE_CRC_BYTES if impl == "pure" else MIB, 4096)
    data = random.Random(1).randbytes(size)
    benchmark.group = "crc32c"
    benchmark.extra_info.update(bytes=size, crc_impl=_ccodec.CRC_IMPL)
    if impl == "pure":
        value = benchmark.pedantic(CRC_IMPLS[impl], args=(data,), rounds=3, iterations=1)
    else:
        value = benchmark(CRC_IMPLS[impl], data)
    if impl != "zlib-crc32":
        assert value == _ccodec.crc32c(data)


def _entries(n, payload):
    rng = random.Random(2)
    return [Entry(7, 1000 + i, 0, rng.randbytes(payload)) for i in range(n)]


CODECS = {"c": _ccodec, "pure": _pycodec}


@pytest.mark.parametrize("impl", list(CODECS))
def test_encode_1000x256(benchmark, scaled, impl):
    entries = _entries(scaled(1000, 100), 256)
    benchmark.group = "encode 1000 x 256 B"
    benchmark.extra_info["entries"] = len(entries)
    buf = benchmark(CODECS[impl].encode_entries, entries)
    assert buf == _pycodec.encode_entries(entries)


@pytest.mark.parametrize("impl", list(CODECS))
def test_decode_1000x256(benchmark, scaled, impl):
    entries = _entries(scaled(1000, 100), 256)
    buf = _ccodec.encode_entries(entries)
    benchmark.group = "decode 1000 x 256 B"
    benchmark.extra_info["entries"] = len(entries)
    assert benchmark(CODECS[impl].decode_entries, buf) == entries
