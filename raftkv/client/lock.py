"""An etcd-style distributed mutex (clientv3/concurrency.Mutex), built on a lease and txns.

Acquire:
1. Grant a lease of `ttl` seconds; my key is b"/locks/<name>/<lease id in hex>".
2. One txn: if create_revision(my key) == 0, put my key (attached to the lease); my revision
   is the create_revision of my key (from a read-back if it already existed).
3. The holder is the key under b"/locks/<name>/" with the smallest create_revision. If that is
   mine, the lock is held. Otherwise watch the key just before mine (the largest
   create_revision below mine) until it is deleted, then check again. Waiting only on the
   predecessor avoids a thundering herd; a waiter that dies loses its key with its lease.
A watch could miss a delete that happened just before it was opened, so each wait also ends
after WAIT_POLL_S and the check runs again.

Release deletes my key and revokes the lease. If the holder stops refreshing (crash), the lease
expires, the member deletes the key and the next waiter gets the lock. A holder that must
keep the lock for longer than ttl calls refresh().
"""
from __future__ import annotations

import asyncio
import time

from raftkv.client.errors import LockTimeout
from raftkv.client.types import to_bytes

LOCK_PREFIX = b"/locks/"
WAIT_POLL_S = 1.0  # upper bound on a wait, in case a delete slipped in before the watch


class Lock:
    def __init__(self, client, name, ttl=60):
        assert ttl > 0
        self._client = client
        self.name = to_bytes(name)
        self.ttl = ttl
        self.prefix = LOCK_PREFIX + self.name + b"/"
        self.key = None  # my key while acquiring or holding
        self.lease = None
        self.revision = 0  # create_revision of my key

    async def acquire(self, timeout=None):
        """True when held; raises LockTimeout after `timeout` seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.lease = await self._client.lease(self.ttl)
        self.key = self.prefix + b"%x" % self.lease.id
        t = self._client.transactions
        await self._client.transaction(
            [t.create(self.key) == 0], [t.put(self.key, b"", lease=self.lease)],
            [t.get(self.key)])
        _, meta = await self._client.get(self.key)
        assert meta is not None, "my lock key vanished: its lease expired"
        self.revision = meta.create_revision
        try:
            while True:
                waiting_on = await self._predecessor()
                if waiting_on is None:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise LockTimeout(f"lock {self.name!r} not acquired in {timeout} s")
                await self._wait_delete(waiting_on, remaining)
        except BaseException:
            await self._give_up()
            raise

    async def _predecessor(self):
        """None if I hold the lock, else the key just before mine in create_revision order."""
        holders = await self._client.get_prefix(self.prefix)
        before = [m for _, m in holders if m.create_revision < self.revision]
        if not before:
            return None
        return max(before, key=lambda m: m.create_revision).key

    async def _wait_delete(self, key, remaining):
        events, cancel = await self._client.watch(key)
        try:
            if (await self._client.get(key))[1] is None:
                return
            wait_s = WAIT_POLL_S if remaining is None else min(WAIT_POLL_S, remaining)
            await asyncio.wait_for(self._until_delete(events), wait_s)
        except asyncio.TimeoutError:
            pass
        finally:
            await cancel()

    @staticmethod
    async def _until_delete(events):
        async for ev in events:
            if ev.type == "DELETE":
                return

    async def _give_up(self):
        key, lease, self.lease, self.key = self.key, self.lease, None, None
        if key is not None:
            await self._client.delete(key)
        if lease is not None:
            await lease.revoke()

    async def release(self):
        if self.key is None:
            return False
        await self._give_up()
        return True

    async def refresh(self):
        assert self.lease is not None, "not held"
        return await self.lease.refresh()

    async def is_acquired(self):
        if self.key is None:
            return False
        return await self._predecessor() is None and (await self._client.get(self.key))[0] \
            is not None

    async def __aenter__(self):
        await self.acquire()
        return self

    async def __aexit__(self, *exc):
        await self.release()
