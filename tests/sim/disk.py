"""A member's disk in the simulator: what survives a crash.

- storage: a MemoryStorage written only while handling a Ready (snapshot, entries, hard state),
  plus the snapshots the member takes itself. The RawNode reads its stable log from it, exactly
  as the real server reads the WAL; whatever the core held only in memory (its unstable tail,
  commit index beyond the persisted hard state, votes not yet written) is lost in a crash.
- sm: the state machine (the applied writes, in log order) and conf, the ConfState in force at
  sm.applied. Both are persisted atomically with each applied entry, as etcd persists its
  consistent index with the backend.

A restart either keeps sm (Config(applied=sm.applied)) or rebuilds it from the storage snapshot
and lets the core re-deliver the committed entries after it (Config(applied=snapshot index)).
"""
from __future__ import annotations

import copy
import json

from raftkv.raft.storage import MemoryStorage
from raftkv.raft.types import (
    ConfChangeSingle,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryType,
    HardState,
    encode_conf_change,
)


class StateMachine:
    """An append-only register log: the writes applied so far, with their log indexes."""

    __slots__ = ("applied", "writes", "index_of")

    def __init__(self, applied=0, writes=()):
        self.applied = applied
        self.writes = list(writes)  # (index, payload) in apply order
        self.index_of = {}
        for i, data in self.writes:
            self.index_of.setdefault(data, i)

    def apply_write(self, index, data):
        self.writes.append((index, data))
        self.index_of.setdefault(data, index)

    def encode(self):
        return json.dumps({"applied": self.applied,
                           "writes": [[i, d.hex()] for i, d in self.writes]}).encode()

    @classmethod
    def decode(cls, blob):
        if not blob:
            return cls()
        obj = json.loads(blob)
        return cls(obj["applied"], [(i, bytes.fromhex(d)) for i, d in obj["writes"]])


class DiskStorage(MemoryStorage):
    """MemoryStorage whose initial ConfState is the one persisted with the state machine."""

    def __init__(self):
        super().__init__()
        self.boot_conf = None

    def initial_state(self):
        hs, cs = super().initial_state()
        if self.boot_conf is not None:
            cs = copy.deepcopy(self.boot_conf)
        return hs, cs


def bootstrap_entries(voters):
    """The log a new cluster starts from, as etcd bootstraps it: one committed ConfChange
    entry per initial voter (term 1), so that a member added later and replaying the log from
    index 1 learns the initial configuration."""
    return [Entry(1, i, EntryType.CONF_CHANGE, encode_conf_change(
        ConfChangeV2(changes=[ConfChangeSingle(ConfChangeType.ADD_NODE, mid)])))
        for i, mid in enumerate(sorted(voters), start=1)]


class Disk:
    """voters: the initial configuration (bootstrapped); empty for a member added later."""

    def __init__(self, voters=()):
        self.storage = DiskStorage()
        self.sm = StateMachine()
        self.conf = ConfState()
        if voters:
            ents = bootstrap_entries(voters)
            self.storage.append(ents)
            self.storage.set_hard_state(HardState(term=1, commit=len(ents)))
            self.storage.snap.metadata.conf_state = ConfState(voters=sorted(voters))
            self.conf = ConfState(voters=sorted(voters))

    def persist(self, rd):
        """Ready step 2: snapshot, then entries, then hard state."""
        self.storage.persist(rd)

    def install_snapshot(self, snap):
        self.sm = StateMachine.decode(snap.data)
        assert self.sm.applied == snap.metadata.index, (self.sm.applied, snap.metadata.index)
        self.conf = copy.deepcopy(snap.metadata.conf_state)

    def take_snapshot(self, keep):
        """Snapshot the state machine at its applied index and compact, keeping `keep` entries
        before it. Returns the snapshot index, or 0 if there is nothing new to snapshot."""
        st = self.storage
        i = self.sm.applied
        if i <= st.snap.metadata.index or i > st.last_index():
            return 0
        st.create_snapshot(i, self.conf, self.sm.encode())
        ci = i - keep
        if ci >= st.first_index():
            st.compact(ci)
        return i

    def boot(self, rebuild):
        """Prepare for a restart; returns the applied index to give Config."""
        st = self.storage
        snap = st.snap
        if rebuild or self.sm.applied < snap.metadata.index:
            # Rebuild from the snapshot (or the snapshot is newer than the state machine: a
            # crash between persisting a received snapshot and installing it).
            if snap.metadata.index:
                self.install_snapshot(snap)
            else:
                self._reset_sm()
        st.boot_conf = copy.deepcopy(self.conf)
        return self.sm.applied

    def _reset_sm(self):
        self.sm = StateMachine()
        self.conf = copy.deepcopy(self.storage.snap.metadata.conf_state)
