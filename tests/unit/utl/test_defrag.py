"""raftkv/utl/defrag.py, raftkvutl defrag and raftkvctl defrag --data-dir: a store whose keys
were put, deleted and compacted shrinks to its live pages and reopens with the same data,
revision and HashKV; every refusal (a missing dir, not a raftkv data dir, a running member, the
environment open elsewhere, a copy that differs) leaves the live file as it was; a defrag
killed before its rename leaves the old file whole and a scratch dir the next one removes."""
import io
import json
import os
import signal
import subprocess
import sys

import lmdb
import pytest

from raftkv.cli import ctl
from raftkv.cli.ctl_format import human_bytes
from raftkv.mvcc import defrag as mvcc_defrag, snapshot
from raftkv.storage.dirlock import DirInUseError, DirLock
from raftkv.storage.engine import DATA_FILE, DEFRAG_SCRATCH, DataDirError
from raftkv.utl import defrag as defrag_mod, main as utl_main
from tests.unit.mvcc.helpers import Harness

KEYS = 1500
VALUE_BYTES = 2000
BATCH = 100


def fill(path):
    """A store of KEYS keys of VALUE_BYTES, nine in ten deleted, a lease with a key, everything
    compacted (physically): most of the file's pages are free. Returns what must survive a
    defrag: revisions, HashKV, the live keys and the lease."""
    h = Harness(path)
    try:
        h.one("lease_grant", {"ID": 7, "TTL": 600})
        h.put(b"leased", b"x", lease=7)
        for start in range(0, KEYS, BATCH):  # one entry (one LMDB commit) per BATCH requests
            h.apply([("put", {"key": b"k%05d" % i, "value": bytes([i % 251]) * VALUE_BYTES})
                     for i in range(start, start + BATCH)])
        for start in range(0, KEYS, BATCH):
            h.apply([("delete_range", {"key": b"k%05d" % i, "range_end": b""})
                     for i in range(start, start + BATCH) if i % 10])
        h.one("compact", {"revision": h.store.current_revision, "physical": True})
        assert not h.store.compaction_pending
        return state_of(h)
    finally:
        h.close()


def state_of(h):
    return {"revision": h.store.current_revision, "compact": h.store.compact_revision,
            "hash_kv": snapshot.etcd_hash_kv(h.store), "hash": snapshot.etcd_hash(h.store),
            "kvs": h.get(b"\0", b"\0")["kvs"], "leases": sorted(h.store.lease_ids())}


def file_id(path):
    st = os.stat(os.path.join(path, DATA_FILE))
    with open(os.path.join(path, DATA_FILE), "rb") as f:
        return st.st_ino, st.st_size, f.read()


def test_defrag_shrinks_the_file_and_keeps_the_store(tmp_path):
    path = str(tmp_path / "m.raftkv")
    want = fill(path)
    assert len(want["kvs"]) == KEYS // 10 + 1 and want["leases"] == [7]
    size = os.path.getsize(os.path.join(path, DATA_FILE))
    assert size > KEYS * VALUE_BYTES  # the high-water mark: every value once held
    mode = os.stat(os.path.join(path, DATA_FILE)).st_mode
    info = defrag_mod.defrag(path)
    after = os.path.getsize(os.path.join(path, DATA_FILE))
    assert info["size_before"] == size and info["size_after"] == after
    assert after < size / 4, (size, after)
    assert (info["revision"], info["compact_revision"]) == (want["revision"], want["compact"])
    assert os.stat(os.path.join(path, DATA_FILE)).st_mode == mode
    assert DEFRAG_SCRATCH not in os.listdir(path)
    h = Harness(path)
    try:
        assert state_of(h) == want
        h.put(b"new", b"v")  # and it takes writes
        assert h.get(b"new")["kvs"][0]["mod_revision"] == want["revision"] + 1
    finally:
        h.close()
    again = defrag_mod.defrag(path)  # a second defrag finds nothing more to give back
    assert again["size_after"] <= again["size_before"]


def test_refusals_change_nothing(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(DataDirError, match="data dir does not exist"):
        defrag_mod.defrag(missing)
    assert not missing.exists()  # not created by the lock
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataDirError, match=r"not a raftkv data dir \(no data.mdb\)"):
        defrag_mod.defrag(empty)
    assert os.listdir(empty) == []
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(DataDirError, match="not a raftkv data dir"):
        defrag_mod.defrag(other)
    plain = tmp_path / "plain-lmdb"  # an LMDB environment raftkv did not write
    env = lmdb.open(str(plain), max_dbs=2)
    with env.begin(write=True) as txn:
        txn.put(b"a", b"b")
    env.close()
    before = file_id(plain)
    with pytest.raises(DataDirError, match="no format marker"):
        defrag_mod.defrag(plain)
    assert file_id(plain) == before


def test_a_running_members_data_dir_is_refused(tmp_path):
    path = str(tmp_path / "m.raftkv")
    fill(path)
    before = file_id(path)
    member = DirLock(path, "data dir")  # what a running member holds
    member.record_pid()
    try:
        with pytest.raises(DirInUseError) as err:
            defrag_mod.defrag(path)
    finally:
        member.release()
    msg = str(err.value)
    assert f"the data dir is in use by another process (PID {os.getpid()})" in msg, msg
    assert "stop the member first" in msg, msg
    assert file_id(path) == before
    assert DEFRAG_SCRATCH not in os.listdir(path)


def _holder(code, path):
    """A child process running code (path bound), which prints "held" once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", f"path = {path!r}\n{code}\n"
                             "print('held', flush=True)\nimport time; time.sleep(60)"],
                            stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"held\n"
    return proc


def test_an_environment_open_in_another_process_is_refused(tmp_path):
    """A process that opened the store without the data dir's lock (a tool reading it) keeps
    the old file's state in lock.mdb: the file is not swapped under it."""
    path = str(tmp_path / "m.raftkv")
    fill(path)
    before = file_id(path)
    proc = _holder("from raftkv.storage.engine import Engine; e = Engine(path, readonly=True)",
                   path)
    try:
        with pytest.raises(defrag_mod.DefragError, match="open in another process"):
            defrag_mod.defrag(path)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert file_id(path) == before
    assert defrag_mod.defrag(path)["size_after"] < before[1]  # once it is gone


def test_a_copy_that_differs_is_not_swapped_in(tmp_path, monkeypatch):
    path = str(tmp_path / "m.raftkv")
    fill(path)
    before = file_id(path)
    keep = mvcc_defrag._keep_mode_and_owner

    def tamper(copy, st):  # a record the store does not have, written into the copy
        env = lmdb.open(copy, subdir=False, lock=False, max_dbs=16)
        with env.begin(db=env.open_db(b"kv"), write=True) as txn:
            txn.put(b"\xff" * 17, b"bogus")
        env.close()
        keep(copy, st)

    monkeypatch.setattr(mvcc_defrag, "_keep_mode_and_owner", tamper)
    with pytest.raises(defrag_mod.DefragError, match="sub-database 'kv'.*is unchanged"):
        defrag_mod.defrag(path)
    assert file_id(path) == before
    assert DEFRAG_SCRATCH not in os.listdir(path)


@pytest.mark.parametrize("change", ["value", "dropped", "table"])
def test_any_difference_in_the_copy_is_found_and_named(tmp_path, monkeypatch, change):
    """The record-by-record comparison finds a value changed in place (same length), a
    record missing from the copy and a sub-database the store does not have, and says where."""
    path = str(tmp_path / "m.raftkv")
    fill(path)
    before = file_id(path)
    keep = mvcc_defrag._keep_mode_and_owner

    def tamper(copy, st):
        env = lmdb.open(copy, subdir=False, lock=False, max_dbs=16)
        if change == "table":
            env.open_db(b"zz-extra")
        else:
            with env.begin(db=env.open_db(b"kv"), write=True) as txn:
                cur = txn.cursor()
                cur.next()
                cur.next()  # the second record
                if change == "value":
                    value = cur.value()
                    cur.put(cur.key(), bytes(b ^ 1 for b in value))
                else:
                    cur.delete()
        env.close()
        keep(copy, st)

    monkeypatch.setattr(mvcc_defrag, "_keep_mode_and_owner", tamper)
    want = {"value": "sub-database 'kv', record 1: key .* before, key .* in the copy",
            "dropped": "sub-database 'kv', record 1: key .* before, key .* in the copy",
            "table": r"sub-databases \[.*\] before, \[.*'zz-extra'\] in the copy"}[change]
    with pytest.raises(defrag_mod.DefragError, match=want + ".*is unchanged"):
        defrag_mod.defrag(path)
    assert file_id(path) == before


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_each_file_is_read_ahead_whole_before_it_is_read(tmp_path, monkeypatch):
    """The engine maps stores with readahead off, and LMDB writes the copy past the page
    cache: without a WILLNEED hint over all of a file before its records are read (the
    store's by the compacted copy, the copy's by the comparison), a store that is not cached
    is read one 4 KiB page fault at a time (20-24 s per pass over 1.2 GB)."""
    path = str(tmp_path / "m.raftkv")
    fill(path)
    size = os.path.getsize(os.path.join(path, DATA_FILE))
    events = []
    advise = os.posix_fadvise
    write_copy, compare = mvcc_defrag.write_copy, mvcc_defrag.compare_stores

    def spy_advise(fd, offset, length, advice):
        events.append(("advise", os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice))
        return advise(fd, offset, length, advice)

    def spy_write_copy(engine, copy):
        events.append(("read", os.path.join(engine.path, DATA_FILE)))
        return write_copy(engine, copy)

    def spy_compare(engine, copied):
        events.append(("read", os.path.join(copied.path, DATA_FILE)))
        return compare(engine, copied)

    monkeypatch.setattr(os, "posix_fadvise", spy_advise)
    monkeypatch.setattr(mvcc_defrag, "write_copy", spy_write_copy)
    monkeypatch.setattr(mvcc_defrag, "compare_stores", spy_compare)
    info = defrag_mod.defrag(path)

    def covered_before_read(file):
        """The bytes of file that WILLNEED hints asked for before it is read (chunks)."""
        at = events.index(("read", file))
        hints = [e for e in events[:at] if e[0] == "advise" and e[1] == file]
        assert all(e[4] == os.POSIX_FADV_WILLNEED for e in hints)
        return sorted((e[2], e[2] + e[3]) for e in hints)

    live = os.path.join(path, DATA_FILE)
    copy = os.path.join(path, DEFRAG_SCRATCH, DATA_FILE)
    for file, length in ((live, size), (copy, info["size_after"])):
        spans = covered_before_read(file)
        assert spans and spans[0][0] == 0 and spans[-1][1] >= length, (file, spans[:3])
        assert all(a[1] >= b[0] for a, b in zip(spans, spans[1:]))  # no gap between chunks


def _resident_pages(file):
    """(pages of file in the page cache, pages of file), by mincore(2) on a mapping of it."""
    import ctypes
    import mmap

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(file)
    pages = -(-size // mmap.PAGESIZE)
    with open(file, "rb") as f:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
    try:
        vec = (ctypes.c_ubyte * pages)()
        assert libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
        return sum(v & 1 for v in vec), pages
    finally:
        libc.munmap(addr, size)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore and O_DIRECT: Linux")
def test_the_copy_is_written_through_the_page_cache(tmp_path, monkeypatch):
    """LMDB's own env.copy writes with O_DIRECT: none of the copy would be cached when it is
    checked (every page read back from disk) nor when the member serves from it after the
    swap. The copy is written through the page cache instead: all of it is resident when the
    check begins (a small store; fsynced, clean pages stay cached)."""
    path = str(tmp_path / "m.raftkv")
    fill(path)
    copy = os.path.join(path, DEFRAG_SCRATCH, DATA_FILE)
    seen = []
    read_ahead = mvcc_defrag.read_ahead

    def spy(file):
        if file == copy:
            seen.append(_resident_pages(file))  # before the hint: what the write left cached
        return read_ahead(file)

    monkeypatch.setattr(mvcc_defrag, "read_ahead", spy)
    info = defrag_mod.defrag(path)
    [(resident, pages)] = seen
    assert pages * 4096 >= info["size_after"] > 0
    assert resident == pages, (resident, pages)


def test_a_defrag_killed_before_its_rename_leaves_the_old_file(tmp_path):
    """The process dies (os._exit) where it would rename the verified copy: the old file is
    whole, the scratch dir holds the copy; the next defrag removes it and does the work."""
    path = str(tmp_path / "m.raftkv")
    want = fill(path)
    before = file_id(path)
    code = ("import os; from raftkv.utl import defrag\n"
            "os.rename = lambda *a: os._exit(9)\n"
            f"defrag.defrag({path!r})")
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 9
    assert file_id(path) == before
    assert os.path.getsize(os.path.join(path, DEFRAG_SCRATCH, DATA_FILE)) < before[1]
    h = Harness(path)  # the store opens as it was
    try:
        assert state_of(h) == want
    finally:
        h.close()
    info = defrag_mod.defrag(path)
    assert DEFRAG_SCRATCH not in os.listdir(path)
    assert info["revision"] == want["revision"]


def test_raftkvutl_and_raftkvctl_forms(tmp_path, capsys):
    """raftkvutl defrag --data-dir and raftkvctl defrag --data-dir (no endpoint contacted: the
    one given does not listen), their output, and etcdctl's failure line with exit 1."""
    path = str(tmp_path / "m.raftkv")
    fill(path)
    size = os.path.getsize(os.path.join(path, DATA_FILE))
    out = io.StringIO()
    assert utl_main.main(["defrag", "--data-dir", path], out=out) == 0
    after = os.path.getsize(os.path.join(path, DATA_FILE))
    assert out.getvalue() == (f"Finished defragmenting etcd data[{path}]: data.mdb "
                              f"{human_bytes(size)} -> {human_bytes(after)} ({size} -> "
                              f"{after} bytes)\n")
    out = io.StringIO()
    assert ctl.main(["--endpoints", "127.0.0.1:1", "defrag", "--data-dir", path, "-w", "json"],
                    out=out) == 0
    info = json.loads(out.getvalue())
    assert (info["size_before"], info["size_after"]) == (after, after)
    capsys.readouterr()
    missing = str(tmp_path / "nope")
    assert ctl.main(["--endpoints", "127.0.0.1:1", "defrag", "--data-dir", missing]) == 1
    assert capsys.readouterr().err == (f"Failed to defragment etcd data[{missing}] "
                                       f"({missing}: data dir does not exist)\n")
    assert utl_main.main(["defrag", "--data-dir", missing]) == 1
    assert "Failed to defragment etcd data[" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "raftkv.utl.main", "defrag"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--data-dir" in proc.stderr  # raftkvutl's is required
