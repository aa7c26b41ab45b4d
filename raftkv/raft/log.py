"""RaftLog: the stable log (Storage) plus the unstable tail not yet persisted.

Cursors and their invariants (checked by check_invariants()):

    applied  <=  committed  <=  last_index,   first_index - 1  <=  committed

(applied trails first_index - 1 only between restoring a snapshot and the caller applying it.)

- unstable: entries (and possibly a snapshot) appended by this member but not yet persisted by
  the caller; they are handed out in Ready.entries and become stable at advance().
- committed: the highest index known to be on a quorum's stable storage.
- applied: the highest index handed to the application in Ready.committed_entries.
"""
from __future__ import annotations

from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.storage import limit_size


class Unstable:
    """Entries at indexes offset, offset+1, ... and an optional incoming snapshot."""

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset):
        self.snapshot = None
        self.entries = []
        self.offset = offset

    def maybe_first_index(self):
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self):
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i):
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i, t):
        """Entries up to i (of term t) are persisted; a mismatch means they were replaced."""
        term = self.maybe_term(i)
        if term is None or term != t or i < self.offset:
            return
        self.entries = self.entries[i + 1 - self.offset:]
        self.offset = i + 1

    def stable_snap_to(self, i):
        if self.snapshot is not None and self.snapshot.metadata.index == i:
            self.snapshot = None

    def restore(self, snap):
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents):
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries = self.entries + list(ents)
        elif after <= self.offset:
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[:after - self.offset] + list(ents)

    def slice(self, lo, hi):
        assert self.offset <= lo <= hi <= self.offset + len(self.entries), (lo, hi, self.offset)
        return self.entries[lo - self.offset:hi - self.offset]


class RaftLog:
    def __init__(self, storage, max_applying_bytes=64 << 20):
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        self.committed = first - 1
        self.applied = first - 1
        self.max_applying_bytes = max_applying_bytes

    def __repr__(self):
        return (f"RaftLog(committed={self.committed}, applied={self.applied}, "
                f"unstable.offset={self.unstable.offset}, len={len(self.unstable.entries)})")

    # ---- indexes and terms ----
    def first_index(self):
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self):
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i):
        """The term of entry i; raises CompactedError / UnavailableError outside the log."""
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        dummy = self.first_index() - 1
        if i < dummy:
            raise CompactedError(f"term({i}) below {dummy}")
        if i > self.last_index():
            raise UnavailableError(f"term({i}) beyond {self.last_index()}")
        return self.storage.term(i)

    def term_or_zero(self, i):
        try:
            return self.term(i)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self):
        return self.term(self.last_index())

    def match_term(self, i, t):
        try:
            return self.term(i) == t
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, lasti, term):
        """Raft §5.4.1: a candidate's log is at least as up to date as ours."""
        lt = self.last_term()
        return term > lt or (term == lt and lasti >= self.last_index())

    # ---- appending ----
    def maybe_append(self, index, log_term, committed, ents):
        """Follower side of AppendEntries (Figure 2, receiver rules 2-5).

        Returns the new last index, or None if the consistency check at (index, log_term) fails.
        """
        if not self.match_term(index, log_term):
            return None
        lastnewi = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            assert ci > self.committed, f"entry {ci} conflicts with committed {self.committed}"
            self.append(ents[ci - (index + 1):])
        self.commit_to(min(committed, lastnewi))
        return lastnewi

    def append(self, ents):
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        assert after >= self.committed, f"after {after} is below committed {self.committed}"
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def find_conflict(self, ents):
        """The index of the first entry whose term differs from ours, or of the first new one."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index, term):
        """The largest index <= index whose term is <= term (fast backtracking, etcd §10.2)."""
        while index > 0:
            try:
                t = self.term(index)
            except CompactedError:
                return index, 0
            except UnavailableError:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # ---- commit / apply ----
    def commit_to(self, tocommit):
        if self.committed < tocommit:
            assert tocommit <= self.last_index(), (
                f"commit {tocommit} out of range [last {self.last_index()}]")
            self.committed = tocommit

    def maybe_commit(self, max_index, term):
        """Commit max_index only if its entry has the leader's current term (Figure 8 rule)."""
        if max_index > self.committed and self.term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def applied_to(self, i):
        if i == 0:
            return
        assert self.applied <= i <= self.committed, (self.applied, i, self.committed)
        self.applied = i

    def has_next_committed_ents(self):
        return self.committed > self.applied and self.unstable.snapshot is None

    def next_committed_ents(self):
        if not self.has_next_committed_ents():
            return []
        lo, hi = max(self.applied + 1, self.first_index()), self.committed + 1
        return self.slice(lo, hi, self.max_applying_bytes)

    # ---- reading ----
    def slice(self, lo, hi, max_size=None):
        """Entries [lo, hi), within max_size bytes but at least one."""
        if lo == hi:
            return []
        first = self.first_index()
        if lo < first:
            raise CompactedError(f"slice({lo}, {hi}) below first index {first}")
        assert hi <= self.last_index() + 1, (lo, hi, self.last_index())
        ents = []
        uoff = self.unstable.offset
        if lo < uoff:
            ents = self.storage.entries(lo, min(hi, uoff), max_size)
            if len(ents) < min(hi, uoff) - lo:
                return ents  # storage hit max_size
        if hi > uoff:
            ents = ents + self.unstable.slice(max(lo, uoff), hi)
        return limit_size(ents, max_size)

    def entries_from(self, i, max_size=None):
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_size)

    def snapshot(self):
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snap):
        self.committed = snap.metadata.index
        self.unstable.restore(snap)

    def stable_to(self, i, t):
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i):
        self.unstable.stable_snap_to(i)

    def check_invariants(self):
        first, last = self.first_index(), self.last_index()
        assert self.applied <= self.committed <= last, (self.applied, self.committed, last)
        assert first - 1 <= self.committed, (first, self.committed)
