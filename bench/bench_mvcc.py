"""MVCC store benchmarks (pytest-benchmark; also a quick smoke run with --benchmark-disable).

  python -m pytest bench/bench_mvcc.py                       # measure
  python -m pytest bench/bench_mvcc.py --benchmark-disable   # smoke: tiny sizes, runs once

Figures: puts/s applied in 1000-request entries of 256-byte values (apply alone and apply +
LMDB commit with fsync), range latency for 1 key and 1000 keys among 10^6 keys (10^5 when
disabled), watch fan-out of one put to 1000 watchers, and the key index rebuilt from the store
at start-up (3 * 10^5 keys). Each test prints its figure.
"""
import os
import time

import pytest

from raftkv.mvcc import KVStore
from raftkv.storage import BACKEND
from raftkv.storage.engine import Engine

VALUE = os.urandom(256)
ENTRY_PUTS = 1000


def _disabled(benchmark):
    return getattr(benchmark, "disabled", False)


class _Store:
    def __init__(self, path):
        self.engine = Engine(path)
        self.store = KVStore(self.engine)
        self.index = 0
        self.apply_s = 0.0

    def apply(self, requests):
        self.index += 1
        with self.engine.env.begin(write=True) as txn:
            t0 = time.perf_counter()
            self.store.apply(txn, self.index, requests)
            self.apply_s += time.perf_counter() - t0
        self.store.committed()

    def load(self, n, prefix=b"key"):
        for start in range(0, n, ENTRY_PUTS):
            self.apply([("put", {"key": b"%s%09d" % (prefix, i), "value": VALUE})
                        for i in range(start, min(n, start + ENTRY_PUTS))])


def test_put_throughput(benchmark, tmp_path):
    entries = 5 if _disabled(benchmark) else 50
    runs = []

    def run():
        s = _Store(tmp_path / f"put{len(runs)}")
        t0 = time.perf_counter()
        s.load(entries * ENTRY_PUTS)
        total = time.perf_counter() - t0
        runs.append((entries * ENTRY_PUTS / s.apply_s, entries * ENTRY_PUTS / total))
        s.engine.close()

    benchmark.pedantic(run, rounds=1 if _disabled(benchmark) else 3, iterations=1)
    apply_rate = max(r[0] for r in runs)
    commit_rate = max(r[1] for r in runs)
    benchmark.extra_info.update(backend=BACKEND, puts_per_s_apply=round(apply_rate),
                                puts_per_s_with_commit=round(commit_rate))
    print(f"\nput 256 B x {ENTRY_PUTS}/entry [{BACKEND}]: {apply_rate:,.0f}/s apply, "
          f"{commit_rate:,.0f}/s apply+commit")


@pytest.fixture(scope="module")
def big_store(tmp_path_factory, request):
    disabled = request.config.getoption("benchmark_disable", False)
    n = 100_000 if disabled else 1_000_000
    s = _Store(tmp_path_factory.mktemp("big") / "d")
    s.load(n)
    yield s, n
    s.engine.close()


def _range_bench(benchmark, big_store, count):
    s, n = big_store
    start = b"key%09d" % (n // 2)
    body = {"key": start, "range_end": b"key%09d" % (n // 2 + count)} if count > 1 \
        else {"key": start}
    resp = benchmark(s.store.range, body)
    assert len(resp["kvs"]) == count
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        print(f"\nrange {count} of {n:,} keys [{BACKEND}]: median "
              f"{stats.stats.median * 1e6:,.0f} us")


def test_range_1_key(benchmark, big_store):
    _range_bench(benchmark, big_store, 1)


def test_range_1000_keys(benchmark, big_store):
    _range_bench(benchmark, big_store, 1000)


def test_watch_fanout_1000(benchmark, tmp_path):
    s = _Store(tmp_path / "w")
    watchers = [s.store.watch(b"hot") for _ in range(1000)]
    delivered = []

    def put_and_drain():
        s.apply([("put", {"key": b"hot", "value": VALUE})])
        delivered.append(sum(len(r["events"]) for w in watchers for r in w.take()))

    benchmark(put_and_drain)
    assert set(delivered) == {1000}
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        med = stats.stats.median
        print(f"\nwatch fan-out 1 put -> 1000 watchers [{BACKEND}]: median {med * 1e3:.2f} ms "
              f"({1000 / med:,.0f} events/s, incl. apply + fsync commit)")
    s.engine.close()


def test_index_rebuild_at_start(benchmark, tmp_path):
    """KVStore(engine) over a store of n keys: what a member's start-up spends on the index."""
    n = 10_000 if _disabled(benchmark) else 300_000
    s = _Store(tmp_path / "rebuild")
    s.load(n)
    s.engine.close()
    engine = Engine(tmp_path / "rebuild")
    try:
        store = benchmark.pedantic(lambda: KVStore(engine), rounds=1 if _disabled(benchmark)
                                   else 3, iterations=1)
        assert len(store._index) == n
    finally:
        engine.close()
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        print(f"\nkey index rebuilt at start-up, {n:,} keys [{BACKEND}]: median "
              f"{stats.stats.median:.2f} s")
