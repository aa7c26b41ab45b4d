"""LogStore append benchmarks (pytest-benchmark): batches of 1, 10, 100, 1000 entries of 256 B.

  python -m pytest bench/bench_logstore.py                      # measure
  python -m pytest bench/bench_logstore.py --benchmark-disable  # smoke: each body runs once
  python -m pytest bench/bench_logstore.py --benchmark-json=out.json   # extra_info per case

Cases:
  test_sync_floor          one 16-byte put + commit: the cost of one durable LMDB commit here
  test_append_durable[n]   GroupCommitter.run_sync(save(batch of n)): what the member pays
  test_append_cpu[n]       save(batch of n) in a write txn that is aborted: CPU only, no sync
  test_encode_cpu[n]       encode_entries(batch of n) alone: the codec's share of append_cpu

extra_info: entries_per_s and syncs_per_s (from the mean), sync_ms_mean (the committer's own
commit timing), storage backend ("c" or "pure": the pure codec's CRC is much slower).
Targets: a 1000-entry batch costs at most one sync + 2 ms CPU; one entry, a sync + 50 us.
"""
import pytest

import raftkv.storage
from raftkv.raft.types import Entry, EntryType
from raftkv.storage import encode_entries
from raftkv.storage.engine import Engine
from raftkv.storage.group_commit import GroupCommitter
from raftkv.storage.logstore import LogStore

ENTRY_DATA_BYTES = 256
BATCH_SIZES = [1, 10, 100, 1000]
PAYLOAD = bytes(range(256)) * (ENTRY_DATA_BYTES // 256)


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path / "data")
    yield eng
    eng.close()


def batch(first, n):
    return [Entry(1, i, EntryType.NORMAL, PAYLOAD) for i in range(first, first + n)]


def _record(benchmark, n, syncs_per_round):
    benchmark.extra_info["backend"] = raftkv.storage.BACKEND
    benchmark.extra_info["entries_per_batch"] = n
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable
        return
    mean = stats.stats.mean
    benchmark.extra_info["entries_per_s"] = n / mean
    benchmark.extra_info["syncs_per_s"] = syncs_per_round / mean


def test_sync_floor(benchmark, engine):
    db = engine.db("bench")

    def commit_one():
        with engine.env.begin(write=True, db=db) as txn:
            txn.put(b"k", b"0123456789abcdef")

    benchmark(commit_one)
    _record(benchmark, 0, 1)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_append_durable(benchmark, engine, n):
    store = LogStore(engine)
    committer = GroupCommitter(engine)
    state = {"next": 1}

    def append():
        ents = batch(state["next"], n)
        state["next"] += n
        committer.run_sync(lambda txn: store.save(txn, ents))

    try:
        benchmark(append)
    finally:
        committer.close()
    assert store.last_index() == state["next"] - 1
    assert committer.txns == committer.fns  # run_sync waits: one round per append
    _record(benchmark, n, 1)
    benchmark.extra_info["sync_ms_mean"] = 1e3 * committer.sync_seconds_total / committer.txns


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_append_cpu(benchmark, engine, n):
    store = LogStore(engine)

    def save_and_abort():
        txn = engine.env.begin(write=True)
        try:
            store.save(txn, batch(1, n))
        finally:
            txn.abort()

    benchmark(save_and_abort)
    assert store.last_index() == 0
    _record(benchmark, n, 0)


@pytest.mark.parametrize("n", BATCH_SIZES)
def test_encode_cpu(benchmark, n):
    ents = batch(1, n)
    frames = benchmark(encode_entries, ents)
    assert len(frames) == n * (ENTRY_DATA_BYTES + 25)
    _record(benchmark, n, 0)
