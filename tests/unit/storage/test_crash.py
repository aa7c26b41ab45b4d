"""Crash test: SIGKILL a writer at random moments; every acknowledged entry must survive intact.

A child process appends batches through GroupCommitter + LogStore (up to 4 submits in flight,
so rounds coalesce), each batch with its hard state (commit = the batch's last index) and now
and then a compaction, and prints "ACK <last index>" after each append is returned as durable.
The parent kills it by PID at a random moment, many times over the same data dir, and checks
after each kill that:
  - the store opens (full CRC verify) and holds every acknowledged entry, byte for byte;
  - the log ends on a batch boundary (each batch all-or-nothing) and is the exact prefix that
    was attempted (entry contents are a function of the index);
  - the hard state was written atomically with its batch (commit == last index).

SIGKILL tests process-crash atomicity; power loss (unsynced page cache) needs a VM/dm-flakey.
Seed: RAFTKV_CRASH_SEED=<n> replays a failing run (the seed is in every assertion message).
"""
import os
import pathlib
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from raftkv.raft.types import Entry, EntryType
from raftkv.storage.engine import Engine
from raftkv.storage.logstore import LogStore

ROOT = pathlib.Path(__file__).resolve().parents[3]
ITERATIONS = 20
TIME_BUDGET_SECONDS = 20.0  # the loop stops early (after at least 5 kills) past this
KEEP_ENTRIES = 1000  # the child compacts to about this many entries behind its last index

CHILD = r'''
import asyncio, collections, sys
from raftkv.raft.errors import CompactedError
from raftkv.raft.types import Entry, HardState
from raftkv.storage.engine import Engine
from raftkv.storage.group_commit import GroupCommitter
from raftkv.storage.logstore import LogStore
from tests.unit.storage.test_crash import KEEP_ENTRIES, batch_len, expected_entry


def append(store, batch):
    last = batch[-1].index
    def fn(txn):
        store.save(txn, batch, HardState(batch[-1].term, 1, last))
        if last // 200 != (batch[0].index - 1) // 200 and last > KEEP_ENTRIES:
            try:
                store.compact(txn, last - KEEP_ENTRIES)
            except CompactedError:
                pass
        return last
    return fn


async def main():
    engine = Engine(sys.argv[1])
    store = LogStore(engine)
    committer = GroupCommitter(engine)
    nxt = store.last_index() + 1
    print("READY", store.last_index(), flush=True)
    inflight = collections.deque()
    while True:
        batch = [expected_entry(i) for i in range(nxt, nxt + batch_len(nxt))]
        nxt += len(batch)
        inflight.append(asyncio.ensure_future(committer.submit(append(store, batch))))
        while len(inflight) >= 4:
            print("ACK", await inflight.popleft(), flush=True)

asyncio.run(main())
'''


def batch_len(start):
    """Batch sizes are a function of the batch's first index, so the parent can replay them."""
    return 1 + (start * 7919) % 37


def expected_entry(index):
    return Entry(1 + index // 500, index, EntryType.NORMAL, b"%08d" % index * (1 + index % 13))


def batch_ends(last):
    ends = {0}
    start = 1
    while start <= last:
        start += batch_len(start)
        ends.add(start - 1)
    return ends


def _reader(stream, lines):
    for line in stream:
        if line.endswith(b"\n"):  # a line cut short by the kill is not an acknowledgement
            lines.put(line.decode().split())
    lines.put(None)


def run_child_and_kill(script, data_dir, rng):
    """Start the writer, kill it at a random moment; return the acknowledged last indexes."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script), str(data_dir)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE)
    lines = queue.Queue()
    reader = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
    reader.start()
    acks = []
    try:
        if rng.random() < 0.15:  # sometimes while it is starting up and recovering
            time.sleep(rng.uniform(0, 0.15))
        else:
            deadline = time.monotonic() + 30
            while True:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
                if line is None or line[0] == "READY":
                    break
            time.sleep(rng.uniform(0, 0.4))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(10)
    while not lines.empty():
        line = lines.get_nowait()
        if line is not None and line[0] == "ACK":
            acks.append(int(line[1]))
    return acks


def check_store(data_dir, acked_max, context):
    with Engine(data_dir) as engine:
        store = LogStore(engine, verify_all=True)
        first, last = store.first_index(), store.last_index()
        assert last >= acked_max, f"{context}: acknowledged {acked_max} but the log ends at {last}"
        assert last in batch_ends(last), f"{context}: log ends at {last}, inside a batch"
        assert store.initial_state()[0].commit == last, f"{context}: hard state not atomic"
        if last:
            point_term = expected_entry(first - 1).term if first > 1 else 0
            assert store.term(first - 1) == point_term, context
            assert store.entries(first, last + 1) == [expected_entry(i) for i in
                                                      range(first, last + 1)], context
        return last


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_entries(tmp_path):
    seed = int(os.environ.get("RAFTKV_CRASH_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    script = tmp_path / "writer.py"
    script.write_text(CHILD)
    data_dir = tmp_path / "data"
    acked_max = 0
    last = 0
    started = time.monotonic()
    for iteration in range(ITERATIONS):
        acks = run_child_and_kill(script, data_dir, rng)
        context = f"seed {seed}, iteration {iteration}"
        assert acks == sorted(acks), context
        acked_max = max([acked_max] + acks)
        if data_dir.exists():
            previous, last = last, check_store(data_dir, acked_max, context)
            assert last >= previous, f"{context}: log went back from {previous} to {last}"
        if iteration >= 4 and time.monotonic() - started > TIME_BUDGET_SECONDS:
            break
    assert acked_max > 0, f"seed {seed}: the writer never acknowledged anything"
