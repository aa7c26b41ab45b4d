"""Offline defragmentation of a stopped member's store: `raftkvutl defrag --data-dir DIR` (etcd
3.5's `etcdutl defrag`), also `raftkvctl defrag --data-dir DIR` (etcdctl 3.4's). A running
member defragments itself on Maintenance.Defragment (`etcdctl defrag`, raftkvctl's without
--data-dir: raftkv/server/member.py `Member.defragment`); both use the copy-and-verify of
raftkv/mvcc/defrag.py.

LMDB reuses the pages that deletes and compactions free, but never gives them back to the file
system: DATA_DIR/data.mdb stays at its high-water mark. defrag() rewrites it without them:

1. the data dir's lock (raftkv/storage/dirlock.py) is taken first: a running member holds it,
   so the defrag of its data dir is refused at once, naming its PID, and changes nothing
   (etcdctl 3.4 instead waits until the member stops; defragment a running member online);
2. the store is opened read-only: Engine's checks refuse a dir that is not a raftkv data dir,
   and the defrag refuses an LMDB environment that another process still has open;
3. a compacted copy (LMDB's mdb_env_copyfd2 with MDB_CP_COMPACT: the live pages only,
   renumbered) is written into DATA_DIR/defrag.tmp/ and fsynced;
4. the copy is opened read-only and compared with the store record by record: every
   sub-database, keys and values byte for byte (raftkv/mvcc/defrag.py compare_stores);
5. the copy is renamed over data.mdb, and the data dir fsynced.

A crash before the rename leaves the old file, after it the new one: whole either way. The
scratch dir a crash leaves is removed by the next defrag or member start (engine.py
remove_defrag_scratch). lock.mdb stays: LMDB rebuilds its contents whenever a process opens
the environment first. The copy keeps the old file's mode and owner; the map size is not the
file's but the opener's (Engine's), as before.
"""
from __future__ import annotations

import logging
import os

from raftkv.mvcc.defrag import DefragError, check_env_unused, copy_compacted, swap_in
from raftkv.storage.dirlock import DirLock
from raftkv.storage.engine import (
    DATA_FILE,
    DEFRAG_SCRATCH,
    DataDirError,
    Engine,
    check_dir,
    remove_defrag_scratch,
)

__all__ = ["DefragError", "defrag"]  # DefragError: what main.py reports as a refusal

log = logging.getLogger("raftkv.defrag")

LOCK_ADVICE = ("stop the member first, or defragment it while it runs: defrag without "
               "--data-dir (etcdctl defrag) asks the member to do it")


def defrag(data_dir):
    """Defragment the store of the stopped member whose data dir is data_dir. Returns
    {"data_dir", "size_before", "size_after", "revision", "compact_revision"} (the last
    two None when the store has no MVCC tables). DefragError, DataDirError,
    DirInUseError or OSError when it cannot; the live file is then unchanged."""
    path = os.fspath(data_dir)
    check_dir(path, readonly=True)  # a missing dir is an error (DirLock would create it)
    data_file = os.path.join(path, DATA_FILE)
    if not os.path.isfile(data_file):
        raise DataDirError(f"{path}: not a raftkv data dir (no {DATA_FILE})")
    lock = DirLock(path, "data dir", LOCK_ADVICE)
    try:
        lock.record_pid()  # a member started meanwhile is refused, naming this process
        if remove_defrag_scratch(path):
            log.warning("removed %s left in %s by a defrag that did not finish",
                        DEFRAG_SCRATCH, path)
        check_env_unused(path)
        return _defrag_locked(path)
    finally:
        lock.release()


def _defrag_locked(path):
    try:
        with Engine(path, readonly=True) as engine:
            info = copy_compacted(engine, path)
        swap_in(path, info.pop("copy"))
    finally:
        remove_defrag_scratch(path)
    return {"data_dir": path, **info}
