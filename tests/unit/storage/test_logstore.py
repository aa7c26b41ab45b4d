"""LogStore (Raft log over LMDB) and GroupCommitter: every method, every error, recovery."""
import asyncio
import os
import threading
import time
import types

import lmdb
import pytest

from raftkv.raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata
from raftkv.storage.engine import FORMAT_KEY, DataDirError, Engine
from raftkv.storage.errors import CorruptEntryError, StorageError
from raftkv.storage.group_commit import CommitError, CommitterClosedError, GroupCommitter
from raftkv.storage.logstore import (
    LOG_DB, EntryTooLargeError, InvalidArgumentError, InvalidEntryError, LogCorruptError,
    LogStore, NonContiguousError, StaleSnapshotError, TermOrderError,
)


def ents(lo, hi, term=1, size=8):
    return [Entry(term, i, EntryType.NORMAL, bytes([i % 251]) * size) for i in range(lo, hi)]


@pytest.fixture
def engine(tmp_path):
    eng = Engine(tmp_path / "data")
    yield eng
    eng.close()


@pytest.fixture
def committer(engine):
    gc = GroupCommitter(engine)
    yield gc
    gc.close()


@pytest.fixture
def store(engine):
    return LogStore(engine, entry_bytes_max=1024)


def dump(engine):
    """Every (db, key, value) of the log and meta sub-databases."""
    out = []
    with engine.env.begin() as txn:
        for name in (b"log", b"meta"):
            out += [(name, k, v) for k, v in txn.cursor(db=engine.db(name))]
    return out


def reopen(engine, **kw):
    path = engine.path
    engine.close()
    eng = Engine(path)
    return eng, LogStore(eng, **kw)


# ---- read side ----

def test_empty_store(store):
    assert (store.first_index(), store.last_index()) == (1, 0)
    assert store.term(0) == 0
    assert store.initial_state() == (HardState(), ConfState())
    assert store.snapshot().is_empty()
    assert store.entries(1, 1) == []
    with pytest.raises(UnavailableError):
        store.entries(1, 2)
    with pytest.raises(UnavailableError):
        store.term(1)
    with pytest.raises(CompactedError):
        store.entries(0, 1)


def test_append_and_read(store, committer):
    batch = ents(1, 11) + [Entry(2, 11, EntryType.CONF_CHANGE, b"cc")]
    committer.run_sync(lambda txn: store.save(txn, batch, HardState(2, 3, 7)))
    assert (store.first_index(), store.last_index()) == (1, 11)
    assert store.entries(1, 12) == batch
    assert store.entries(4, 6) == batch[3:5]
    assert [store.term(i) for i in (0, 1, 10, 11)] == [0, 1, 1, 2]
    assert store.initial_state()[0] == HardState(2, 3, 7)
    with pytest.raises(UnavailableError):
        store.entries(5, 13)
    with pytest.raises(UnavailableError):
        store.term(12)
    with pytest.raises(InvalidArgumentError):
        store.entries(6, 5)


def test_entries_max_size(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 11)))
    one = ents(1, 2)[0].size()
    assert len(store.entries(1, 11, max_size=0)) == 1  # always at least one
    assert len(store.entries(1, 11, max_size=one)) == 1
    assert len(store.entries(1, 11, max_size=3 * one)) == 3
    assert len(store.entries(1, 11, max_size=3 * one + 1)) == 3
    assert len(store.entries(1, 11, max_size=100 * one)) == 10


def test_truncate_conflicting_suffix(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 11)))
    new = ents(6, 8, term=2)
    committer.run_sync(lambda txn: store.save(txn, new))
    assert store.last_index() == 7
    assert store.entries(1, 8) == ents(1, 6) + new
    assert store.term(7) == 2
    with pytest.raises(UnavailableError):
        store.entries(8, 9)
    eng, again = reopen(store.engine)
    assert again.entries(1, 8) == ents(1, 6) + new
    eng.close()


def test_two_saves_in_one_txn(store, committer):
    def fn(txn):
        store.save(txn, ents(1, 4))
        store.save(txn, ents(4, 6), HardState(1, 1, 5))
        return "ok"

    assert committer.run_sync(fn) == "ok"
    assert store.last_index() == 5 and store.initial_state()[0].commit == 5


# ---- write errors: clear, and nothing changes ----

@pytest.mark.parametrize("bad, error", [
    (ents(1, 2)[0], InvalidEntryError),
    ("abc", InvalidEntryError),
    ([(1, 1)], InvalidEntryError),
    ([Entry(1, 1, EntryType.NORMAL, "text")], InvalidEntryError),
    ([Entry(True, 1)], InvalidEntryError),
    ([Entry(1, 0)], InvalidEntryError),
    ([Entry(-1, 1)], InvalidEntryError),
    ([Entry(1, 1, 7)], InvalidEntryError),
    ([Entry(1, 1, EntryType.NORMAL, b"x" * 2000)], EntryTooLargeError),
    (ents(1, 3) + ents(4, 5), NonContiguousError),
    (ents(1, 3) + ents(2, 3), NonContiguousError),
    (ents(1, 3, term=2) + ents(3, 4, term=1), TermOrderError),
    (ents(7, 9), NonContiguousError),  # gap after the stored log (last is 5)
    (ents(6, 7, term=0), TermOrderError),  # below the term of entry 5
])
def test_save_errors_change_nothing(store, committer, bad, error):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 6), HardState(1, 0, 1)))
    before = dump(store.engine)
    with pytest.raises(error) as info:
        committer.run_sync(lambda txn: store.save(txn, bad, HardState(5, 5, 5)))
    assert isinstance(info.value, StorageError)
    assert dump(store.engine) == before
    assert store.last_index() == 5 and store.initial_state()[0] == HardState(1, 0, 1)
    assert committer.failed_fns == 1


def test_oversized_entry_limit_counts_framing(engine, committer):
    store = LogStore(engine, entry_bytes_max=100)
    committer.run_sync(lambda txn: store.save(txn, [Entry(1, 1, 0, b"x" * 75)]))
    with pytest.raises(EntryTooLargeError, match="entry 2 is 101 bytes"):
        committer.run_sync(lambda txn: store.save(txn, [Entry(1, 2, 0, b"x" * 76)]))


def test_other_argument_errors(store, committer):
    with pytest.raises(InvalidArgumentError):
        committer.run_sync(lambda txn: store.save(txn, [], hard_state=(1, 2, 3)))
    with pytest.raises(InvalidArgumentError):
        committer.run_sync(lambda txn: store.save(txn, [], snapshot="snap"))
    with pytest.raises(InvalidArgumentError):
        committer.run_sync(lambda txn: store.set_conf_state(txn, [1, 2]))
    with pytest.raises(InvalidArgumentError):
        committer.run_sync(lambda txn: store.compact(txn, "3"))


# ---- compaction ----

def test_compact(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 11, term=3)))
    committer.run_sync(lambda txn: store.compact(txn, 4))
    assert (store.first_index(), store.last_index()) == (5, 10)
    assert store.term(4) == 3  # the compaction point's term is kept
    with pytest.raises(CompactedError):
        store.term(3)
    with pytest.raises(CompactedError):
        store.entries(4, 6)
    assert store.entries(5, 11) == ents(5, 11, term=3)
    with pytest.raises(CompactedError):
        committer.run_sync(lambda txn: store.compact(txn, 4))
    with pytest.raises(InvalidArgumentError):
        committer.run_sync(lambda txn: store.compact(txn, 11))
    committer.run_sync(lambda txn: store.compact(txn, 10))  # the whole log
    assert (store.first_index(), store.last_index(), store.term(10)) == (11, 10, 3)
    assert store.entries(11, 11) == []
    committer.run_sync(lambda txn: store.save(txn, ents(9, 13, term=3)))  # 9, 10 skipped
    assert (store.first_index(), store.last_index()) == (11, 12)
    eng, again = reopen(store.engine, verify_all=True)
    assert (again.first_index(), again.last_index(), again.term(10)) == (11, 12, 3)
    assert again.entries(11, 13) == ents(11, 13, term=3)
    eng.close()


def test_save_of_entries_all_compacted_is_a_no_op(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 6)))
    committer.run_sync(lambda txn: store.compact(txn, 5))
    before = dump(store.engine)
    committer.run_sync(lambda txn: store.save(txn, ents(2, 5)))
    assert dump(store.engine) == before


# ---- snapshots ----

CONF = ConfState(voters=[1, 2, 3], learners=[4])


def test_snapshot_matching_log_keeps_the_rest(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 11, term=2)))
    snap = Snapshot(b"image", SnapshotMetadata(CONF, 6, 2))
    committer.run_sync(lambda txn: store.save(txn, [], snapshot=snap))
    assert (store.first_index(), store.last_index(), store.term(6)) == (7, 10, 2)
    assert store.entries(7, 11) == ents(7, 11, term=2)
    assert store.snapshot() == Snapshot(b"", snap.metadata)
    assert store.initial_state()[1] == CONF


def test_snapshot_not_matching_drops_the_log(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 11, term=2)))
    meta = SnapshotMetadata(CONF, 6, 3)  # term differs at index 6
    committer.run_sync(lambda txn: store.save(txn, ents(7, 9, term=3), snapshot_metadata=meta))
    assert (store.first_index(), store.last_index(), store.term(6)) == (7, 8, 3)
    assert store.entries(7, 9) == ents(7, 9, term=3)
    meta2 = SnapshotMetadata(ConfState([1]), 20, 4)  # beyond the log
    committer.run_sync(lambda txn: store.save(txn, [], HardState(4, 1, 20), snapshot=meta2))
    assert (store.first_index(), store.last_index(), store.term(20)) == (21, 20, 4)
    eng, again = reopen(store.engine)
    assert again.snapshot().metadata == meta2
    assert again.initial_state() == (HardState(4, 1, 20), ConfState([1]))
    assert (again.first_index(), again.last_index()) == (21, 20)
    eng.close()


def test_stale_snapshot_refused(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 11)))
    committer.run_sync(lambda txn: store.compact(txn, 5))
    before = dump(store.engine)
    meta = SnapshotMetadata(CONF, 5, 1)
    with pytest.raises(StaleSnapshotError) as info:
        committer.run_sync(lambda txn: store.save(txn, [], snapshot=meta))
    assert isinstance(info.value, SnapshotOutOfDateError)
    assert dump(store.engine) == before


def test_set_conf_state(store, committer):
    committer.run_sync(lambda txn: store.set_conf_state(txn, CONF))
    assert store.initial_state()[1] == CONF
    eng, again = reopen(store.engine)
    assert again.initial_state()[1] == CONF
    eng.close()


# ---- caches follow commits only ----

def test_caches_change_only_after_commit_with_own_txn(engine, store):
    with engine.env.begin(write=True) as txn:
        hook = store.save(txn, ents(1, 4), HardState(1, 1, 1))
        assert store.last_index() == 0
    assert store.last_index() == 0  # committed, hook not run yet
    hook()
    assert store.last_index() == 3 and store.initial_state()[0] == HardState(1, 1, 1)
    txn = engine.env.begin(write=True)
    store.save(txn, ents(4, 6))
    txn.abort()
    assert store.last_index() == 3 and store.entries(1, 4) == ents(1, 4)


def test_stale_hook_is_ignored(engine, store):
    with engine.env.begin(write=True) as txn:
        old = store.save(txn, ents(1, 3))
        new = store.save(txn, ents(3, 5))
    new()
    old()
    assert store.last_index() == 4


def test_reload(engine, store):
    with engine.env.begin(write=True) as txn:
        store.save(txn, ents(1, 3))
    store.reload()
    assert store.last_index() == 2


# ---- recovery ----

def test_reopen_after_close(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 50, term=2), HardState(2, 1, 40)))
    committer.close()
    eng, again = reopen(store.engine, verify_all=True)
    assert (again.first_index(), again.last_index(), again.term(49)) == (1, 49, 2)
    assert again.entries(1, 50) == ents(1, 50, term=2)
    assert again.initial_state()[0] == HardState(2, 1, 40)
    eng.close()


def corrupt(engine, index, pos=-1):
    log = engine.db(LOG_DB)
    with engine.env.begin(write=True, db=log) as txn:
        key = index.to_bytes(8, "big")
        value = bytearray(txn.get(key))
        value[pos] ^= 0x40
        txn.put(key, bytes(value))


def test_corrupt_tail_detected_on_open(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 21)))
    corrupt(store.engine, 20)
    path = store.engine.path
    store.engine.close()
    with pytest.raises(LogCorruptError) as info:
        LogStore(Engine(path))
    message = str(info.value)
    assert path in message and "index 20" in message
    assert info.value.index == 20 and isinstance(info.value, CorruptEntryError)


def test_corrupt_middle_found_by_read_or_full_verify(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 21)))
    corrupt(store.engine, 3, pos=12)  # inside the term field
    eng, again = reopen(store.engine, verify_tail=4)  # tail is fine
    with pytest.raises(LogCorruptError, match="index 3"):
        again.entries(1, 10)
    eng.close()
    eng = Engine(eng.path)
    with pytest.raises(LogCorruptError, match=f"{eng.path}.*index 3"):
        LogStore(eng, verify_all=True)
    eng.close()


def test_hole_in_log_detected_on_open(store, committer):
    committer.run_sync(lambda txn: store.save(txn, ents(1, 21)))
    with store.engine.env.begin(write=True, db=store.engine.db(LOG_DB)) as txn:
        txn.delete((7).to_bytes(8, "big"))
    path = store.engine.path
    store.engine.close()
    with pytest.raises(LogCorruptError, match="hole"):
        LogStore(Engine(path))


def test_newer_format_version_refused(engine):
    path = engine.path
    with engine.env.begin(write=True, db=engine.db(b"meta")) as txn:
        txn.put(FORMAT_KEY, b"99")
    engine.close()
    with pytest.raises(DataDirError, match="newer"):
        Engine(path)


def _filled_engine_path(engine):
    with engine.env.begin(write=True, db=engine.db(b"kv")) as txn:
        for i in range(2000):
            txn.put(b"key%06d" % i, b"v" * 100)
    path = engine.path
    engine.close()
    return path


def test_a_store_file_cut_short_is_refused_not_mapped(engine):
    """LMDB maps data.mdb: reading a page past the file's end kills the process (SIGBUS). A
    file shorter than its meta page says is refused with a message instead."""
    path = _filled_engine_path(engine)
    data_file = os.path.join(path, "data.mdb")
    size = os.path.getsize(data_file)
    os.truncate(data_file, size // 2)
    with pytest.raises(DataDirError, match="cut short") as info:
        Engine(path)
    assert f"{size // 2} bytes" in str(info.value)
    assert os.path.getsize(data_file) == size // 2  # nothing written


def test_damaged_store_pages_are_refused_with_a_message(engine):
    path = _filled_engine_path(engine)
    data_file = os.path.join(path, "data.mdb")
    size = os.path.getsize(data_file)
    with open(data_file, "r+b") as f:  # every page after the two meta pages
        f.seek(2 * 4096)
        f.write(b"\0" * (size - 2 * 4096))
    with pytest.raises(DataDirError, match="is damaged"):
        Engine(path)


# ---- group commit ----

def test_concurrent_submits_coalesce(store, committer):
    gate = threading.Event()

    async def main():
        blocker = asyncio.ensure_future(committer.submit(lambda txn: gate.wait(10)))
        await asyncio.sleep(0.01)  # the storage thread is now inside blocker's round
        tasks = [asyncio.ensure_future(committer.submit(
            lambda txn, i=i: store.save(txn, ents(i, i + 1)) and i)) for i in range(1, 201)]
        await asyncio.sleep(0)  # every task has queued its fn
        gate.set()
        await blocker
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == list(range(1, 201))
    assert store.last_index() == 200 and store.entries(1, 201) == ents(1, 201)
    assert committer.fns == 201
    assert committer.txns <= 3  # the blocker's round, then one (maybe two) for the 200
    assert sum(committer.batch_sizes) == 201 and len(committer.sync_seconds) == committer.txns


def test_failing_fn_fails_only_its_submitter(store, committer):
    async def main():
        good = committer.submit(lambda txn: store.save(txn, ents(1, 3)) and "good")
        bad = committer.submit(lambda txn: store.save(txn, ents(5, 6)))
        return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = asyncio.run(main())
    assert good == "good" and isinstance(bad, NonContiguousError)
    assert store.last_index() == 2 and committer.failed_fns == 1


class _FailingCommitEnv:
    """Wraps an lmdb Environment so the outer write txn's commit fails."""

    def __init__(self, env):
        self.env = env

    def begin(self, write=False, parent=None):
        if parent is not None:
            return self.env.begin(write=write, parent=parent.txn)
        return _FailingCommitTxn(self.env.begin(write=write))


class _FailingCommitTxn:
    def __init__(self, txn):
        self.txn = txn

    def commit(self):
        self.txn.abort()
        raise lmdb.DiskError("injected commit failure")

    def abort(self):
        self.txn.abort()


def test_failed_commit_fails_every_submitter(engine, store):
    gc = GroupCommitter(engine)
    # the committer reads its engine's env per round (the online defrag replaces it)
    gc._engine = types.SimpleNamespace(env=_FailingCommitEnv(engine.env), path=engine.path)
    with pytest.raises(CommitError, match="injected") as info:
        gc.run_sync(lambda txn: store.save(txn, ents(1, 3)))
    assert engine.path in str(info.value)
    assert store.last_index() == 0 and not [d for d in dump(engine) if d[0] == b"log"]
    assert gc.failed_txns == 1 and gc.txns == 0
    gc.close()


def test_loop_runs_while_a_commit_is_in_progress(store, committer):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    def big_batch(txn):
        before = ticks
        store.save(txn, ents(1, 5001, size=256))
        time.sleep(0.02)  # stands in for a slow sync: the GIL is released
        return ticks - before

    async def main():
        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        before = ticks
        advanced_in_fn = await committer.submit(big_batch)
        task.cancel()
        return advanced_in_fn, ticks - before

    advanced_in_fn, advanced = asyncio.run(main())
    assert advanced_in_fn > 0 and advanced > 0
    assert store.last_index() == 5000


def test_close_drains_and_refuses(engine):
    gc = GroupCommitter(engine)
    db = engine.db("test")
    gate = threading.Event()
    results = []

    def put(i):
        results.append(gc.run_sync(lambda txn: txn.put(b"%d" % i, b"v", db=db) and i))

    started = threading.Event()
    blocker = lambda txn: started.set() or gate.wait(10)  # noqa: E731
    threads = [threading.Thread(target=gc.run_sync, args=(blocker,))]
    threads[0].start()
    assert started.wait(10)  # the storage thread is inside the blocker's round
    threads += [threading.Thread(target=put, args=(i,)) for i in range(1, 4)]
    for thread in threads[1:]:
        thread.start()
    while len(gc._queue) < 3:
        time.sleep(0.001)
    threading.Timer(0.01, gate.set).start()
    gc.close()  # returns only once the in-flight round and the queued one are committed
    gc.close()  # idempotent
    assert gc.fns == 4
    for thread in threads:
        thread.join(10)
    assert sorted(results) == [1, 2, 3]
    with engine.env.begin(db=db) as txn:
        assert [k for k, _ in txn.cursor()] == [b"1", b"2", b"3"]
    with pytest.raises(CommitterClosedError):
        gc.run_sync(lambda txn: None)
    with pytest.raises(CommitterClosedError):
        asyncio.run(gc.submit(lambda txn: None))
    assert gc.stats()["fns"] == 4


def test_cancelled_submitter_does_not_break_the_round(store, committer):
    gate = threading.Event()

    async def main():
        blocker = asyncio.ensure_future(committer.submit(lambda txn: gate.wait(10)))
        await asyncio.sleep(0.01)
        doomed = asyncio.ensure_future(committer.submit(lambda txn: store.save(txn, ents(1, 2))))
        kept = asyncio.ensure_future(committer.submit(lambda txn: store.save(txn, ents(2, 3))))
        await asyncio.sleep(0)
        doomed.cancel()
        gate.set()
        await blocker
        await kept
        return doomed.cancelled()

    assert asyncio.run(main())
    assert store.last_index() == 2  # a cancelled submitter's fn may still be stored


def test_map_full_in_one_fn_spares_the_others(tmp_path):
    engine = Engine(tmp_path / "small", map_size_bytes=1 << 20)
    store = LogStore(engine, entry_bytes_max=1 << 20)
    gc = GroupCommitter(engine)
    gate = threading.Event()

    async def main():
        blocker = asyncio.ensure_future(gc.submit(lambda txn: gate.wait(10)))
        await asyncio.sleep(0.01)
        too_big = [Entry(1, i, EntryType.NORMAL, b"x" * 4000) for i in range(1, 1001)]
        bad = asyncio.ensure_future(gc.submit(lambda txn: store.save(txn, too_big)))
        good = asyncio.ensure_future(gc.submit(lambda txn: store.save(txn, ents(1, 3)) and 1))
        await asyncio.sleep(0)
        gate.set()
        await blocker
        return await asyncio.gather(bad, good, return_exceptions=True)

    try:
        bad, good = asyncio.run(main())
    finally:
        gc.close()
    assert isinstance(bad, lmdb.MapFullError) and good == 1
    assert store.last_index() == 2 and store.entries(1, 3) == ents(1, 3)
    engine.close()


def test_lazy_round_shares_its_sync_with_the_next_submission(engine):
    """A round of only lazy functions waits (up to lazy_wait_s) for company: the next
    submission joins the same txn, so both pay one sync."""
    c = GroupCommitter(engine)
    c.lazy_wait_s = 5.0
    db = engine.db("log")
    try:
        async def main():
            lazy = c.submit_nowait(lambda txn: txn.put(b"a", b"1", db=db), lazy=True)
            await asyncio.sleep(0.05)
            assert not lazy.done()  # lingering, not committed yet
            eager = c.submit_nowait(lambda txn: txn.put(b"b", b"2", db=db))
            await asyncio.wait_for(asyncio.gather(lazy, eager), 5.0)
        before = c.txns
        asyncio.run(main())
        assert c.txns - before == 1
        assert list(c.batch_sizes)[-1] == 2
    finally:
        c.close()


def test_kick_commits_a_lingering_lazy_round(engine):
    c = GroupCommitter(engine)
    c.lazy_wait_s = 30.0
    db = engine.db("log")
    try:
        async def main():
            lazy = c.submit_nowait(lambda txn: txn.put(b"k", b"v", db=db), lazy=True)
            await asyncio.sleep(0.05)
            c.kick()
            await asyncio.wait_for(lazy, 5.0)
        asyncio.run(main())
        with engine.env.begin() as txn:
            assert txn.get(b"k", db=db) == b"v"
    finally:
        c.close()


def test_a_lingering_round_is_lent_to_an_inline_submitter(engine):
    """With lend on, an inline submission joins the lingering round in the caller's thread
    (no hand-off) and still resolves only when that round commits; both writes share it."""
    c = GroupCommitter(engine)
    c.lend = True
    c.lazy_wait_s = 0.3
    db = engine.db("log")
    ran_in = []
    try:
        async def main():
            first = c.submit_nowait(lambda txn: txn.put(b"a", b"1", db=db), lazy=True)
            await asyncio.sleep(0.05)  # the storage thread ran it and lingers now

            def fn(txn):
                ran_in.append(threading.get_ident())
                txn.put(b"b", b"2", db=db)
                return "done"
            second = c.submit_nowait(fn, lazy=True, inline=True)
            assert ran_in == [threading.get_ident()]  # ran here, before submit_nowait returned
            assert not second.done()
            with engine.env.begin() as txn:
                assert txn.get(b"b", db=db) is None  # not committed yet
            return await asyncio.wait_for(asyncio.gather(first, second), 5.0)
        before = c.txns
        assert asyncio.run(main())[1] == "done"
        assert c.txns - before == 1 and c.lent_fns == 1
        with engine.env.begin() as txn:
            assert txn.get(b"b", db=db) == b"2"
    finally:
        c.close()


def test_inline_submission_queues_when_no_round_lingers_or_work_is_queued(engine):
    """Without a lingering round (lend off, or nothing open) an inline submission runs in
    the storage thread; a failing lent function fails only its own submitter."""
    c = GroupCommitter(engine)
    db = engine.db("log")
    threads = []
    try:
        async def main():
            fut = c.submit_nowait(lambda txn: threads.append(threading.get_ident()),
                                  inline=True)
            await asyncio.wait_for(fut, 5.0)
            c.lend, c.lazy_wait_s = True, 0.3
            first = c.submit_nowait(lambda txn: txn.put(b"x", b"1", db=db), lazy=True)
            await asyncio.sleep(0.05)

            def boom(txn):
                txn.put(b"y", b"1", db=db)
                raise ValueError("boom")
            bad = c.submit_nowait(boom, lazy=True, inline=True)
            await asyncio.wait_for(first, 5.0)
            with pytest.raises(ValueError):
                await asyncio.wait_for(bad, 5.0)
        asyncio.run(main())
        assert threads and threads[0] != threading.get_ident()
        assert c.lent_fns == 0 and c.failed_fns == 1  # lent_fns counts committed ones only
        with engine.env.begin() as txn:
            assert txn.get(b"x", db=db) == b"1" and txn.get(b"y", db=db) is None
    finally:
        c.close()


def test_an_eager_inline_submission_commits_the_round_at_once(engine):
    c = GroupCommitter(engine)
    c.lend, c.lazy_wait_s = True, 30.0
    db = engine.db("log")
    try:
        async def main():
            lazy = c.submit_nowait(lambda txn: txn.put(b"a", b"1", db=db), lazy=True)
            await asyncio.sleep(0.05)
            eager = c.submit_nowait(lambda txn: txn.put(b"b", b"1", db=db), inline=True)
            await asyncio.wait_for(asyncio.gather(lazy, eager), 5.0)  # not after 30 s
        asyncio.run(main())
        assert c.lent_fns == 1
    finally:
        c.close()
