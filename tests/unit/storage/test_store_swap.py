"""What the online defrag builds on: GroupCommitter.pause()/resume() (the open round commits,
then nothing runs until resume, queued functions keep their order), StoreGate (worker threads
wait while the gate is held; the holder waits for every running worker thread, also one whose
caller was cancelled) and Engine.reopen (new sub-db handles for every holder, a failure in
between reopens the old file)."""
import asyncio
import os
import threading
import time

import pytest

from raftkv.mvcc.kvstore import KVStore
from raftkv.storage.engine import DATA_FILE, Engine
from raftkv.storage.gate import StoreGate
from raftkv.storage.group_commit import GroupCommitter

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def engine(tmp_path):
    eng = Engine(str(tmp_path / "d"))
    eng.db("t")  # opened (created) before any write txn: opening one needs a txn of its own
    yield eng
    eng.close()


def _put(eng, key, value=b"v"):
    return lambda txn: txn.put(key, value, db=eng.db("t"))


def _get(eng, key):
    with eng.env.begin() as txn:
        return txn.get(key, db=eng.db("t"))


def test_pause_commits_the_lingering_round_and_holds_later_work(engine):
    c = GroupCommitter(engine)
    c.lazy_wait_s = 30.0  # a lazy round would linger until its deadline: pause ends it
    c.lend = True

    async def run():
        first = c.submit_nowait(_put(engine, b"a"), lazy=True)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await c.pause()
        assert time.monotonic() - started < 5 and c.paused
        await first  # committed before the thread parked
        later = [c.submit_nowait(_put(engine, b"b", b"%d" % i), inline=True) for i in range(3)]
        await asyncio.sleep(0.1)
        assert not any(f.done() for f in later)  # queued, none lent: no round is open
        assert _get(engine, b"b") is None
        c.resume()
        await asyncio.gather(*later)
        assert _get(engine, b"b") == b"2"  # in the order they were submitted
        assert not c.paused

    try:
        asyncio.run(run())
    finally:
        c.close()
    assert _get(engine, b"a") == b"v"


def test_the_gate_holds_off_workers_and_waits_for_running_ones(engine):
    gate = StoreGate()
    inside, leave = threading.Event(), threading.Event()

    def slow():
        inside.set()
        assert leave.wait(10)
        return "slow"

    async def run():
        worker = asyncio.create_task(gate.run(slow))
        while not inside.is_set():
            await asyncio.sleep(0.005)
        worker.cancel()  # the caller goes away; its thread still runs
        with pytest.raises(asyncio.CancelledError):
            await worker
        held = asyncio.Event()

        async def hold():
            async with gate.exclusive():
                held.set()
                await asyncio.sleep(0.1)

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0.1)
        assert not held.is_set() and gate.running == 1  # waits for the thread itself
        later = asyncio.create_task(gate.run(lambda: "later"))
        leave.set()
        await asyncio.wait_for(held.wait(), 5)
        assert not later.done()  # a worker asked for meanwhile waits for the holder
        await holder
        assert await later == "later" and gate.running == 0

    asyncio.run(run())


def test_reopen_gives_holders_new_handles_and_survives_a_failed_swap(engine, tmp_path):
    kv = KVStore(engine)
    c = GroupCommitter(engine)
    try:
        c.run_sync(lambda txn: kv.apply(txn, 1, [("put", {"key": b"k", "value": b"1"})]))
        kv.committed()
        old_kv = kv._kv
        ino = os.stat(os.path.join(engine.path, DATA_FILE)).st_ino

        def fail():
            raise OSError("between failed")
        with pytest.raises(OSError, match="between failed"):
            engine.reopen(between=fail)
        assert kv._kv is not old_kv  # a new handle, on the reopened (same) file
        assert os.stat(os.path.join(engine.path, DATA_FILE)).st_ino == ino
        assert kv.range({"key": b"k"})["kvs"][0]["value"] == b"1"

        copy = str(tmp_path / "copy")
        os.mkdir(copy)
        engine.env.copy(copy, compact=True)
        engine.reopen(between=lambda: os.rename(os.path.join(copy, DATA_FILE),
                                                os.path.join(engine.path, DATA_FILE)))
        assert os.stat(os.path.join(engine.path, DATA_FILE)).st_ino != ino
        assert kv.range({"key": b"k"})["kvs"][0]["value"] == b"1"
        c.run_sync(lambda txn: kv.apply(txn, 2, [("put", {"key": b"k", "value": b"2"})]))
        kv.committed()  # the committer's round used the new environment
        assert kv.range({"key": b"k"})["kvs"][0]["value"] == b"2"
    finally:
        c.close()
