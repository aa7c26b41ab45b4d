"""The Storage protocol the Raft core reads its stable log through, and an in-memory one.

Storage holds what has been persisted: entries after the last snapshot, the hard state and the
snapshot itself. The core never writes to it; the caller does, while handling a Ready (persist
Ready.entries / hard_state / snapshot), then calls RawNode.advance().

Index layout (same as etcd-io/raft): position 0 of MemoryStorage.ents is a dummy entry holding
the snapshot's index and term, so term(first_index() - 1) is always answerable.
"""
from __future__ import annotations

import copy
from typing import Protocol

from raftkv.raft.errors import (
    CompactedError,
    SnapshotOutOfDateError,
    UnavailableError,
)
from raftkv.raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]: ...

    def term(self, i: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(ents, max_size):
    """The longest prefix of ents within max_size bytes, but always at least one entry."""
    if max_size is None or not ents:
        return ents
    size = ents[0].size()
    n = 1
    while n < len(ents):
        size += ents[n].size()
        if size > max_size:
            break
        n += 1
    return ents[:n]


class MemoryStorage:
    """Storage in memory: the simulator's disk image and the unit tests' storage."""

    def __init__(self):
        self.hard_state = HardState()
        self.snap = Snapshot()
        self.ents = [Entry(term=0, index=0)]

    def initial_state(self):
        return copy.copy(self.hard_state), copy.deepcopy(self.snap.metadata.conf_state)

    def set_hard_state(self, hs):
        self.hard_state = copy.copy(hs)

    def first_index(self):
        return self.ents[0].index + 1

    def last_index(self):
        return self.ents[0].index + len(self.ents) - 1

    def entries(self, lo, hi, max_size=None):
        offset = self.ents[0].index
        if lo <= offset:
            raise CompactedError(f"entries({lo}, {hi}): compacted up to {offset}")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries({lo}, {hi}): last index is {self.last_index()}")
        return limit_size(self.ents[lo - offset:hi - offset], max_size)

    def term(self, i):
        offset = self.ents[0].index
        if i < offset:
            raise CompactedError(f"term({i}): compacted up to {offset}")
        if i - offset >= len(self.ents):
            raise UnavailableError(f"term({i}): last index is {self.last_index()}")
        return self.ents[i - offset].term

    def snapshot(self):
        return self.snap

    def apply_snapshot(self, snap):
        """Replace the whole contents with snap (a follower installing a leader's snapshot)."""
        if self.snap.metadata.index >= snap.metadata.index:
            raise SnapshotOutOfDateError(
                f"snapshot at {snap.metadata.index} is not newer than {self.snap.metadata.index}")
        self.snap = snap
        self.ents = [Entry(term=snap.metadata.term, index=snap.metadata.index)]

    def create_snapshot(self, i, conf_state, data):
        """Record a snapshot of the state machine at applied index i (for later compaction)."""
        if i <= self.snap.metadata.index:
            raise SnapshotOutOfDateError(f"snapshot at {i} is not newer")
        assert i <= self.last_index(), (i, self.last_index())
        meta = SnapshotMetadata(conf_state=copy.deepcopy(conf_state), index=i, term=self.term(i))
        self.snap = Snapshot(data=data, metadata=meta)
        return self.snap

    def compact(self, compact_index):
        """Drop entries before compact_index; it becomes the dummy entry."""
        offset = self.ents[0].index
        if compact_index <= offset:
            raise CompactedError(f"compact({compact_index}): already compacted to {offset}")
        assert compact_index <= self.last_index(), (compact_index, self.last_index())
        i = compact_index - offset
        self.ents = [Entry(term=self.ents[i].term, index=compact_index)] + self.ents[i + 1:]

    def persist(self, rd):
        """Step 2 of the Ready contract: rd's snapshot, then its entries, then its hard state."""
        if rd.snapshot is not None:
            self.apply_snapshot(rd.snapshot)
        self.append(rd.entries)
        if rd.hard_state is not None:
            self.set_hard_state(rd.hard_state)

    def append(self, entries):
        """Persist entries; an entry at an existing index replaces that suffix."""
        if not entries:
            return
        first = self.first_index()
        last = entries[0].index + len(entries) - 1
        if last < first:
            return
        if first > entries[0].index:
            entries = entries[first - entries[0].index:]
        offset = entries[0].index - self.ents[0].index
        assert offset <= len(self.ents), ("gap in log", entries[0].index, self.last_index())
        # In place: the log since the compaction point can hold thousands of entries, and
        # rebuilding the list on every append cost a copy of all of them per Ready.
        del self.ents[offset:]
        self.ents.extend(entries)
