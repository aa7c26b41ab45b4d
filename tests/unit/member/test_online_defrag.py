"""Member.defragment (Maintenance.Defragment on a running member): data.mdb is swapped for a
compacted copy while the member's storage stays open; writes wait for it, reads go on; the
store serves the same data from the smaller file afterwards. Each failure (a copy that
differs, an I/O error, another process holding the environment open) is answered
DEFRAG_FAILED and leaves the member serving from its old file, writes included."""
import asyncio
import errno
import os
import shutil
import subprocess
import sys
import threading
import time

import lmdb
import pytest

from raftkv.errors import RaftkvError
from raftkv.mvcc import defrag as mvcc_defrag, snapshot
from raftkv.server.config import load_config
from raftkv.server import member as member_module
from raftkv.server.member import Member
from raftkv.storage.engine import DATA_FILE, DEFRAG_SCRATCH, DEFRAG_SET_ASIDE
from raftkv.storage.group_commit import after_commit

pytestmark = pytest.mark.timeout(120)

KEYS = 800
VALUE_BYTES = 2000
BATCH = 100


def _member(data_dir):
    m = Member(load_config(["--name", "m1", "--data-dir", str(data_dir)], environ={}))
    m.open_storage()
    m._index = m.kv.applied_index
    return m


def _apply(m, requests):
    """One committed entry's requests through the member's storage thread."""
    m._index += 1
    index = m._index

    def fn(txn):
        out = m.kv.apply(txn, index, requests)
        after_commit(txn, m.kv.committed)
        return out
    return fn


def _fill(m):
    """KEYS keys, nine in ten deleted, all compacted: most of data.mdb's pages are free."""
    for start in range(0, KEYS, BATCH):
        m.committer.run_sync(_apply(m, [("put", {"key": b"k%05d" % i,
                                                 "value": bytes([i % 251]) * VALUE_BYTES})
                                        for i in range(start, start + BATCH)]))
    m.committer.run_sync(_apply(m, [("delete_range", {"key": b"k%05d" % i, "range_end": b""})
                                    for i in range(KEYS) if i % 10]))
    m.committer.run_sync(_apply(m, [("compact", {"revision": m.kv.current_revision,
                                                 "physical": True})]))
    assert not m.kv.compaction_pending


def _state(m):
    return {"kvs": m.kv.range({"key": b"\0", "range_end": b"\0"})["kvs"],
            "hash_kv": snapshot.etcd_hash_kv(m.kv), "revision": m.kv.current_revision}


def _file(m):
    st = os.stat(os.path.join(m.cfg.data_dir, DATA_FILE))
    return st.st_ino, st.st_size


@pytest.fixture
def member(tmp_path):
    m = _member(tmp_path / "d")
    _fill(m)
    yield m
    m.close_storage()


def test_defragment_shrinks_the_file_while_writes_wait_and_reads_go_on(member, monkeypatch):
    m = member
    want = _state(m)
    before = _file(m)
    copying, release = threading.Event(), threading.Event()
    copy = mvcc_defrag.copy_compacted

    def slow_copy(engine, path):  # hold the defrag in its copy: what waits, what goes on?
        copying.set()
        assert release.wait(30)
        return copy(engine, path)
    monkeypatch.setattr(mvcc_defrag, "copy_compacted", slow_copy)

    async def run():
        defrag = asyncio.create_task(m.defragment())
        while not copying.is_set():
            await asyncio.sleep(0.005)
        write = m.committer.submit_nowait(_apply(m, [("put", {"key": b"during",
                                                              "value": b"x"})]), inline=True)
        await asyncio.sleep(0.2)
        assert not write.done()  # the storage thread is parked: the write waits
        assert m.kv.range({"key": b"k00000"})["kvs"]  # a read goes on, from the old file
        gated = asyncio.create_task(m.engine.gate.run(snapshot.etcd_hash_kv, m.kv))
        await asyncio.sleep(0.05)
        assert not gated.done()  # worker threads are held off until the swap is done
        release.set()
        info = await defrag
        await write
        assert (await gated)[1] >= want["revision"]  # it ran, on the new file
        return info

    info = asyncio.run(run())
    after = _file(m)
    assert after[0] != before[0]  # a new file: the compacted copy, plus the write's pages
    assert info["size_after"] <= after[1] < before[1] / 4
    assert info["size_before"] == before[1] and info["revision"] == want["revision"]
    assert DEFRAG_SCRATCH not in os.listdir(m.cfg.data_dir)
    assert m.kv.range({"key": b"during"})["kvs"][0]["value"] == b"x"
    assert m.kv.backend_bytes() <= after[1]
    # Everything but the write made during the defrag is as it was, in the new file.
    m.committer.run_sync(_apply(m, [("delete_range", {"key": b"during", "range_end": b""})]))
    assert _state(m)["kvs"] == want["kvs"]
    m.committer.run_sync(_apply(m, [("put", {"key": b"after", "value": b"y"})]))
    assert m.kv.range({"key": b"after"})["kvs"][0]["value"] == b"y"


def _wait_no_scratch(m, timeout_s=10.0):
    """Until no scratch dir, set aside or not, is left in m's data dir (its removal runs in a
    thread of its own)."""
    deadline = time.monotonic() + timeout_s
    while any(n.startswith(DEFRAG_SCRATCH) for n in os.listdir(m.cfg.data_dir)):
        assert time.monotonic() < deadline, os.listdir(m.cfg.data_dir)
        time.sleep(0.01)


def _refused(m, match):
    """defragment fails with DEFRAG_FAILED, and the member goes on with the old file."""
    want, before = _state(m), _file(m)
    with pytest.raises(RaftkvError, match=match) as err:
        asyncio.run(m.defragment())
    assert err.value.code == "DEFRAG_FAILED"
    assert _file(m) == before
    assert DEFRAG_SCRATCH not in os.listdir(m.cfg.data_dir)
    _wait_no_scratch(m)  # the failed copy, set aside, is removed too (by a thread)
    assert _state(m) == want
    assert not m.committer.paused and not m.engine.gate.closed
    m.committer.run_sync(_apply(m, [("put", {"key": b"after", "value": b"y"})]))
    assert m.kv.range({"key": b"after"})["kvs"][0]["value"] == b"y"


def test_a_copy_that_differs_is_refused_and_the_old_file_stays(member, monkeypatch):
    keep = mvcc_defrag._keep_mode_and_owner

    def tamper(copy, st):  # a record the store does not have, written into the copy
        env = lmdb.open(copy, subdir=False, lock=False, max_dbs=16)
        with env.begin(db=env.open_db(b"kv"), write=True) as txn:
            txn.put(b"\xff" * 17, b"bogus")
        env.close()
        keep(copy, st)

    monkeypatch.setattr(mvcc_defrag, "_keep_mode_and_owner", tamper)
    _refused(member, r"defragment failed: the compacted copy .* differs .*sub-database 'kv'")


def test_an_io_error_while_copying_is_refused_and_the_old_file_stays(member, monkeypatch):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(mvcc_defrag, "fsync_dir", full)
    _refused(member, "defragment failed: .*No space left on device")


def test_another_process_with_the_store_open_is_refused_at_the_swap(member):
    """The check comes once the member has closed its environment; it reopens the old file."""
    code = ("import lmdb, sys\n"
            f"env = lmdb.open({member.cfg.data_dir!r}, readonly=True, max_dbs=16)\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "open\n"
        _refused(member, "defragment failed: .*open in another process")
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    info = asyncio.run(member.defragment())  # once it is gone
    assert info["size_after"] < info["size_before"] / 4


def test_swap_in_keeps_the_replaced_file_linked_in_the_scratch_dir(tmp_path):
    """The rename over data.mdb would free the old file's blocks (a few tenths of a second for
    a GB) while the member's writes wait: swap_in keeps it under the scratch dir instead."""
    scratch = tmp_path / DEFRAG_SCRATCH
    scratch.mkdir()
    (tmp_path / DATA_FILE).write_bytes(b"old" * 1000)
    (scratch / DATA_FILE).write_bytes(b"new" * 10)
    old_inode = os.stat(tmp_path / DATA_FILE).st_ino
    mvcc_defrag.swap_in(str(tmp_path), str(scratch / DATA_FILE))
    assert (tmp_path / DATA_FILE).read_bytes() == b"new" * 10
    assert os.stat(scratch / mvcc_defrag.REPLACED_FILE).st_ino == old_inode
    assert not (scratch / DATA_FILE).exists()


def test_the_replaced_file_is_freed_after_writes_resume(member, monkeypatch):
    """The scratch dir, with the replaced file in it, is set aside under its own name before
    the committer resumes and removed by a thread afterwards; nothing of it remains."""
    m = member
    removals = []
    rmtree = shutil.rmtree

    def recording_rmtree(path, *args, **kw):
        removals.append((os.path.basename(path), m.committer.paused,
                         os.path.exists(os.path.join(path, mvcc_defrag.REPLACED_FILE))))
        return rmtree(path, *args, **kw)
    monkeypatch.setattr(member_module.shutil, "rmtree", recording_rmtree)

    asyncio.run(m.defragment())
    _wait_no_scratch(m)
    [(name, paused, had_replaced)] = removals
    assert name.startswith(DEFRAG_SET_ASIDE) and not paused and had_replaced
    assert not any(n.startswith(DEFRAG_SCRATCH) for n in os.listdir(m.cfg.data_dir))


def test_a_set_aside_scratch_left_by_a_stop_is_removed_at_start(tmp_path):
    m = _member(tmp_path / "d")
    m.close_storage()
    aside = tmp_path / "d" / f"{DEFRAG_SET_ASIDE}123-abcd"
    aside.mkdir()
    (aside / mvcc_defrag.REPLACED_FILE).write_bytes(b"x" * 100)
    m = _member(tmp_path / "d")
    try:
        assert not aside.exists()
    finally:
        m.close_storage()
