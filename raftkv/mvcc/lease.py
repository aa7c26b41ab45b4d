"""Leases: the persistent lease table (in KVStore) and the leader-local Lessor.

The table (sub-db "lease": 8-byte big-endian ID -> msgpack [TTL, remaining_TTL]) changes only
through the log: lease_grant, lease_revoke (deletes the attached keys in one revision),
lease_checkpoint (persists a remaining TTL). Attached keys are rebuilt from the kvs at open.

The Lessor tracks expiry on the leader only, with an injected clock (seconds, monotonic):
  promote(now)  on becoming leader: every lease gets a fresh deadline (remaining TTL if
                checkpointed, else its TTL), so nothing expires early after a leader change;
  demote()      on losing leadership: no deadlines, nothing expires;
  renew(ID)     keepalive (leader only): deadline = now + TTL, returns TTL (0: unknown lease);
  expired(now)  IDs whose deadline passed: the leader proposes lease_revoke for them;
  checkpoints(now)  [{ID, remaining_TTL}] for a lease_checkpoint proposal;
  time_to_live(ID, keys) and leases() answer the read-only RPCs.
"""
from __future__ import annotations

import math
import time

from raftkv.errors import RaftkvError

MAX_TTL = 9_000_000_000  # etcd lease.MaxLeaseTTL (seconds)
MIN_TTL_DEFAULT = 2  # ceil(1.5 x election timeout) with etcd's default 1 s election timeout
_ID_MASK = (1 << 63) - 1


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
    def __init__(self, store, clock=time.monotonic, call=None):
        """call(fn, *args): how the store's commit notifications reach the lessor, e.g. an
        event loop's call_soon_threadsafe when the store commits in another thread (the
        default runs them directly, in the committing thread)."""
        self.store = store
        self.clock = clock
        self.primary = False
        self._deadline = {}  # lease ID -> expiry time (leader only)
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
        if self.primary:
            now = self.clock()
            for lid in granted:
                lease = self.store.lease(lid)
                if lease is not None:
                    self._deadline[lid] = now + lease.ttl

    def promote(self, now=None):
        now = self._now(now)
        self.primary = True
        self._deadline = {}
        for lid in self.store.lease_ids():
            lease = self.store.lease(lid)
            if lease is not None:
                self._deadline[lid] = now + (lease.remaining or lease.ttl)

    def demote(self):
        self.primary = False
        self._deadline = {}

    def renew(self, lease_id, now=None):
        """Keepalive: the lease's TTL, or 0 for an unknown lease (etcd answers TTL=0)."""
        if not self.primary:
            raise RaftkvError("NOT_LEADER")
        lease = self.store.lease(lease_id)
        if lease is None:
            return 0
        self._deadline[lease_id] = self._now(now) + lease.ttl
        return lease.ttl

    def remaining(self, lease_id, now=None):
        lease = self.store.lease(lease_id)
        if lease is None:
            return -1
        deadline = self._deadline.get(lease_id)
        if deadline is None:
            return lease.remaining or lease.ttl
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

    def checkpoints(self, now=None):
        now = self._now(now)
        return [{"ID": lid, "remaining_TTL": max(1, math.ceil(d - now))}
                for lid, d in sorted(self._deadline.items())]
