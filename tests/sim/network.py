"""The simulated network: drops, delays (in ticks), reorders, duplicates and partitions.

Everything random comes from the simulator's one random.Random, so a seed replays exactly.
Messages are copied on delivery, as a real transport would serialize them: the core mutates
proposal entries it receives (it assigns term and index), so two deliveries of one message must
never share Entry objects, nor may sender and receiver.
"""
from __future__ import annotations

import heapq

from raftkv.raft.types import Entry, Message


def copy_message(m):
    """A deep-enough copy of m (entries are copied; snapshots are never mutated by the core)."""
    return Message(m.type, to=m.to, frm=m.frm, term=m.term, log_term=m.log_term, index=m.index,
                   entries=[Entry(e.term, e.index, e.type, e.data) for e in m.entries],
                   commit=m.commit, snapshot=m.snapshot, reject=m.reject,
                   reject_hint=m.reject_hint, context=m.context)


class Network:
    """In-flight messages in a heap of (deliver_tick, seq, message)."""

    def __init__(self, rng):
        self.rng = rng
        self.heap = []
        self.seq = 0
        self.drop_p = 0.0
        self.dup_p = 0.0
        self.delay_max = 0
        self.blocked = set()  # directed (src, dst) pairs that cannot talk
        self.sent = 0
        self.dropped = 0
        self.delivered = 0
        self.on_drop = None  # called with each dropped message (the sim reports MsgSnap loss)

    def set_faults(self, drop_p, dup_p, delay_max):
        self.drop_p, self.dup_p, self.delay_max = drop_p, dup_p, delay_max

    def heal(self):
        self.blocked = set()

    def partition(self, group_a, group_b, symmetric=True):
        """Cut group_a -> group_b (and back if symmetric)."""
        for a in group_a:
            for b in group_b:
                self.blocked.add((a, b))
                if symmetric:
                    self.blocked.add((b, a))

    def reachable(self, src, dst):
        return (src, dst) not in self.blocked

    def send(self, now, m):
        """Queue m; returns False if the network dropped it right away."""
        self.sent += 1
        rng = self.rng
        if not self.reachable(m.frm, m.to) or (self.drop_p and rng.random() < self.drop_p):
            self._drop(m)
            return False
        copies = 2 if self.dup_p and rng.random() < self.dup_p else 1
        for _ in range(copies):
            delay = rng.randint(0, self.delay_max) if self.delay_max else 0
            self.seq += 1
            heapq.heappush(self.heap, (now + delay, self.seq, m))
        return True

    def _drop(self, m):
        self.dropped += 1
        if self.on_drop is not None:
            self.on_drop(m)

    def due(self, now):
        """Pop the next message due at or before now (a copy), or None."""
        while self.heap and self.heap[0][0] <= now:
            _, _, m = heapq.heappop(self.heap)
            if not self.reachable(m.frm, m.to):
                self._drop(m)  # cut while in flight
                continue
            self.delivered += 1
            return copy_message(m)
        return None

    def pending(self):
        return len(self.heap)
