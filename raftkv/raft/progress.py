"""The leader's view of each follower: Progress (probe / replicate / snapshot) and Inflights.

- PROBE: the leader does not know the follower's last index; it sends one append per heartbeat
  interval and waits for the answer (backtracking on rejects).
- REPLICATE: the follower is in sync; the leader streams appends optimistically, bounded by a
  window of in-flight messages (Inflights) and bytes.
- SNAPSHOT: the follower needs a snapshot; appends pause until it reports back.
"""
from __future__ import annotations

import enum


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """A bounded window of in-flight appends, each (last index, bytes), oldest first."""

    __slots__ = ("size", "bytes_max", "_buf", "_bytes")

    def __init__(self, size, bytes_max=0):
        assert size > 0
        self.size = size
        self.bytes_max = bytes_max  # 0 = unlimited
        self._buf = []
        self._bytes = 0

    def __len__(self):
        return len(self._buf)

    def add(self, index, nbytes):
        assert not self.full(), "inflights window is full"
        assert not self._buf or index > self._buf[-1][0], (index, self._buf[-1])
        self._buf.append((index, nbytes))
        self._bytes += nbytes

    def free_le(self, to):
        """Free every in-flight message whose last index is <= to."""
        n = 0
        while n < len(self._buf) and self._buf[n][0] <= to:
            self._bytes -= self._buf[n][1]
            n += 1
        if n:
            del self._buf[:n]

    def full(self):
        return len(self._buf) >= self.size or (0 < self.bytes_max <= self._bytes)

    def reset(self):
        self._buf = []
        self._bytes = 0


class Progress:
    __slots__ = ("match", "next", "state", "pending_snapshot", "recent_active",
                 "msg_app_flow_paused", "inflights", "is_learner")

    def __init__(self, next_index, inflights_max, inflight_bytes_max=0, is_learner=False):
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.msg_app_flow_paused = False
        self.inflights = Inflights(inflights_max, inflight_bytes_max)
        self.is_learner = is_learner

    def __repr__(self):
        return (f"Progress({self.state.name} match={self.match} next={self.next}"
                f"{' learner' if self.is_learner else ''})")

    def _reset_state(self, state):
        self.msg_app_flow_paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self):
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self):
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index):
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def sent_entries(self, last_index, nbytes):
        """Account for an append carrying entries up to last_index (nothing if empty)."""
        if self.state == ProgressState.REPLICATE:
            if last_index >= self.next:
                self.next = last_index + 1
                self.inflights.add(last_index, nbytes)
            self.msg_app_flow_paused = self.inflights.full()
        elif self.state == ProgressState.PROBE:
            self.msg_app_flow_paused = True

    def maybe_update(self, n):
        """An acknowledgement of index n; returns whether match advanced."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.msg_app_flow_paused = False
        self.next = max(self.next, n + 1)
        return updated

    def maybe_decr_to(self, rejected, match_hint):
        """A rejection of the append at index rejected; returns whether next moved back."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # stale
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False  # stale: not the probe we sent
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.msg_app_flow_paused = False
        return True

    def is_paused(self):
        if self.state == ProgressState.PROBE:
            return self.msg_app_flow_paused
        if self.state == ProgressState.REPLICATE:
            return self.msg_app_flow_paused
        return True


def committed_index(voters, match_of):
    """The highest index present on a majority of voters (Raft §5.3, §5.4)."""
    if not voters:
        return 2 ** 63 - 1  # an empty config commits everything (as in etcd)
    srt = sorted((match_of(v) for v in voters), reverse=True)
    return srt[len(srt) // 2]


def vote_result(voters, votes):
    """'won', 'lost' or 'pending' given votes {id: granted}."""
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    q = len(voters) // 2 + 1
    if granted >= q:
        return "won"
    if len(voters) - rejected < q:
        return "lost"
    return "pending"
