"""Engine: one LMDB environment per member data dir, with named sub-databases.

Every environment flag is passed explicitly so the durability contract is visible here:
sync=True and metasync=True make a write transaction durable when commit() returns, and
writemap=False keeps a full disk an error instead of a SIGBUS (TESTING.md §5.3, gotcha 5).

Sub-databases (opened on first use): "meta" (format version, hard state, snapshot metadata),
"log" (Raft entries by index), and the MVCC store's own ("kv", "kvmeta", "lease", ...).
"""
from __future__ import annotations

import errno
import os
import shutil
import threading

import lmdb

from raftkv.storage.dirlock import LOCK_FILE
from raftkv.storage.errors import StorageError, writable
from raftkv.storage.gate import StoreGate

FORMAT_VERSION = 1  # bump on any incompatible change of the on-disk layout
DATA_FILE = "data.mdb"
LMDB_LOCK_FILE = "lock.mdb"  # LMDB's reader table beside DATA_FILE (rewritten at every open)
# Where a defrag (raftkv/mvcc/defrag.py: offline, raftkv/utl/defrag.py, or a running member's)
# writes the compacted copy of DATA_FILE before renaming it over the live one; one left by a
# defrag cut short is removed by the next defrag or member start (each holds the data dir's
# lock, so no other defrag can be running then).
DEFRAG_SCRATCH = "defrag.tmp"
DEFRAG_SET_ASIDE = DEFRAG_SCRATCH + ".old-"  # + a unique suffix: set_aside_defrag_scratch
MAP_SIZE_BYTES_DEFAULT = 8 << 30  # 8 GiB of address space; pages are allocated only as used
SUB_DBS_MAX = 16  # named sub-databases: log, meta and the MVCC store's, with room to grow
META_DB = b"meta"
FORMAT_KEY = b"format_version"
MAGIC_KEY = b"raftkv"
MAGIC = b"raftkv-data-dir"


class DataDirError(StorageError):
    """The data dir cannot be used: not a raftkv store, a newer format, or unreadable."""


class Engine:
    """An open data dir. Thread-safe as LMDB is: one writer at a time, readers in parallel."""

    def __init__(self, path, *, map_size_bytes=MAP_SIZE_BYTES_DEFAULT, readonly=False):
        assert map_size_bytes > 0
        self.path = os.fspath(path)
        check_dir(self.path, readonly)
        if not readonly:
            check_writable(self.path)
        self._map_size_bytes = map_size_bytes
        self._dbs = {}
        self._dbs_lock = threading.Lock()
        self._on_reopen = []  # fn() each, after reopen(): holders of sub-db handles
        # Worker threads that use the environment go through it; the online defrag closes it
        # (storage/gate.py).
        self.gate = StoreGate()
        self._open(readonly)

    def _open(self, readonly):
        try:
            self.env = lmdb.open(
                self.path, map_size=self._map_size_bytes, subdir=True, readonly=readonly,
                metasync=True, sync=True, map_async=False, mode=0o600, create=not readonly,
                readahead=False, writemap=False, meminit=False, max_readers=126,
                max_dbs=SUB_DBS_MAX, max_spare_txns=4, lock=True,
            )
        except lmdb.Error as exc:
            raise DataDirError(f"{self.path}: cannot open the LMDB environment: {exc}") from exc
        try:
            self._check_size()
            self._check_format(readonly)
        except lmdb.Error as exc:  # a damaged page (LMDB has no checksums)
            self.env.close()
            raise DataDirError(f"{self.path}: the store ({DATA_FILE}) is damaged: {exc}") \
                from None
        except DataDirError:
            self.env.close()
            raise

    def on_reopen(self, fn):
        """Call fn() after every reopen(), once the new environment's sub-dbs are open: code
        that keeps sub-db handles (engine.db()) takes them again there."""
        self._on_reopen.append(fn)

    def reopen(self, between=None):
        """Close the environment, run between() (nothing of this process has the store open:
        it may replace DATA_FILE), and open the data dir again, with every sub-db that was open
        (new handles) and the on_reopen callbacks run. Every transaction, cursor and handle of
        the old environment is invalid from here on: the caller makes sure none is in use (the
        online defrag: storage/gate.py). If between() raises, the store is still reopened and
        its exception raised; if the reopen fails (DataDirError), the Engine is unusable."""
        readonly = self.env.flags()["readonly"]
        with self._dbs_lock:
            names, self._dbs = list(self._dbs), {}
        self.env.close()
        try:
            if between is not None:
                between()
        finally:
            self._open(readonly)
            for name in names:
                self.db(name)
            for fn in self._on_reopen:
                fn()

    def _check_size(self):
        """LMDB maps its file, so reading a page beyond the file's end is a SIGBUS (the process
        dies), not an error. A file shorter than the pages its meta page counts (cut by a bad
        copy or a damaged file system) is refused before anything reads it."""
        need = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        have = os.path.getsize(os.path.join(self.path, DATA_FILE))
        if have < need:
            raise DataDirError(
                f"{self.path}: {DATA_FILE} is {have} bytes, but its pages reach byte {need}: "
                f"the file was cut short; refusing to open a damaged store")

    def db(self, name):
        """The named sub-database handle, created on first use."""
        key = name.encode() if isinstance(name, str) else bytes(name)
        with self._dbs_lock:
            handle = self._dbs.get(key)
            if handle is None:
                handle = self.env.open_db(key, create=not self.env.flags()["readonly"])
                self._dbs[key] = handle
            return handle

    def _check_format(self, readonly):
        try:
            meta = self.db(META_DB)
        except lmdb.NotFoundError:  # read-only: another program's LMDB environment
            raise DataDirError(f"{self.path}: not a raftkv data dir (no format marker)") \
                from None
        with self.env.begin(db=meta, write=False) as txn:
            magic = txn.get(MAGIC_KEY)
            version = txn.get(FORMAT_KEY)
        if magic is None and version is None:
            if readonly:
                raise DataDirError(f"{self.path}: not a raftkv data dir (no format marker)")
            with self.env.begin(db=meta, write=True) as txn:
                txn.put(MAGIC_KEY, MAGIC)
                txn.put(FORMAT_KEY, str(FORMAT_VERSION).encode())
            return
        if magic != MAGIC:
            raise DataDirError(f"{self.path}: not a raftkv data dir (bad format marker)")
        try:
            found = int(version)
        except (TypeError, ValueError) as exc:
            raise DataDirError(f"{self.path}: unreadable format version {version!r}") from exc
        if found > FORMAT_VERSION:
            raise DataDirError(
                f"{self.path}: data dir has format version {found}, newer than this raftkv "
                f"({FORMAT_VERSION}); upgrade raftkv to open it"
            )

    def close(self):
        self.env.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def remove_defrag_scratch(path):
    """Remove the DEFRAG_SCRATCH a defrag cut short left in the data dir at path, and any
    scratch set aside (set_aside_defrag_scratch) whose removal a stop cut short (the caller
    holds the data dir's lock). Returns whether there was one."""
    path = os.fspath(path)
    found = False
    for name in os.listdir(path):
        if name != DEFRAG_SCRATCH and not name.startswith(DEFRAG_SET_ASIDE):
            continue
        scratch = os.path.join(path, name)
        if os.path.isdir(scratch) and not os.path.islink(scratch):
            shutil.rmtree(scratch)
        else:
            os.unlink(scratch)
        found = True
    return found


def set_aside_defrag_scratch(path):
    """Rename the data dir's DEFRAG_SCRATCH (if any) to a name of its own, at once, and return
    that path (None without one): its removal, which frees the replaced data file's blocks
    (mvcc/defrag.py swap_in), can then run after the member's writes resume, and a next
    defrag finds no scratch in its way. remove_defrag_scratch removes what a stop leaves."""
    scratch = os.path.join(os.fspath(path), DEFRAG_SCRATCH)
    if not os.path.lexists(scratch):
        return None
    aside = os.path.join(os.fspath(path), f"{DEFRAG_SET_ASIDE}{os.getpid()}-{os.urandom(4).hex()}")
    os.rename(scratch, aside)
    return aside


def check_writable(path):
    """LMDB opens its two files for reading and writing, and says only "Permission denied" or
    "Read-only file system" when it may not (no path, no errno). Open the ones that exist the
    same way first (nothing is written), so that a store the process may not write is refused
    with the file, the operation, the errno and what to do (DirAccessError)."""
    for name in (DATA_FILE, LMDB_LOCK_FILE):
        full = os.path.join(path, name)
        if os.path.exists(full):
            with writable(f"open {name} for reading and writing, as LMDB does"):
                os.close(os.open(full, os.O_RDWR))
        elif not os.access(path, os.W_OK | os.X_OK):  # LMDB would create it
            err = errno.EROFS if os.statvfs(path).f_flag & os.ST_RDONLY else errno.EACCES
            with writable(f"create {name} in it, as LMDB does"):
                raise OSError(err, os.strerror(err), path)


def check_dir(path, readonly):
    """Refuse a directory that holds something other than an LMDB environment (DataDirError);
    readonly: also a missing one (else it is created). An empty (0-byte) DATA_FILE is refused
    too, unless the directory holds nothing else of a member's (below)."""
    if not os.path.exists(path):
        if readonly:
            raise DataDirError(f"{path}: data dir does not exist")
        os.makedirs(path, mode=0o700, exist_ok=True)
        return
    if not os.path.isdir(path):
        raise DataDirError(f"{path}: data dir is not a directory")
    # fixtures/: the certificates of --auto-tls / --peer-auto-tls, made before the store opens
    # (etcd keeps them there too).
    # raftkv.lock: the member's lock (storage/dirlock.py), taken before the store opens.
    entries = set(os.listdir(path)) - {"fixtures", LOCK_FILE}
    if entries and DATA_FILE not in entries:
        raise DataDirError(
            f"{path}: not a raftkv data dir (it holds {sorted(entries)[:5]} but no {DATA_FILE})"
        )
    # LMDB takes a 0-byte DATA_FILE for a new environment and writes one into it. Beside a
    # member's other files (its WAL, its identity files) the store was lost, as if DATA_FILE
    # were missing (refused above): refuse before LMDB writes anything, so that a refused start
    # changes no file. Alone (with at most LMDB's lock file: a first start cut short before
    # LMDB wrote its first pages) it is a new data dir, as an empty directory is.
    others = entries - {DATA_FILE, LMDB_LOCK_FILE}
    data = os.path.join(path, DATA_FILE)
    if DATA_FILE in entries and os.path.isfile(data) and os.path.getsize(data) == 0 and \
            (others or readonly):
        raise DataDirError(
            f"{path}: {DATA_FILE} is empty (0 bytes)"
            + (f" but the data dir holds {sorted(others)[:5]}: its store is lost" if others
               else "") + "; refusing to open it (LMDB would write a new, empty store into it)")
