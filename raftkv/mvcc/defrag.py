"""The compacted, verified copy of a store that both defrags swap in: the offline one of a
stopped member (raftkv/utl/defrag.py, `raftkvutl defrag --data-dir`) and the online one of a
running member (Maintenance.Defragment, raftkv/server/member.py `Member.defragment`).

LMDB reuses the pages that deletes and compactions free, but never gives them back to the file
system: DATA_DIR/data.mdb stays at its high-water mark. copy_compacted() writes the store
without them and checks the copy; swap_in() puts it in place:

1. a compacted copy (LMDB's mdb_env_copyfd2 with MDB_CP_COMPACT: the live pages only,
   renumbered) is written into DATA_DIR/defrag.tmp/ and fsynced, with the old file's mode and
   owner. Through the page cache (write_copy), not with the O_DIRECT of LMDB's own
   mdb_env_copy2, so the check below and the member after the swap read it from memory;
2. the copy is opened read-only and compared with the store record by record: every
   sub-database, in key order, keys and values byte for byte, both read in one pass
   (compare_stores). Anything read from the store (its revisions, etcd's HashKV) is a
   function of those records, so nothing more is compared. An online defrag holds the
   member's writes for all of it, so it is kept cheap: a second HashKV on each side cost 3x
   the rest of a defrag, and a BLAKE2b digest of each side, computed in two scans, 70 % of it
   at 1.2 GB (bench/README.md); the comparison in one pass costs a sixth of the two digests.
   The whole store file is asked for with a read-ahead hint (read_ahead) before the copy
   reads it, and the copy before it is compared: the engine maps stores with readahead off,
   so reading pages not in the cache would fault them in one 4 KiB page at a time (a 1.2 GB
   store: 20-24 s per pass, 1.6-2.6 s with the hint);
3. swap_in: the copy is renamed over data.mdb, and the data dir fsynced.

Nothing may write to the store from step 1 until the rename (the caller's duty: offline no
process has it open; online the member's storage thread is parked and its worker threads shut
out). A crash before the rename leaves the old file, after it the new one: whole either way.
The scratch dir a crash leaves is removed by the next defrag or member start (engine.py
remove_defrag_scratch). lock.mdb stays: LMDB rebuilds its contents whenever a process opens
the environment first (check_env_unused makes sure no other process has it open).
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import os
import shutil
import stat

import lmdb

from raftkv.mvcc import codec, snapshot as mvcc_snapshot
from raftkv.storage.engine import DATA_FILE, DEFRAG_SCRATCH, LMDB_LOCK_FILE, Engine
from raftkv.storage.wal import fsync_dir

# The copy holds the live pages plus LMDB's meta pages; free space for this much more than the
# pages in use is asked for before it is written (a full disk would only fail it later).
SPARE_BYTES = 1 << 20
# Bytes per read-ahead hint (read_ahead): the kernel reads at most its readahead window per
# POSIX_FADV_WILLNEED (max of the device's read_ahead_kb and optimal I/O size; 128 KiB by
# default), so the file is asked for in pieces no larger than that.
READ_AHEAD_CHUNK = 128 << 10
# The replaced data file's name in the scratch dir, from the swap until the scratch is removed.
REPLACED_FILE = "replaced-" + DATA_FILE


class DefragError(Exception):
    """The store cannot be defragmented; the message says why. The live file is as it was."""


def copy_compacted(engine, path):
    """Write the compacted copy of engine's store (the data dir at path) to
    path/DEFRAG_SCRATCH/DATA_FILE, fsync it and check that it holds what the store holds.
    Returns {"copy": its path, "size_before", "size_after", "revision", "compact_revision"}
    (the last two None when the store has no MVCC tables). DefragError or OSError when it
    cannot; the caller removes the scratch dir either way (remove_defrag_scratch)."""
    data_file = os.path.join(path, DATA_FILE)
    if os.path.islink(data_file):  # the rename would put a plain file in the link's place
        raise DefragError(f"{data_file} is a symbolic link: defragment the data dir it is in")
    before = os.stat(data_file)
    scratch = os.path.join(path, DEFRAG_SCRATCH)
    copy = os.path.join(scratch, DATA_FILE)
    os.mkdir(scratch, 0o700)
    read_ahead(data_file)
    revision, compact = mvcc_position(engine)
    _check_space(path, *pages_in_use(engine))
    try:
        write_copy(engine, copy)
    except lmdb.Error as exc:  # e.g. ENOSPC, EIO
        raise DefragError(f"writing the compacted copy {copy}: {exc}") from None
    _keep_mode_and_owner(copy, before)
    fsync_dir(copy)  # a file: its contents are durable before it is renamed in
    read_ahead(copy)  # in the page cache unless memory was short: then it is read back
    with Engine(scratch, readonly=True) as copied:
        difference = compare_stores(engine, copied)
        if difference:
            raise DefragError(f"the compacted copy {copy} differs from {data_file}: "
                              f"{difference}; {data_file} is unchanged")
    size_after = os.path.getsize(copy)
    assert 0 < size_after
    return {"copy": copy, "size_before": before.st_size, "size_after": size_after,
            "revision": revision, "compact_revision": compact}


def swap_in(path, copy):
    """Rename the checked copy over the data dir's DATA_FILE (atomic: the old file or the new
    one, never a mix) and make the rename durable. The old file keeps a name in the copy's
    scratch dir (REPLACED_FILE, a hard link made first), so the rename does not free its
    blocks: for a store of a GB that takes a few tenths of a second, which an online defrag
    leaves to the scratch dir's removal after the member's writes resume
    (engine.set_aside_defrag_scratch). Where hard links are refused, the rename frees it."""
    data_file = os.path.join(path, DATA_FILE)
    size = os.path.getsize(copy)
    try:
        os.link(data_file, os.path.join(os.path.dirname(copy), REPLACED_FILE))
    except OSError:
        pass  # the rename frees it, then
    os.rename(copy, data_file)
    fsync_dir(path)
    assert os.path.getsize(data_file) == size


def read_ahead(file):
    """Ask the kernel to read all of file into the page cache in the background (one
    POSIX_FADV_WILLNEED per READ_AHEAD_CHUNK; returns at once), ahead of a scan of every
    record. The engine maps a store with LMDB's readahead off (MDB_NORDAHEAD, MADV_RANDOM:
    right for serving), so a scan of pages that are not cached faults them in one 4 KiB page,
    one disk read, at a time. A store of 1.2 GB took 20-24 s per scan that way here, 1.6-2.6 s
    with this hint (bench/README.md, online defrag at 1 GB). Pages already cached cost
    nothing; it is only a hint, which the kernel may drop."""
    if not hasattr(os, "posix_fadvise"):  # not on every platform (macOS)
        return
    fd = os.open(file, os.O_RDONLY)
    try:
        for offset in range(0, os.fstat(fd).st_size, READ_AHEAD_CHUNK):
            os.posix_fadvise(fd, offset, READ_AHEAD_CHUNK, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def write_copy(engine, copy):
    """Write the compacted copy of engine's store to the new file copy (mdb_env_copyfd2 with
    MDB_CP_COMPACT) through the page cache. LMDB's mdb_env_copy2 (env.copy) opens its target
    with O_DIRECT: nothing of the copy is then cached, the check reads all of it back from
    disk and the member serves from a cold file after the swap. A 1.2 GB store here: copy,
    fsync and check 3.25-3.35 s that way plus ~0.7 s blocked in read_ahead(copy), against
    0.5 + 0.7 + 1.7 s through the cache. lmdb.Error or OSError when it cannot (the caller
    removes the scratch dir)."""
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        engine.env.copyfd(fd, compact=True)
    finally:
        os.close(fd)


def table_names(engine):
    """The names of the store's sub-databases (the main database's keys), in key order."""
    with engine.env.begin() as txn:
        return [bytes(name) for name, _ in txn.cursor()]


def pages_in_use(engine):
    """(pages the store uses: the main tree's and every sub-database's, page size): about the
    size of its compacted copy."""
    env = engine.env
    dbs = [engine.db(name) for name in table_names(engine)]  # handles first: each needs a txn
    st = env.stat()
    pages = st["branch_pages"] + st["leaf_pages"]
    with env.begin() as txn:
        for db in dbs:
            st = txn.stat(db)
            pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
    return pages, env.stat()["psize"]


def compare_stores(engine, copied):
    """None when copied holds exactly what engine holds: the same sub-databases with the same
    records, keys and values byte for byte, in order (both read in one pass, in one read txn
    each); else where they first differ. Every sub-database's record count is also checked
    against its own statistics."""
    names = table_names(engine)
    got = table_names(copied)
    if names != got:
        show = lambda ns: [n.decode(errors="replace") for n in ns]  # noqa: E731
        return f"sub-databases {show(names)} before, {show(got)} in the copy"
    pairs = [(name, engine.db(name), copied.db(name)) for name in names]
    with engine.env.begin() as want_txn, copied.env.begin() as got_txn:
        for name, want_db, got_db in pairs:
            records = 0
            for want, got in itertools.zip_longest(want_txn.cursor(db=want_db),
                                                   got_txn.cursor(db=got_db)):
                if want != got:
                    return (f"sub-database {name.decode(errors='replace')!r}, record "
                            f"{records}: {_record(want)} before, {_record(got)} in the copy")
                records += 1
            for txn, db in ((want_txn, want_db), (got_txn, got_db)):
                entries = txn.stat(db)["entries"]
                assert entries == records, (name, entries, records)
    return None


def _record(item):
    if item is None:
        return "none"
    key, value = item
    return f"key {bytes(key[:40])!r} ({len(value)} bytes of value)"


def mvcc_position(engine):
    """The MVCC store's (revision, compact revision or -1 before any, as etcd's HashKV
    answers them), or Nones if the store has no MVCC tables."""
    if not {codec.KV_DB.encode(), codec.META_DB.encode()} <= set(table_names(engine)):
        return None, None
    meta = engine.db(codec.META_DB)  # the handle first: opening one needs a txn of its own
    with engine.env.begin() as txn:
        state = mvcc_snapshot.mvcc_state(txn, meta)
    return state["revision"], state["compact_revision"] or -1


def check_env_unused(path):
    """Refuse while another process has the LMDB environment open (a tool reading the store, or
    a member of a raftkv that took no data dir lock): the swapped file would not match what
    that process keeps in lock.mdb. Each process that opens an LMDB environment holds a shared
    fcntl lock on lock.mdb's first byte for as long as it has it open; an exclusive one on that
    byte succeeds only when no process does. This process must not have it open (closing the
    descriptor drops all of this process's fcntl locks on the file)."""
    lock_path = os.path.join(path, LMDB_LOCK_FILE)
    try:
        fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        return
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise DefragError(f"{path}: its LMDB environment is open in another process (it holds "
                          f"a lock on {lock_path}); stop that process first") from None
    finally:
        os.close(fd)


def _check_space(path, pages, psize):
    need = pages * psize + SPARE_BYTES
    free = shutil.disk_usage(path).free
    if free < need:
        raise DefragError(f"{path}: {free} bytes free, the compacted copy needs about {need}")


def _keep_mode_and_owner(copy, before):
    """The copy is created with LMDB's default mode; give it the old file's mode and owner
    (a defrag run as root must not leave a file the member's user cannot open)."""
    os.chmod(copy, stat.S_IMODE(before.st_mode))
    st = os.stat(copy)
    if (st.st_uid, st.st_gid) != (before.st_uid, before.st_gid):
        os.chown(copy, before.st_uid, before.st_gid)
