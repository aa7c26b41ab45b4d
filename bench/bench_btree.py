"""B+tree point lookups and inserts: C tree against the pure twin and bisect on a sorted list.

Run: python -m pytest bench/bench_btree.py --benchmark-only
Each round does OPS operations, so operations/s = OPS / mean. Keys look like etcd's
(/registry/pods/<namespace>/<name>): long shared prefixes, as the MVCC layer will produce.
"""
import bisect
import random

import pytest

from raftkv.storage import _cbtree, _pybtree

SIZES = [10**4, 10**5, 10**6]
OPS = 1000
IMPLS = ["c", "pure", "bisect"]


def _key(i):
    return b"/registry/pods/ns%03d/pod-%09d" % (i % 97, i * 7919 % 10**9)


class _Sorted:
    """The baseline: a sorted list of keys and a parallel list of values, with bisect."""

    def __init__(self, keys):
        self.keys = sorted(keys)
        self.vals = list(range(len(self.keys)))

    def get(self, key):
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            return self.vals[i]
        return None

    def insert(self, key, value):
        i = bisect.bisect_left(self.keys, key)
        self.keys.insert(i, key)
        self.vals.insert(i, value)

    def delete(self, key):
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            del self.keys[i]
            del self.vals[i]


_BUILT = {}


def _build(impl, n):
    """A map of n keys (cached: building 10^6 keys takes seconds) and its key list."""
    if (impl, n) not in _BUILT:
        keys = [_key(i) for i in range(n)]
        if impl == "bisect":
            m = _Sorted(keys)
        else:
            m = (_cbtree if impl == "c" else _pybtree).BTree()
            # The list-based twin inserts cheaply only at its end; the C tree takes any order.
            for i, k in enumerate(sorted(keys) if impl == "pure" else keys):
                m.insert(k, i)
        _BUILT.clear()  # keep one 10^6-key map alive at a time
        _BUILT[(impl, n)] = (m, keys)
    return _BUILT[(impl, n)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_lookup(benchmark, scaled, impl, n):
    m, keys = _build(impl, scaled(n, 2000))
    probe = random.Random(n).sample(keys, min(OPS, len(keys)))
    get = m.get

    def lookups():
        for k in probe:
            get(k)

    benchmark.group = f"lookup x{OPS} at {n} keys"
    benchmark.extra_info.update(ops=len(probe), keys=len(keys))
    benchmark(lookups)
    assert all(get(k) is not None for k in probe[:10])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_insert(benchmark, scaled, impl, n):
    m, keys = _build(impl, scaled(n, 2000))
    fresh = [b"%s~new%04d" % (k, j) for j, k in enumerate(random.Random(n).sample(keys, OPS)
                                                         if len(keys) >= OPS else keys)]

    def inserts():
        for k in fresh:
            m.insert(k, 0)

    def undo():
        for k in fresh:
            m.delete(k)

    benchmark.group = f"insert x{OPS} at {n} keys"
    benchmark.extra_info.update(ops=len(fresh), keys=len(keys))
    benchmark.pedantic(inserts, setup=undo, rounds=5 if impl != "c" else 30, iterations=1)
    undo()
    if impl != "bisect":
        assert len(m) == len(keys)
