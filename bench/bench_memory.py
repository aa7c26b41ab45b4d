"""Memory per key: the B+tree (C and pure twin) and the MVCC store's in-memory index.

  python -m pytest bench/bench_memory.py --benchmark-only -s   # 10^6 keys, prints bytes/key
  python -m pytest bench/bench_memory.py --benchmark-disable   # smoke: 10^4 keys

The figure is the growth of the process's resident set size (/proc/self/statm) while the
structure is built, divided by the number of keys: it includes the keys and values themselves
(12-byte keys, small int values for the tree; a KeyIndex per key for the MVCC store) and
allocator overhead, which is what an operator pays. It is an estimate: the allocator may reuse
memory freed earlier in the process, so the figure can only be lower than the truth by that
much. Not timed: pytest-benchmark runs each body once and the figure goes to extra_info.
"""
import gc
import os
import resource

import pytest

from raftkv.storage import _pybtree

try:
    from raftkv.storage import _cbtree
except ImportError:  # pure-Python build
    _cbtree = None

PAGE = resource.getpagesize()


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _per_key(build, n):
    gc.collect()
    before = _rss()
    keep = build(n)
    gc.collect()
    grown = _rss() - before
    del keep
    return grown / n


def _tree(mod):
    def build(n):
        t = mod.BTree()
        for i in range(n):
            t.insert(b"key/%08d" % i, i)
        return t
    return build


@pytest.mark.parametrize("impl", ["c", "pure"])
def test_btree_bytes_per_key(benchmark, impl, scaled):
    mod = _cbtree if impl == "c" else _pybtree
    if mod is None:
        pytest.skip("the C extension is not built")
    n = scaled(1_000_000, 10_000)
    out = {}
    benchmark.pedantic(lambda: out.update(v=_per_key(_tree(mod), n)), rounds=1, iterations=1)
    benchmark.extra_info.update(keys=n, bytes_per_key=round(out["v"], 1))
    print(f"\nB+tree [{impl}] {n:,} keys: {out['v']:.0f} bytes/key (RSS growth)")


def test_mvcc_bytes_per_key(benchmark, tmp_path, scaled):
    from raftkv.mvcc import KVStore
    from raftkv.storage.engine import Engine

    n = scaled(200_000, 10_000)
    value = os.urandom(256)
    engine = Engine(tmp_path / "mem")
    out = {}

    def build(count):
        store = KVStore(engine)
        for index, start in enumerate(range(0, count, 1000), 1):
            reqs = [("put", {"key": b"key/%08d" % i, "value": value})
                    for i in range(start, min(count, start + 1000))]
            with engine.env.begin(write=True) as txn:
                store.apply(txn, index, reqs)
            store.committed()
        return store

    try:
        benchmark.pedantic(lambda: out.update(v=_per_key(build, n)), rounds=1, iterations=1)
    finally:
        engine.close()
    benchmark.extra_info.update(keys=n, bytes_per_key=round(out["v"], 1))
    print(f"\nMVCC store {n:,} keys (256 B values in LMDB, index in memory): "
          f"{out['v']:.0f} bytes/key of RSS (includes LMDB pages mapped while writing)")
