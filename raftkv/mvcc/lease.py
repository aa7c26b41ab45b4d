"""Leases: the persistent lease table (in KVStore) and the leader-local Lessor.

The table (sub-db "lease": 8-byte big-endian ID -> msgpack [TTL, remaining_TTL]) changes only
through the log: lease_grant, lease_revoke (deletes the attached keys in one revision),
lease_checkpoint (persists a remaining TTL; 0 clears it). Attached keys are rebuilt from the
kvs at open.

The Lessor tracks expiry on the leader only, with an injected clock (seconds, monotonic):
  promote(now)  on becoming leader: every lease gets a fresh deadline: its TTL, or with
                checkpointing on its checkpointed remaining TTL if it has one (etcd's
                --experimental-enable-lease-checkpoint), so nothing expires early after a
                leader change, and a lease does not live forever across frequent ones;
  demote()      on losing leadership: no deadlines, nothing expires, no checkpoints due;
  renew(ID)     keepalive (leader only): deadline = now + TTL, returns TTL (0: unknown lease);
                a checkpointed remaining TTL is cleared through the log (the checkpointer);
  expired(now)  IDs whose deadline passed: the leader proposes lease_revoke for them;
  checkpoint_batches(now)  the due checkpoints, [[{ID, remaining_TTL}, ...], ...], one
                lease_checkpoint proposal per batch (see "Checkpoints" below);
  time_to_live(ID, keys) and leases() answer the read-only RPCs.

Checkpoints (etcd's lessor: checkpointScheduledLeases, scheduleCheckpointIfNeeded). With a
checkpoint interval (0: off), the primary schedules a checkpoint `interval` after it starts
tracking a lease (grant, promote, renew) if the lease's TTL (its checkpointed remaining TTL
after a checkpoint) is longer than the interval; when due, it records the lease's remaining
TTL (rounded up to whole seconds) and schedules the next one while that is still longer than
the interval. A lease renewed since its last checkpoint is not checkpointed (its remaining TTL
is its TTL) but stays scheduled, so it is checkpointed again once keep-alives stop. At most
`rate` checkpoints leave per call (etcd's leaseCheckpointRate, per second; the member calls
twice a second with half of it), in batches of at most `batch` (maxLeaseCheckpointBatchSize).
A leader change therefore extends a lease by at most about one interval (plus rounding)
instead of giving it its full TTL again.
"""
from __future__ import annotations

import heapq
import math
import time

from raftkv.errors import RaftkvError

MAX_TTL = 9_000_000_000  # etcd lease.MaxLeaseTTL (seconds)
MIN_TTL_DEFAULT = 2  # ceil(1.5 x election timeout) with etcd's default 1 s election timeout
_ID_MASK = (1 << 63) - 1
# etcd's lessor (lease/lessor.go) checkpoint limits:
CHECKPOINT_INTERVAL_S = 300.0  # defaultLeaseCheckpointInterval
CHECKPOINT_RATE = 1000  # leaseCheckpointRate: checkpoints recorded per second at most
CHECKPOINT_BATCH_MAX = 1000  # maxLeaseCheckpointBatchSize: checkpoints per log entry


class Lease:
    __slots__ = ("id", "ttl", "remaining", "keys")

    def __init__(self, lease_id, ttl, remaining):
        self.id = lease_id
        self.ttl = ttl
        self.remaining = remaining  # checkpointed remaining TTL; 0: none
        self.keys = set()


def derive_id(index, revision, count, existing):
    """A lease ID for a grant with ID 0, chosen deterministically (every member applies the
    same entry). etcd's leader picks the ID before proposing; a server should do that too."""
    lid = ((index * 0x9E3779B97F4A7C15) ^ (revision << 20) ^ count) & _ID_MASK or 1
    while lid in existing:
        lid = (lid + 1) & _ID_MASK or 1
    return lid


class Lessor:
    def __init__(self, store, clock=time.monotonic, call=None, checkpoint_interval=0.0,
                 checkpointer=None):
        """call(fn, *args): how the store's commit notifications reach the lessor, e.g. an
        event loop's call_soon_threadsafe when the store commits in another thread (the
        default runs them directly, in the committing thread).

        checkpoint_interval: seconds between two checkpoints of a lease (etcd's 5 minutes,
        CHECKPOINT_INTERVAL_S); 0 turns checkpointing off: a new leader gives every lease its
        full TTL. checkpointer(checkpoints): proposes one lease_checkpoint with these
        [{ID, remaining_TTL}] (renew uses it to clear a checkpoint; None: nothing to clear
        with, as etcd without the flag)."""
        assert checkpoint_interval >= 0, checkpoint_interval
        self.store = store
        self.clock = clock
        self.checkpoint_interval = checkpoint_interval
        self.checkpointer = checkpointer
        self.primary = False
        self._deadline = {}  # lease ID -> expiry time (leader only)
        self._cp_due = {}  # lease ID -> when its next checkpoint is due (leader only)
        self._cp_heap = []  # (due, lease ID); entries not matching _cp_due are stale
        # Leases with a checkpoint proposed by this lessor and maybe not applied yet: a renew
        # clears it even though the store shows none (it may be applied after the renew).
        self._cp_sent = set()
        if call is None:
            store.add_lease_listener(self._on_commit)
        else:
            store.add_lease_listener(lambda granted, revoked:
                                     call(self._on_commit, granted, revoked))

    def _now(self, now):
        return self.clock() if now is None else now

    def _on_commit(self, granted, revoked):
        for lid in revoked:
            self._deadline.pop(lid, None)
            self._cp_due.pop(lid, None)
            self._cp_sent.discard(lid)
        if self.primary:
            now = self.clock()
            for lid in granted:
                lease = self.store.lease(lid)
                if lease is not None:
                    self._deadline[lid] = now + lease.ttl
                    self._schedule(lid, lease.ttl, now)

    def _start_ttl(self, lease):
        """The seconds a lease gets when a leader starts tracking it (promote)."""
        if self.checkpoint_interval and lease.remaining > 0:
            return lease.remaining
        return lease.ttl

    def _schedule(self, lid, ttl, now):
        """Schedule lid's next checkpoint if it has a TTL worth checkpointing (etcd:
        RemainingTTL() > interval); an earlier scheduled one stays."""
        if not self.checkpoint_interval or ttl <= self.checkpoint_interval or \
                lid in self._cp_due:
            return
        due = now + self.checkpoint_interval
        self._cp_due[lid] = due
        heapq.heappush(self._cp_heap, (due, lid))

    def promote(self, now=None):
        now = self._now(now)
        self.primary = True
        self._deadline = {}
        self._cp_due, self._cp_heap = {}, []
        for lid in self.store.lease_ids():
            lease = self.store.lease(lid)
            if lease is not None:
                ttl = self._start_ttl(lease)
                self._deadline[lid] = now + ttl
                # Every lease, not only those granted or checkpointed during this term (etcd
                # 3.4.0 scheduled none here, so checkpoints stopped after a leader change).
                self._schedule(lid, ttl, now)

    def demote(self):
        self.primary = False
        self._deadline = {}
        self._cp_due, self._cp_heap = {}, []

    def renew(self, lease_id, now=None):
        """Keepalive: the lease's TTL, or 0 for an unknown lease (etcd answers TTL=0)."""
        if not self.primary:
            raise RaftkvError("NOT_LEADER")
        lease = self.store.lease(lease_id)
        if lease is None:
            return 0
        now = self._now(now)
        self._deadline[lease_id] = now + lease.ttl
        # A checkpointed remaining TTL would give the renewed lease less than its TTL at the
        # next leader change: clear it through the log (only when one is set or on its way,
        # so keep-alives add at most one entry per checkpoint).
        if self.checkpointer is not None and (lease.remaining > 0 or lease_id in self._cp_sent):
            self._cp_sent.discard(lease_id)
            self.checkpointer([{"ID": lease_id, "remaining_TTL": 0}])
        self._schedule(lease_id, lease.ttl, now)
        return lease.ttl

    def remaining(self, lease_id, now=None):
        lease = self.store.lease(lease_id)
        if lease is None:
            return -1
        deadline = self._deadline.get(lease_id)
        if deadline is None:
            return self._start_ttl(lease)
        return max(0, int(deadline - self._now(now)))  # etcd truncates

    def time_to_live(self, lease_id, keys=False, now=None):
        """{ID, TTL (remaining, -1 if unknown), grantedTTL, keys}."""
        lease = self.store.lease(lease_id)
        if lease is None:
            return {"ID": lease_id, "TTL": -1, "grantedTTL": 0, "keys": []}
        out = {"ID": lease_id, "TTL": self.remaining(lease_id, now), "grantedTTL": lease.ttl,
               "keys": sorted(lease.keys) if keys else []}
        return out

    def leases(self):
        return self.store.lease_ids()

    def expired(self, now=None, limit=0):
        """Lease IDs past their deadline (leader only), earliest first, at most limit."""
        if not self.primary:
            return []
        now = self._now(now)
        due = sorted((d, lid) for lid, d in self._deadline.items() if d <= now)
        ids = [lid for _, lid in due]
        return ids[:limit] if limit else ids

    def checkpoints(self, now=None, limit=CHECKPOINT_RATE // 2):
        """The due checkpoints (leader only), earliest first, at most limit:
        [{ID, remaining_TTL}]; each lease's next one is scheduled (see the module doc)."""
        if not self.primary or not self.checkpoint_interval:
            return []
        now = self._now(now)
        out = []
        heap = self._cp_heap
        while heap and len(out) < limit and heap[0][0] <= now:
            due, lid = heapq.heappop(heap)
            if self._cp_due.get(lid) != due:
                continue  # stale: rescheduled or dropped
            del self._cp_due[lid]
            lease, deadline = self.store.lease(lid), self._deadline.get(lid)
            if lease is None or deadline is None or deadline <= now:
                continue  # gone, or expired: its revoke is the leader's business
            remaining = math.ceil(deadline - now)
            if remaining >= lease.ttl:
                # Renewed since: nothing to record, but keep watching it (etcd dropped such a
                # lease from its schedule, so it lived on across leader changes once
                # keep-alives stopped).
                self._schedule(lid, lease.ttl, now)
                continue
            assert remaining > 0, (lid, deadline, now)  # Invariant: 0 < remaining < TTL
            out.append({"ID": lid, "remaining_TTL": remaining})
            self._cp_sent.add(lid)
            self._schedule(lid, remaining, now)
        return out

    def checkpoint_batches(self, now=None, rate=CHECKPOINT_RATE // 2,
                           batch=CHECKPOINT_BATCH_MAX):
        """checkpoints(now, rate) cut into lists of at most batch: one proposal each."""
        assert batch > 0, batch
        cps = self.checkpoints(now, rate)
        return [cps[i:i + batch] for i in range(0, len(cps), batch)]
