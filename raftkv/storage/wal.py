"""The write-ahead log: a member's Raft log and hard state in append-only segment files.

Why (docs/ARCHITECTURE.md, "The write path"): an LMDB commit flushes the disk twice (data pages,
then the meta page), and a member must make every Ready durable before it acknowledges. A WAL
append needs one fdatasync. So the Raft log and hard state live here, made durable once per
Ready, and the LMDB state (MVCC store, applied index, members) is committed off the latency
path; after a crash the member replays the WAL and re-applies committed entries above the
store's applied index.

Layout: <data dir>/wal/<number:016x>.wal (or in the --wal-dir), numbered from 1, beside the file
wal-id: the WAL's identity (random hex, written before its first segment; WAL.id), which the
member also records in its data dir so that a missing or foreign WAL is refused rather than
replaced by an empty log (raftkv/server/member.py _check_wal_identity). A WAL written before
identities existed gets one when the member records it (WAL.save_id), not at open. A segment is
preallocated to segment_bytes with fallocate (zero-filled reads past the written end), and every
segment begins with a COMPACT record (the compaction point as of its creation) and a HARD_STATE
record, so the segments before it can be deleted once the log is compacted past their entries.

Record, little-endian: len u32 | crc32c u32 | type u8 | seq u64 | payload, where len counts the
bytes after the crc field (9 + payload) and the CRC32C covers exactly those bytes. seq numbers
records 1, 2, 3... across segments. Types:
  ENTRIES     payload = encode_entries(entries): the entry frames of raftkv.storage's codec
              (each with its own CRC); an entry at an existing index replaces that suffix.
  HARD_STATE  msgpack [term, vote, commit]
  COMPACT     msgpack [index, term, conf state fields]: the log starts after index.
  INSTALL     the same fields: a snapshot was installed; every entry before it is dropped.

Opening replays every segment in order (WAL.open returns the log image). A bad record in the
last segment that a torn write explains (it runs past the end of the file, or a whole sector
piece of it reads as zeros: a sector the crashed pwrite never reached) is an append that was
never acknowledged: it and what follows are cut off (from the image at once, from the file by
the first write, so a start refused later changes no file). Any other bad record is
corruption: WalCorruptError, naming the file and offset, and the member refuses to start; so
are a hard state whose term goes back or whose vote changes within its term, and a commit
index past the log's end.

Writes: WAL.append() queues a record from any thread and returns its seq; one writer thread
writes everything queued with one os.write per segment and one fdatasync per round (group
commit), then resolves the round's futures. wait_synced(seq) blocks until a record is durable.
"""
from __future__ import annotations

import collections
import logging
import os
import struct
import threading
import time

import msgpack

from raftkv.raft.types import HardState, SnapshotMetadata
from raftkv.storage import crc32c, decode_entries, encode_entries
from raftkv.storage.errors import RESTORE_FROM_PEERS, CorruptEntryError, StorageError
from raftkv.storage.logstore import (
    pack_hard_state,
    pack_snap_meta,
    unpack_hard_state,
    unpack_snap_meta,
)

log = logging.getLogger(__name__)

WAL_DIR = "wal"
ID_FILE = "wal-id"  # in the WAL's directory: its identity (WAL.id)
SEGMENT_BYTES_DEFAULT = 64 << 20
SUFFIX = ".wal"

ENTRIES, HARD_STATE, COMPACT, INSTALL = 1, 2, 3, 4
_TYPES = (ENTRIES, HARD_STATE, COMPACT, INSTALL)
_HEAD = struct.Struct("<IIBQ")  # len, crc, type, seq
_HEAD_BYTES = _HEAD.size  # 17
_LEN_MIN = 9  # type + seq
RECORD_BYTES_MAX = 1 << 30  # a record beyond this is a damaged length field
SECTOR_BYTES = 512  # the smallest unit a torn write leaves unwritten (etcd's minSectorSize)


class WalError(StorageError):
    """The WAL could not be written (the member stops: it may not acknowledge)."""


class WalCorruptError(CorruptEntryError):
    """A WAL record is damaged where a torn write cannot explain it."""

    def __init__(self, path, offset, detail):
        super().__init__(f"{path}: WAL record at byte {offset} is corrupt: {detail}; the member "
                         f"refuses to start on a damaged log ({RESTORE_FROM_PEERS})", None,
                         offset)
        self.path = path


class LogImage:
    """What a replay found: the compaction point, the entries after it, the hard state."""

    def __init__(self):
        self.meta = SnapshotMetadata()  # the compaction point (index, term, conf state)
        self.entries = []  # entries meta.index + 1 .. last, contiguous
        self.hard_state = HardState()
        self.last_seq = 0


# ---------------------------------------------------------------- record encoding

def _record(rtype, seq, payload):
    body = struct.pack("<BQ", rtype, seq) + payload
    return struct.pack("<II", len(body), crc32c(body)) + body


# ---------------------------------------------------------------- segments

class _Segment:
    __slots__ = ("number", "path", "max_index")

    def __init__(self, number, path, max_index=0):
        self.number = number
        self.path = path
        self.max_index = max_index  # the highest entry index written in it (0: none)


def _segment_name(number):
    return f"{number:016x}{SUFFIX}"


def _list_segments(wal_dir):
    out = []
    for name in os.listdir(wal_dir):
        if not name.endswith(SUFFIX):
            continue
        try:
            number = int(name[:-len(SUFFIX)], 16)
        except ValueError:
            raise WalCorruptError(os.path.join(wal_dir, name), 0, "not a WAL segment name")
        out.append(_Segment(number, os.path.join(wal_dir, name)))
    out.sort(key=lambda s: s.number)
    for a, b in zip(out, out[1:]):
        if b.number != a.number + 1:
            raise WalCorruptError(b.path, 0, f"segment {a.number + 1:016x} is missing")
    return out


def wal_path(data_dir, wal_dir=""):
    """The WAL's directory: wal_dir (--wal-dir) if given, else DATA_DIR/wal."""
    return os.fspath(wal_dir) if wal_dir else os.path.join(os.fspath(data_dir), WAL_DIR)


def read_wal_id(wal_dir):
    """The identity in wal_dir's ID_FILE, or None (no file: no WAL, or one written before
    WALs had an identity)."""
    try:
        with open(os.path.join(wal_dir, ID_FILE), encoding="ascii") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def write_file_durably(path, data):
    """Replace path with data atomically and durably (temp file, fsync, rename, fsync of the
    directory): after a crash the file is either the old one or the new one, whole."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _preallocate(fd, size):
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:
        pass  # not supported by this filesystem: the file grows as it is written


def fsync_dir(path):
    """fsync the directory (or file) at path: its entries (its contents) are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torn(data, off, end):
    """Whether the damaged record at off, ending at end, can be a torn write: the last append's
    pwrite cut by a crash before its fdatasync returned (so never acknowledged). A segment is
    preallocated (zeros), so a sector that write never reached still reads as zeros: a record
    that runs past the end of the file, or whose bytes hold a whole zero sector piece (each
    piece between SECTOR_BYTES boundaries of the file, etcd's torn-entry rule), can be one. A
    CRC mismatch or a bad field with every sector written is damage to data that was synced:
    corruption. (A record cut short by the end of the file, or a zero header with bytes after
    it, needs no look: _read_records takes those for torn writes itself.)"""
    if end > len(data):
        return True
    if end <= off:  # an impossible length (end: off): look at the header's sectors
        end = min(len(data), off + _HEAD_BYTES)
    start = off
    while start < end:
        stop = min(end, (start // SECTOR_BYTES + 1) * SECTOR_BYTES)
        if data.count(0, start, stop) == stop - start:
            return True
        start = stop
    return False


def _read_records(seg, last):
    """Yield (offset, type, seq, payload) of seg's records, payload a memoryview of the file's
    bytes; the generator's return value (StopIteration.value) is (end offset, whether a torn
    tail was found at it).

    A segment ends at a zero header (the preallocated rest). In the newest segment, a damaged
    record that a torn write explains (_torn), or anything after a zero header, is the tail of
    the last append, which was never acknowledged (one pwrite + fdatasync per round): the log
    is cut there, with a warning. Any other damage, and any damage in an older segment (synced
    in full before the next one began), is corruption: a record that was synced, perhaps
    acknowledged, and cutting the log there would lose it."""
    with open(seg.path, "rb") as f:
        data = f.read()
    # Records are checked and handed out as views of `data`: a copy of each (entries records
    # of ~100 KiB, each a fresh mmap'd allocation) cost more than the CRC over it.
    view = memoryview(data)
    off = 0
    size = len(data)
    while True:
        bad, torn = None, False  # torn: a torn write explains it without a look (_torn)
        if off + _HEAD_BYTES > size:
            if data.count(0, off) == size - off:  # only zeros follow
                return off, False
            bad, torn = "a truncated record header", True
        else:
            length, crc, rtype, seq = _HEAD.unpack_from(data, off)
            end = off + 8 + length
            if length == 0 and crc == 0:
                if data.count(0, off) == size - off:  # the preallocated rest
                    return off, False
                bad, torn = "non-zero bytes after the end of the log", True
            elif length < _LEN_MIN or length > RECORD_BYTES_MAX:
                bad, end = f"impossible length {length}", off  # its extent is unknown
            elif end > size:
                bad = f"length {length} runs past the end of the file"
            elif crc32c(view[off + 8:end]) != crc:
                bad = "CRC32C mismatch"
            elif rtype not in _TYPES:
                bad = f"unknown record type {rtype}"
        if bad is None:
            yield off, rtype, seq, view[off + _HEAD_BYTES:end]
            off = end
            continue
        if not last or not (torn or _torn(data, off, end)):
            raise WalCorruptError(seg.path, off, bad)
        log.warning("%s: cutting the log at byte %d (%s; %d non-zero bytes after it): the tail "
                    "of an append a crash cut short, which was never acknowledged", seg.path,
                    off, bad, size - off - data[off:].count(0))
        return off, True


def _replay(segments):
    """Replay records in order into a LogImage; returns (image, end offset of the last
    segment, whether its tail was cut)."""
    img = LogImage()
    run_lo, run = 0, []  # entries run_lo .. run_lo + len(run) - 1
    end, cut = 0, False
    for k, seg in enumerate(segments):
        gen = _read_records(seg, k == len(segments) - 1)
        while True:
            try:
                off, rtype, seq, payload = next(gen)
            except StopIteration as stop:
                end, cut = stop.value
                break
            if seq == 0:
                pass  # a segment header: its state is already implied by what came before
            elif seq <= img.last_seq:
                raise WalCorruptError(seg.path, off, f"record seq {seq} after {img.last_seq}")
            img.last_seq = max(img.last_seq, seq)
            try:
                if rtype == ENTRIES:
                    ents = decode_entries(payload)
                    if not ents:
                        continue
                    first = ents[0].index
                    seg.max_index = max(seg.max_index, ents[-1].index)
                    if not run or first > run_lo + len(run) or first < run_lo:
                        # a new run: a gap below it is allowed only if a later compaction
                        # point covers it (checked at the end)
                        run_lo, run = first, ents
                    else:
                        # In place: a copy of the run per record made the replay quadratic
                        # (30,000 one-entry records took 3 s).
                        del run[first - run_lo:]
                        run.extend(ents)
                elif rtype == HARD_STATE:
                    hs = unpack_hard_state(payload)
                    _check_hard_state(img.hard_state, hs, seg.path, off)
                    img.hard_state = hs
                elif rtype == COMPACT:
                    meta = unpack_snap_meta(payload)
                    if meta.index > img.meta.index:
                        img.meta = meta
                else:  # INSTALL
                    img.meta = unpack_snap_meta(payload)
                    run_lo, run = 0, []
            except WalCorruptError:
                raise
            except (CorruptEntryError, ValueError, TypeError, msgpack.UnpackException) as exc:
                raise WalCorruptError(seg.path, off, f"undecodable record: {exc}") from exc
    start = img.meta.index
    if run:
        if run_lo > start + 1:
            raise WalCorruptError(segments[-1].path, 0,
                                  f"the log has no entries {start + 1}..{run_lo - 1} (it "
                                  f"starts after the compaction point {start})")
        if run_lo <= start <= run_lo + len(run) - 1 and start > 0:
            term = run[start - run_lo].term
            if term != img.meta.term:
                raise WalCorruptError(segments[-1].path, 0,
                                      f"entry {start} has term {term}, the compaction point "
                                      f"says {img.meta.term}")
        img.entries = run[max(0, start + 1 - run_lo):]
    last_index = start + len(img.entries)
    if img.hard_state.commit > last_index:
        raise WalCorruptError(segments[-1].path, 0,
                              f"the hard state's commit index {img.hard_state.commit} is "
                              f"beyond the log's last entry {last_index} (entries it counted "
                              f"as committed are missing)")
    return img, end, cut


def _check_hard_state(prev, hs, path, off):
    """A member's term never goes back, and the vote it cast in a term stands for that term
    (Raft §5.2: one vote per term). A HARD_STATE record that says otherwise has a good CRC, so
    no torn write explains it: it was written by hand or by a bug, and starting from it could
    vote twice in a term (two leaders of one term)."""
    if hs.term < prev.term:
        raise WalCorruptError(path, off, f"hard state term {hs.term} after term {prev.term} "
                                         f"(a term never goes back)")
    if hs.term == prev.term and prev.vote and hs.vote != prev.vote:
        raise WalCorruptError(path, off, f"hard state vote {hs.vote:x} after vote "
                                         f"{prev.vote:x} in term {hs.term} (one vote per term)")


# ---------------------------------------------------------------- the WAL

class _Item:
    __slots__ = ("seq", "rtype", "obj", "future", "loop", "max_index")

    def __init__(self, seq, rtype, obj, future, loop, max_index):
        self.seq, self.rtype, self.obj = seq, rtype, obj
        self.future, self.loop, self.max_index = future, loop, max_index


class WAL:
    """An open WAL: open() replays it; append() and the writer thread extend it."""

    def __init__(self, data_dir, *, segment_bytes=SEGMENT_BYTES_DEFAULT, wal_dir=""):
        """wal_dir: the directory of the segments (etcd's --wal-dir; empty: DATA_DIR/wal)."""
        assert segment_bytes >= 4096
        self.dir = wal_path(data_dir, wal_dir)
        self.segment_bytes = segment_bytes
        self._segments = []
        self._fd = None
        self._offset = 0
        lock = threading.RLock()
        self._cond = threading.Condition(lock)  # synced_seq, _error: wait_synced() waits on it
        # The writer thread waits on its own condition (same lock): a write that settles a
        # batch must not wake it for nothing (two context switches per Ready).
        self._work = threading.Condition(lock)
        self._io_lock = threading.Lock()  # held while a batch is taken, written and synced
        self._queue = []
        self._closing = False
        self._error = None
        self._thread = None
        self.next_seq = 1
        self.synced_seq = 0
        self._hs = HardState()  # the latest hard state and compaction point written, for the
        self._meta = SnapshotMetadata()  # header of the next segment (writer thread only)
        self._compacted = 0  # the highest compaction point queued (writer thread only)
        self._hdr_end = 0  # where the current segment's header records end
        self._repair = False  # the newest segment needs _repair_tail before the next write
        self.id = None  # the WAL's identity (ID_FILE), known once open() ran
        self.id_unsaved = False  # open(): True while self.id is not yet in ID_FILE (save_id)
        self.syncs = 0
        self.sync_seconds_total = 0.0
        self.sync_seconds = collections.deque(maxlen=4096)  # recent fdatasync durations

    @staticmethod
    def exists(data_dir, wal_dir=""):
        d = wal_path(data_dir, wal_dir)
        return os.path.isdir(d) and any(n.endswith(SUFFIX) for n in os.listdir(d))

    def open(self):
        """Replay the WAL (creating it if absent); returns the LogImage and starts the writer."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.id = read_wal_id(self.dir)
        self.id_unsaved = self.id is None
        segments = _list_segments(self.dir)
        if self.id is None:  # a new WAL, or one written before WALs had an identity
            self.id = os.urandom(16).hex()
            # A new WAL's identity is written before its first segment. One written before
            # identities existed gets its identity from save_id(), once the member recorded it
            # past every check of its start: a start refused (or cut short) in between leaves
            # no identity in the WAL that its data dir does not record, so the next start still
            # sees the old WAL it is (raftkv/server/member.py _check_wal_identity).
            if not segments:
                self.save_id()
        if segments:
            img, end, cut = _replay(segments)
        else:
            img, end, cut = LogImage(), 0, False
        self._segments = segments
        self.next_seq = img.last_seq + 1
        self.synced_seq = img.last_seq
        self._hs = img.hard_state
        self._meta = img.meta
        self._compacted = img.meta.index
        if segments:
            last = segments[-1]
            self._fd = os.open(last.path, os.O_WRONLY)
            self._offset = end
            # The repair of the newest segment waits for the first write (_repair_tail), so
            # that a start refused after the replay (say, the store and this log disagree)
            # leaves the files as they were; until then a replay finds the same log.
            self._repair = cut or end == 0
        else:
            self._new_segment()
        self._thread = threading.Thread(target=self._run, name="raftkv-wal", daemon=True)
        self._thread.start()
        return img

    def save_id(self):
        """Write the identity (ID_FILE) of a WAL that open() found without one."""
        assert self.id is not None, "save_id() before open()"
        if self.id_unsaved:
            write_file_durably(os.path.join(self.dir, ID_FILE), self.id.encode("ascii"))
            self.id_unsaved = False

    # ---- writing (any thread) ----
    def append(self, rtype, obj, *, loop=None, max_index=0):
        """Queue a record: ENTRIES (a list of Entry), HARD_STATE (a HardState), COMPACT or
        INSTALL (a SnapshotMetadata). Returns (seq, future): future is an asyncio future of
        loop (resolved once the record is durable) or None when loop is None."""
        assert rtype in _TYPES
        future = loop.create_future() if loop is not None else None
        with self._cond:
            if self._closing:
                raise WalError(f"{self.dir}: the WAL is closed")
            if self._error is not None:
                raise WalError(f"{self.dir}: an earlier WAL write failed: {self._error}")
            seq = self.next_seq
            self.next_seq += 1
            self._queue.append(_Item(seq, rtype, obj, future, loop, max_index))
            self._work.notify()
        return seq, future

    def write_now(self, records):
        """Write records [(rtype, obj, max_index)] durably in the calling thread (after
        everything queued before them, which goes in the same write and sync); returns the
        last seq. The GIL is released during the write and the fdatasync. The member's Ready
        loop uses this: it waits for its own record anyway, and skipping the writer thread
        saves two thread hand-offs per Ready."""
        with self._io_lock:
            with self._cond:
                if self._closing:
                    raise WalError(f"{self.dir}: the WAL is closed")
                if self._error is not None:
                    raise WalError(f"{self.dir}: an earlier WAL write failed: {self._error}")
                batch, self._queue = self._queue, []
                for rtype, obj, max_index in records:
                    assert rtype in _TYPES
                    batch.append(_Item(self.next_seq, rtype, obj, None, None, max_index))
                    self.next_seq += 1
            if batch:
                self._write_batch(batch)
        return self.next_seq - 1

    def wait_synced(self, seq):
        """Block until record seq is durable (raises WalError if the WAL failed)."""
        with self._cond:
            while self.synced_seq < seq:
                if self._error is not None:
                    raise WalError(f"{self.dir}: WAL write failed: {self._error}")
                self._cond.wait()

    def close(self):
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            self._work.notify_all()
        if self._thread is not None:
            self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ---- the writer thread ----
    def _run(self):
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._work.wait()
                if not self._queue:
                    return
            # The queue is taken under _io_lock, so write_now() and this thread never write
            # records out of order.
            with self._io_lock:
                with self._cond:
                    batch, self._queue = self._queue, []
                if batch:
                    try:
                        self._write_batch(batch)
                    except WalError:
                        return

    def _write_batch(self, batch):
        """Write, sync and settle batch (caller holds _io_lock)."""
        try:
            self._write(batch)
        except OSError as exc:
            log.critical("WAL write failed: %s", exc)
            with self._cond:
                self._error = exc
                self._cond.notify_all()
            error = WalError(f"{self.dir}: WAL write failed: {exc}")
            _resolve(batch, error)
            raise error from exc
        try:
            self._release()  # before the batch counts as synced: waiters see the result
        except OSError as exc:
            log.warning("could not delete an old WAL segment: %s", exc)
        with self._cond:
            self.synced_seq = batch[-1].seq
            self._cond.notify_all()
        _resolve(batch, None)

    def _write(self, batch):
        if self._repair:
            self._repair_tail()
        buf = []
        size = 0
        for item in batch:
            rec = self._encode(item)
            if self._offset + size + len(rec) > self.segment_bytes and \
                    self._offset + size > self._hdr_end:
                if buf:
                    os.pwrite(self._fd, b"".join(buf), self._offset)
                    self._offset += size
                    buf, size = [], 0
                os.fdatasync(self._fd)
                self._new_segment()
            buf.append(rec)
            size += len(rec)
            if item.max_index:
                seg = self._segments[-1]
                seg.max_index = max(seg.max_index, item.max_index)
        os.pwrite(self._fd, b"".join(buf), self._offset)
        self._offset += size
        t = time.perf_counter()
        os.fdatasync(self._fd)
        elapsed = time.perf_counter() - t
        self.sync_seconds_total += elapsed
        self.sync_seconds.append(elapsed)
        self.syncs += 1

    def _encode(self, item):
        obj = item.obj
        if item.rtype == ENTRIES:
            payload = encode_entries(obj)
        elif item.rtype == HARD_STATE:
            self._hs = obj
            payload = pack_hard_state(obj)
        else:
            self._meta = obj
            self._compacted = max(self._compacted, obj.index)
            payload = pack_snap_meta(obj)
        return _record(item.rtype, item.seq, payload)

    def _repair_tail(self):
        """Before the first write after open: zero the torn tail the replay cut off (so that no
        later replay reads it again), and give a newest segment left without its header
        records (a crash while it was created, or a torn tail cut at byte 0) the compaction
        point and hard state that every segment begins with: once the older segments are
        deleted, the replay starts from it."""
        os.ftruncate(self._fd, self._offset)
        _preallocate(self._fd, self.segment_bytes)
        if self._offset == 0:
            hdr = self._header()
            os.pwrite(self._fd, hdr, 0)
            self._offset = self._hdr_end = len(hdr)
        os.fsync(self._fd)
        self._repair = False

    def _header(self):
        """A segment's header: the compaction point and hard state as of now (seq 0: they
        repeat state already written, and queued records keep their own increasing seqs)."""
        return _record(COMPACT, 0, pack_snap_meta(self._meta)) + _record(HARD_STATE, 0,
                                                                     pack_hard_state(self._hs))

    def _new_segment(self):
        """Start the next segment: preallocated, beginning with the compaction point and the
        hard state (header records take seqs of their own, below the next queued one)."""
        number = self._segments[-1].number + 1 if self._segments else 1
        path = os.path.join(self.dir, _segment_name(number))
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        _preallocate(fd, self.segment_bytes)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._offset = 0
        self._segments.append(_Segment(number, path))
        hdr = self._header()
        os.pwrite(fd, hdr, 0)
        self._offset = self._hdr_end = len(hdr)
        os.fdatasync(fd)
        fsync_dir(self.dir)

    def _release(self):
        """Delete the oldest segments whose entries are all at or below the durable
        compaction point (never the segment being written)."""
        removed = False
        while len(self._segments) > 1 and self._segments[0].max_index <= self._compacted:
            seg = self._segments.pop(0)
            os.unlink(seg.path)
            removed = True
        if removed:
            fsync_dir(self.dir)


def _resolve(batch, error):
    by_loop = {}
    for item in batch:
        if item.future is not None:
            by_loop.setdefault(item.loop, []).append(item.future)
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, futures, error)
        except RuntimeError:
            pass


def _settle(futures, error):
    for f in futures:
        if f.done():
            continue
        if error is not None:
            f.set_exception(error)
        else:
            f.set_result(None)
