"""A member's Raft Storage: the log since the compaction point in memory, persisted by the WAL.

As etcd's raft.MemoryStorage + WAL: the Ready loop appends entries and hard states here (memory
at once, the WAL record queued) and waits for the WAL future before it sends what depends on
them. Reads (entries, term, bounds) are served from memory. Every method is called from the
member's event loop thread only; the WAL's writer thread never touches this object.

Memory: the entries since the compaction point, which the member keeps at most
--snapshot-count + --snapshot-catchup-entries entries long (as etcd does).
"""
from __future__ import annotations

import copy

from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import Entry, Snapshot
from raftkv.storage.wal import COMPACT, ENTRIES, HARD_STATE, INSTALL


class WalLog(MemoryStorage):
    """raft Storage over a replayed WAL. conf_state: the applied configuration (the state
    machine's, from LMDB), which the core restarts from."""

    def __init__(self, wal, image, conf_state):
        super().__init__()
        self.wal = wal
        meta = image.meta
        self.snap = Snapshot(b"", meta)
        self.ents = [Entry(term=meta.term, index=meta.index)] + list(image.entries)
        self.hard_state = copy.copy(image.hard_state)
        self.conf_state = copy.deepcopy(conf_state)

    def initial_state(self):
        return copy.copy(self.hard_state), copy.deepcopy(self.conf_state)

    def last_seq(self):
        """The seq of the newest record queued (an LMDB commit that reflects everything up to
        now waits until the WAL has synced it)."""
        return self.wal.next_seq - 1

    def save(self, entries, hard_state, loop=None, *, now=False):
        """Append entries (replacing a conflicting suffix) and store hard_state. now=True:
        write them durably in this thread before returning (None). Otherwise returns the
        asyncio future of loop that resolves once both are durable (None if nothing to do or
        loop is None)."""
        recs = []
        if entries:
            self.append(entries)
            recs.append((ENTRIES, list(entries), entries[-1].index))
        if hard_state is not None:
            self.hard_state = copy.copy(hard_state)
            recs.append((HARD_STATE, self.hard_state, 0))
        if now:
            if recs:
                self.wal.write_now(recs)
            return None
        fut = None
        for k, (rtype, obj, max_index) in enumerate(recs):
            last = k == len(recs) - 1
            _, fut = self.wal.append(rtype, obj, loop=loop if last else None,
                                     max_index=max_index)
        return fut

    def set_volatile_hard_state(self, hard_state):
        """A hard state whose only change is the commit index: kept in memory, not written
        (a restart takes commit = max(the WAL's, the store's applied index))."""
        self.hard_state = copy.copy(hard_state)

    def compact_to(self, meta):
        """Make meta (an applied, durably stored point) the compaction point; drops the entries
        up to it. Returns False if the log is already compacted past it."""
        if meta.index <= self.ents[0].index or meta.index > self.last_index():
            return False
        assert self.term(meta.index) == meta.term, (meta, self.term(meta.index))
        self.compact(meta.index)
        self.snap = Snapshot(b"", copy.deepcopy(meta))
        self.wal.append(COMPACT, self.snap.metadata)
        return True

    def install(self, meta, loop):
        """A snapshot from the leader: the log restarts after meta. Returns the WAL future."""
        self.apply_snapshot(Snapshot(b"", copy.deepcopy(meta)))
        self.conf_state = copy.deepcopy(meta.conf_state)
        _, fut = self.wal.append(INSTALL, self.snap.metadata, loop=loop)
        return fut
