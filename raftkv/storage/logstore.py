"""The Raft log over LMDB: the Storage read interface plus durable writes in a caller's txn.

Layout (docs/INTERNAL_API.md §2, §3):
  "log"  key = 8-byte big-endian index; value = one frame of encode_entries([e]) (CRC32C each)
  "meta" raft/hard_state, raft/conf_state, raft/snapshot (metadata), raft/log_start: msgpack.
         log_start is the compaction point (index, term): first_index() - 1 and its term, so
         term(first_index() - 1) answers after a compaction or a snapshot, as etcd's dummy entry.

Writes go into a write txn the caller owns (normally one of a GroupCommitter's): save(),
compact() and set_conf_state() validate everything first (nothing is written if they raise)
and read the bounds they need from that txn, so several calls in one txn see each other.

Caches (first/last index, last term, hard state, conf state, snapshot metadata) back the read
side and change only after the txn commits: each write method returns a hook. Under a
GroupCommitter the hook is registered with after_commit() and run by the committer right after
the commit, before the submitter resumes. With a txn of your own, call the returned hook after
txn.commit() (or never, if the txn aborts). Hooks carry a sequence number and a stale one is
ignored, so running a hook twice or late never moves the caches backwards. reload() re-reads
everything from disk.

Reads run in their own read txn from any thread; they never see uncommitted writes.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import operator
import struct
import threading

import msgpack

from raftkv.raft.errors import CompactedError, SnapshotOutOfDateError, UnavailableError
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata
from raftkv.storage import decode_entries, encode_entries
from raftkv.storage.errors import CorruptEntryError, StorageError
from raftkv.storage.group_commit import after_commit

LOG_DB = b"log"
META_DB = b"meta"
KEY_HARD_STATE = b"raft/hard_state"
KEY_CONF_STATE = b"raft/conf_state"
KEY_SNAPSHOT = b"raft/snapshot"
KEY_LOG_START = b"raft/log_start"
ENTRY_BYTES_MAX_DEFAULT = 4 << 20  # one framed entry (payload + 25 bytes of framing)
VERIFY_TAIL_DEFAULT = 1024  # entries whose CRC and term chain are checked on open

_KEY = struct.Struct(">Q")
_FRAME_HEAD = struct.Struct("<IIQQB")  # len, crc, term, index, type (see _pycodec)
_FRAMING_BYTES = 25
_ENTRY_TYPES = (EntryType.NORMAL, EntryType.CONF_CHANGE)  # a tuple: `in` without hashing


class LogStoreError(StorageError):
    """Base class of the log store's own errors."""


class EntryTooLargeError(LogStoreError):
    """An entry's framed size exceeds entry_bytes_max."""


class InvalidEntryError(LogStoreError, TypeError):
    """Not an Entry, or a field of the wrong type or range."""


class NonContiguousError(LogStoreError):
    """A batch with a hole or an index going backwards, or a gap after the stored log."""


class TermOrderError(LogStoreError):
    """An entry's term is below the term of the entry before it."""


class InvalidArgumentError(LogStoreError, ValueError):
    """A bad argument: lo > hi, compacting past the last index, a wrong hard state type..."""


class StaleSnapshotError(LogStoreError, SnapshotOutOfDateError):
    """The snapshot is not newer than the log's compaction point."""


class LogCorruptError(CorruptEntryError):
    """A stored log record is damaged or missing; names the data dir and the Raft index."""

    def __init__(self, path: str, index: int | None, detail: str):
        where = f"index {index}" if index is not None else "unknown index"
        super().__init__(f"{path}: Raft log record at {where} is corrupt: {detail}", index)
        self.path = path


@dataclasses.dataclass(frozen=True, slots=True)
class _State:
    """What the read side serves; replaced whole (one attribute store) so readers never tear."""

    seq: int
    start_index: int  # compaction point = first_index() - 1
    start_term: int
    last_index: int
    last_term: int
    hard_state: HardState
    conf_state: ConfState
    snap_meta: SnapshotMetadata


class LogStore:
    """Raft Storage over the engine's "log" and "meta" sub-databases."""

    def __init__(self, engine, *, entry_bytes_max=ENTRY_BYTES_MAX_DEFAULT,
                 verify_tail=VERIFY_TAIL_DEFAULT, verify_all=False):
        assert entry_bytes_max > _FRAMING_BYTES
        assert verify_tail >= 0
        self.engine = engine
        self.path = engine.path
        self.entry_bytes_max = entry_bytes_max
        self._open_handles()
        engine.on_reopen(self._open_handles)  # the online defrag reopened the store
        self._verify_tail = verify_tail
        self._seq = itertools.count(1)
        self._publish_lock = threading.Lock()
        self._state = self._load(verify_all)

    def _open_handles(self):
        self._env = self.engine.env
        self._log = self.engine.db(LOG_DB)
        self._meta = self.engine.db(META_DB)

    # ---- read side (raftkv.raft.storage.Storage) ----

    def initial_state(self) -> tuple[HardState, ConfState]:
        st = self._state
        return copy.deepcopy(st.hard_state), copy.deepcopy(st.conf_state)

    def first_index(self) -> int:
        return self._state.start_index + 1

    def last_index(self) -> int:
        return self._state.last_index

    def snapshot(self) -> Snapshot:
        """The latest snapshot's metadata; data is b"" (the state machine holds the image)."""
        return Snapshot(b"", copy.deepcopy(self._state.snap_meta))

    def term(self, index: int) -> int:
        st = self._state
        if index == st.start_index:
            return st.start_term
        if index < st.start_index:
            raise CompactedError(f"term({index}): compacted (first index {st.start_index + 1})")
        if index > st.last_index:
            raise UnavailableError(f"term({index}): beyond the last index {st.last_index}")
        if index == st.last_index:
            return st.last_term
        return self.entries(index, index + 1)[0].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries [lo, hi), at most max_size bytes (Entry.size()) but at least one."""
        st = self._state
        if lo > hi:
            raise InvalidArgumentError(f"entries({lo}, {hi}): lo > hi")
        if lo <= st.start_index:
            raise CompactedError(f"entries({lo}, {hi}): compacted (first {st.start_index + 1})")
        if hi > st.last_index + 1:
            raise UnavailableError(f"entries({lo}, {hi}): beyond the last index {st.last_index}")
        if lo == hi:
            return []
        frames = self._read_frames(lo, hi, max_size)
        return self._decode(lo, frames)

    def _read_frames(self, lo, hi, max_size):
        frames = []
        size = 0
        with self._env.begin(db=self._log) as txn:
            cur = txn.cursor()
            if not cur.set_key(_KEY.pack(lo)):
                self._raise_missing(txn, lo)
            for key, value in cur.iternext():
                if key != _KEY.pack(lo + len(frames)):
                    self._raise_missing(txn, lo + len(frames))
                size += len(value)
                if frames and max_size is not None and size > max_size:
                    return frames
                frames.append(value)
                if len(frames) == hi - lo:
                    return frames
            self._raise_missing(txn, lo + len(frames))
        return frames

    def _raise_missing(self, txn, index):
        """A record the caches promise is absent: compacted meanwhile, or lost."""
        start_index, _ = _unpack_start(txn.get(KEY_LOG_START, db=self._meta))
        if index <= start_index:
            raise CompactedError(f"index {index}: compacted (first index {start_index + 1})")
        last = _last_key(txn, self._log)
        if last is None or index > last:
            raise UnavailableError(f"index {index}: beyond the last index")
        raise LogCorruptError(self.path, index, "record missing from the log")

    def _decode(self, lo, frames):
        try:
            ents = decode_entries(b"".join(frames))
        except CorruptEntryError as exc:
            index = exc.index if exc.index is not None else lo
            raise LogCorruptError(self.path, index, str(exc)) from exc
        for k, e in enumerate(ents):
            if e.index != lo + k:
                raise LogCorruptError(self.path, lo + k, f"record holds index {e.index}")
        return ents

    # ---- write side: inside a caller's write txn ----

    def save(self, txn, entries=(), hard_state=None, snapshot=None, *, snapshot_metadata=None):
        """Install snapshot (a Snapshot or SnapshotMetadata; snapshot_metadata is an alias),
        then append entries (truncating a conflicting suffix), then store hard_state.

        Entries already covered by the compaction point are skipped, as etcd's MemoryStorage
        does. Returns the after-commit hook (see the module docstring)."""
        meta = _snapshot_meta(snapshot if snapshot is not None else snapshot_metadata)
        entries = _check_entries(entries, self.entry_bytes_max)
        if hard_state is not None and not isinstance(hard_state, HardState):
            raise InvalidArgumentError(f"hard_state must be a HardState, not {type(hard_state)}")
        start, start_term, last, last_term = self._txn_bounds(txn)
        drop_all = False
        if meta is not None:
            if meta.index <= start:
                raise StaleSnapshotError(
                    f"snapshot at index {meta.index} is not newer than the compaction point "
                    f"{start}"
                )
            drop_all = not (meta.index <= last and self._txn_term(txn, meta.index) == meta.term)
            start, start_term = meta.index, meta.term
            if drop_all:
                last, last_term = meta.index, meta.term
        entries = [e for e in entries if e.index > start]
        if entries:
            self._check_append(txn, entries, start, start_term, last, last_term)
        # Every check passed: write.
        changes = {}
        if meta is not None:
            self._install(txn, meta, drop_all)
            changes.update(conf_state=copy.deepcopy(meta.conf_state),
                           snap_meta=copy.deepcopy(meta))
        if entries:
            self._append(txn, entries, last)
            last, last_term = entries[-1].index, entries[-1].term
        if hard_state is not None:
            txn.put(KEY_HARD_STATE, pack_hard_state(hard_state), db=self._meta)
            changes["hard_state"] = copy.deepcopy(hard_state)
        return self._hook(txn, start, start_term, last, last_term, changes)

    def compact(self, txn, index: int):
        """Drop entries <= index, keeping index's term as the compaction point's.

        CompactedError if index is at or below the compaction point already;
        InvalidArgumentError if index is beyond the last index. Returns the hook."""
        start, _, last, last_term = self._txn_bounds(txn)
        if not isinstance(index, int) or isinstance(index, bool):
            raise InvalidArgumentError(f"compact index must be an int, not {type(index)}")
        if index <= start:
            raise CompactedError(f"compact({index}): already compacted up to {start}")
        if index > last:
            raise InvalidArgumentError(f"compact({index}): beyond the last index {last}")
        term = self._txn_term(txn, index)
        _delete_range(txn, self._log, start + 1, index + 1)
        txn.put(KEY_LOG_START, msgpack.packb([index, term]), db=self._meta)
        return self._hook(txn, index, term, last, last_term, {})

    def set_conf_state(self, txn, conf_state: ConfState):
        """Store the applied membership configuration. Returns the hook."""
        if not isinstance(conf_state, ConfState):
            raise InvalidArgumentError(f"conf_state must be a ConfState, not {type(conf_state)}")
        txn.put(KEY_CONF_STATE, pack_conf_state(conf_state), db=self._meta)
        start, start_term, last, last_term = self._txn_bounds(txn)
        changes = {"conf_state": copy.deepcopy(conf_state)}
        return self._hook(txn, start, start_term, last, last_term, changes)

    def reload(self, verify_all=False):
        """Re-read caches from disk (after writes whose hooks were not run)."""
        state = self._load(verify_all)
        with self._publish_lock:
            self._state = dataclasses.replace(state, seq=next(self._seq))

    def _check_append(self, txn, entries, start, start_term, last, last_term):
        first = entries[0].index
        if first > last + 1:
            raise NonContiguousError(
                f"entries start at index {first} but the log ends at {last} (gap)"
            )
        prev = first - 1
        if prev == start:
            prev_term = start_term
        elif prev == last:
            prev_term = last_term
        else:
            prev_term = self._txn_term(txn, prev)
        if entries[0].term < prev_term:
            raise TermOrderError(
                f"entry {first} has term {entries[0].term} below term {prev_term} of entry {prev}"
            )

    def _install(self, txn, meta, drop_all):
        if drop_all:
            txn.drop(self._log, delete=False)
        else:
            _delete_range(txn, self._log, 0, meta.index + 1)
        txn.put(KEY_SNAPSHOT, pack_snap_meta(meta), db=self._meta)
        txn.put(KEY_CONF_STATE, pack_conf_state(meta.conf_state), db=self._meta)
        txn.put(KEY_LOG_START, msgpack.packb([meta.index, meta.term]), db=self._meta)

    def _append(self, txn, entries, last):
        first = entries[0].index
        if first <= last:
            _delete_range(txn, self._log, first, None)  # the conflicting suffix
        buf = encode_entries(entries)
        items = []
        off = 0
        for e in entries:
            end = off + _FRAMING_BYTES + len(e.data)
            items.append((_KEY.pack(e.index), buf[off:end]))
            off = end
        cur = txn.cursor(db=self._log)
        consumed, added = cur.putmulti(items, append=True)
        if added != len(items):
            raise LogStoreError(f"{self.path}: appended {added} of {len(items)} entries")

    def _hook(self, txn, start, start_term, last, last_term, changes):
        seq = next(self._seq)
        changes.update(start_index=start, start_term=start_term, last_index=last,
                       last_term=last_term)

        def hook():
            self._publish(seq, changes)

        after_commit(txn, hook)
        return hook

    def _publish(self, seq, changes):
        with self._publish_lock:
            if seq <= self._state.seq:
                return
            self._state = dataclasses.replace(self._state, seq=seq, **changes)

    def _txn_bounds(self, txn):
        """(start_index, start_term, last_index, last_term) as txn sees them."""
        start, start_term = _unpack_start(txn.get(KEY_LOG_START, db=self._meta))
        cur = txn.cursor(db=self._log)
        if not cur.last():
            return start, start_term, start, start_term
        last = _KEY.unpack(cur.key())[0]
        return start, start_term, last, _frame_term(cur.value())

    def _txn_term(self, txn, index):
        start, start_term = _unpack_start(txn.get(KEY_LOG_START, db=self._meta))
        if index == start:
            return start_term
        value = txn.get(_KEY.pack(index), db=self._log)
        if value is None:
            raise LogCorruptError(self.path, index, "record missing from the log")
        return _frame_term(value)

    # ---- open / recover ----

    def _load(self, verify_all):
        with self._env.begin() as txn:
            start, start_term = _unpack_start(txn.get(KEY_LOG_START, db=self._meta))
            hard = unpack_hard_state(txn.get(KEY_HARD_STATE, db=self._meta))
            conf = unpack_conf_state(txn.get(KEY_CONF_STATE, db=self._meta))
            snap = unpack_snap_meta(txn.get(KEY_SNAPSHOT, db=self._meta))
            count = txn.stat(self._log)["entries"]
            last, last_term = start, start_term
            if count:
                last, last_term = self._verify(txn, start, start_term, count, verify_all)
        return _State(0, start, start_term, last, last_term, hard, conf, snap)

    def _verify(self, txn, start, start_term, count, verify_all):
        """Check the log is exactly (start, start + count] and the tail's CRCs and term chain."""
        cur = txn.cursor(db=self._log)
        cur.first()
        first = _KEY.unpack(cur.key())[0]
        cur.last()
        last = _KEY.unpack(cur.key())[0]
        if first != start + 1:
            raise LogCorruptError(self.path, start + 1,
                                  f"log starts at {first}, compaction point is {start}")
        if last - first + 1 != count:
            raise LogCorruptError(self.path, None,
                                  f"{count} records for indexes {first}..{last}: a hole")
        lo = first if verify_all else max(first, last - self._verify_tail + 1)
        last_term = start_term
        if lo > first:
            last_term = _frame_term(txn.get(_KEY.pack(lo - 1), db=self._log))
        cur.set_key(_KEY.pack(lo))
        for key, value in cur.iternext():
            index = _KEY.unpack(key)[0]
            try:
                (e,) = decode_entries(value)
            except (CorruptEntryError, ValueError) as exc:
                raise LogCorruptError(self.path, index, str(exc)) from exc
            if e.index != index:
                raise LogCorruptError(self.path, index, f"record holds index {e.index}")
            if e.term < last_term:
                raise LogCorruptError(self.path, index,
                                      f"term {e.term} below the previous entry's {last_term}")
            last_term = e.term
        return last, last_term


def _check_entries(entries, entry_bytes_max):
    """entries if they are a valid batch, else raise naming the first bad one."""
    if isinstance(entries, Entry) or not isinstance(entries, (list, tuple)):
        raise InvalidEntryError(f"entries must be a list of Entry, not {type(entries)}")
    if not entries or _batch_ok(entries, entry_bytes_max):
        return entries
    _find_bad_entry(entries, entry_bytes_max)
    raise InvalidEntryError("invalid entries")  # not reached: _find_bad_entry raised


def _batch_ok(entries, entry_bytes_max) -> bool:
    """The common case in C-level passes (a per-entry Python loop costs ~2 us an entry)."""
    if not all(type(e) is Entry for e in entries):
        return False
    indexes = [e.index for e in entries]
    terms = [e.term for e in entries]
    datas = [e.data for e in entries]
    return (
        all(type(i) is int for i in indexes) and all(type(t) is int for t in terms)
        and indexes == list(range(indexes[0], indexes[0] + len(indexes)))
        and 0 < indexes[0] and indexes[-1] < 1 << 64
        and 0 <= terms[0] and terms[-1] < 1 << 64 and all(map(operator.le, terms, terms[1:]))
        and all(type(d) is bytes for d in datas)
        and max(map(len, datas)) + _FRAMING_BYTES <= entry_bytes_max
        and all(map(_ENTRY_TYPES.__contains__, [e.type for e in entries]))
    )


def _find_bad_entry(entries, entry_bytes_max):
    for k, e in enumerate(entries):
        if not isinstance(e, Entry):
            raise InvalidEntryError(f"entries[{k}] is a {type(e).__name__}, not an Entry")
        for name in ("term", "index"):
            value = getattr(e, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
                raise InvalidEntryError(f"entries[{k}].{name} = {value!r}: not a u64")
        if e.index == 0:
            raise InvalidEntryError(f"entries[{k}].index is 0 (Raft indexes start at 1)")
        if e.type not in _ENTRY_TYPES:
            raise InvalidEntryError(f"entries[{k}].type = {e.type!r}: not an EntryType")
        if not isinstance(e.data, (bytes, bytearray, memoryview)):
            raise InvalidEntryError(f"entries[{k}].data is a {type(e.data).__name__}, not bytes")
        size = _FRAMING_BYTES + len(e.data)
        if size > entry_bytes_max:
            raise EntryTooLargeError(
                f"entry {e.index} is {size} bytes framed, above entry_bytes_max {entry_bytes_max}"
            )
        if k and e.index != entries[k - 1].index + 1:
            raise NonContiguousError(
                f"entries[{k}] has index {e.index} after {entries[k - 1].index}"
            )
        if k and e.term < entries[k - 1].term:
            raise TermOrderError(f"entry {e.index} has term {e.term} below its predecessor's")


def _snapshot_meta(snapshot):
    if snapshot is None:
        return None
    if isinstance(snapshot, Snapshot):
        snapshot = snapshot.metadata
    if not isinstance(snapshot, SnapshotMetadata):
        raise InvalidArgumentError(f"snapshot must be a Snapshot(Metadata), not {type(snapshot)}")
    if not isinstance(snapshot.conf_state, ConfState) or snapshot.index <= 0:
        raise InvalidArgumentError(f"invalid snapshot metadata {snapshot!r}")
    return snapshot


def _delete_range(txn, db, lo, hi):
    """Delete keys of indexes [lo, hi) (hi None: to the end)."""
    hi_key = None if hi is None else _KEY.pack(hi)
    cur = txn.cursor(db=db)
    if not cur.set_range(_KEY.pack(lo)):
        return
    while True:
        key = cur.key()
        if not key or (hi_key is not None and key >= hi_key):
            return
        cur.delete()


def _last_key(txn, db):
    cur = txn.cursor(db=db)
    return _KEY.unpack(cur.key())[0] if cur.last() else None


def _frame_term(value):
    """The term from a frame's header (not CRC-checked: reads that return data check it)."""
    if value is None or len(value) < _FRAMING_BYTES:
        raise CorruptEntryError("log record shorter than a frame header")
    return _FRAME_HEAD.unpack_from(value)[2]


def _unpack_start(raw):
    if raw is None:
        return 0, 0
    index, term = msgpack.unpackb(raw)
    return index, term


# Codecs of the Raft state records, shared with the WAL (raftkv/storage/wal.py).
def pack_hard_state(hs):
    return msgpack.packb([hs.term, hs.vote, hs.commit])


def unpack_hard_state(raw):
    return HardState() if raw is None else HardState(*msgpack.unpackb(raw))


def _conf_fields(cs):
    return [cs.voters, cs.learners, cs.voters_outgoing, cs.learners_next, cs.auto_leave]


def pack_conf_state(cs):
    return msgpack.packb(_conf_fields(cs))


def unpack_conf_state(raw):
    if raw is None:
        return ConfState()
    voters, learners, outgoing, learners_next, auto_leave = msgpack.unpackb(raw)
    return ConfState(voters, learners, outgoing, learners_next, auto_leave)


def pack_snap_meta(meta):
    return msgpack.packb([meta.index, meta.term, _conf_fields(meta.conf_state)])


def unpack_snap_meta(raw):
    if raw is None:
        return SnapshotMetadata()
    index, term, conf = msgpack.unpackb(raw)
    return SnapshotMetadata(ConfState(*conf), index, term)
