"""An etcd-style distributed mutex (clientv3/concurrency.Mutex), built on a lease and txns.

Acquire:
1. Grant a lease of `ttl` seconds (or use the lease given, as clientv3's Mutex uses its
   Session's); my key is b"/locks/<name>/<lease id in hex>" (the prefix b"/locks/" is an
   argument: etcdctl's lock uses none, so that its key is b"<name>/<lease id in hex>").
2. One txn: if create_revision(my key) == 0, put my key (attached to the lease); my revision
   is the create_revision of my key (from a read-back if it already existed).
3. The holder is the key under b"/locks/<name>/" with the smallest create_revision. If that is
   mine, the lock is held. Otherwise watch the key just before mine (the largest
   create_revision below mine) until it is deleted, then check again. Waiting only on the
   predecessor avoids a thundering herd; a waiter that dies loses its key with its lease.
A watch could miss a delete that happened just before it was opened, so each wait also ends
after WAIT_POLL_S and the check runs again.

Release deletes my key and revokes the lease (a lease that was given is its owner's to
revoke). If the holder stops refreshing (crash), the lease expires, the member deletes the key
and the next waiter gets the lock. A holder that must keep the lock for longer than ttl calls
refresh(), or holds it under a Session's lease (lease.py), which is kept alive for it.
"""
from __future__ import annotations

import asyncio
import time

from raftkv.client.errors import LockTimeout
from raftkv.client.types import to_bytes

LOCK_PREFIX = b"/locks/"
WAIT_POLL_S = 1.0  # upper bound on a wait, in case a delete slipped in before the watch


async def predecessor(client, prefix, revision):
    """(None, header revision) when no key under prefix was created before `revision`, else
    (the key created last before it, None): whose turn it is, for locks and elections."""
    resp = await client.get_response(prefix, prefix=True, keys_only=True)
    before = [kv for kv in resp.get("kvs", []) if kv.get("create_revision", 0) < revision]
    if not before:
        return None, resp.get("header", {}).get("revision", 0)
    return max(before, key=lambda kv: kv["create_revision"])["key"], None


async def wait_turn(client, prefix, revision, deadline=None, what="lock"):
    """Wait until every key under prefix created before `revision` is gone (etcd's
    waitDeletes), watching only the last one of them; returns the header revision at which
    none was left. Raises LockTimeout at `deadline` (time.monotonic(); None: never)."""
    assert revision > 0
    while True:
        waiting_on, header_revision = await predecessor(client, prefix, revision)
        if waiting_on is None:
            return header_revision
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise LockTimeout(f"{what} not acquired in time")
        await _wait_delete(client, waiting_on, remaining)


async def _wait_delete(client, key, remaining):
    events, cancel = await client.watch(key)
    try:
        if (await client.get(key))[1] is None:
            return
        wait_s = WAIT_POLL_S if remaining is None else min(WAIT_POLL_S, remaining)
        await asyncio.wait_for(_until_delete(events), wait_s)
    except asyncio.TimeoutError:
        pass
    finally:
        await cancel()


async def _until_delete(events):
    async for ev in events:
        if ev.type == "DELETE":
            return


class Lock:
    """lease: a Lease to hold the lock under (kept alive by its owner, e.g. a Session),
    instead of one of `ttl` seconds granted at acquire and revoked at release."""

    def __init__(self, client, name, ttl=60, *, prefix=LOCK_PREFIX, lease=None):
        assert ttl > 0
        self._client = client
        self.name = to_bytes(name)
        self.ttl = ttl
        self.prefix = to_bytes(prefix) + self.name + b"/"
        self._given_lease = lease
        self.key = None  # my key while acquiring or holding
        self.lease = None
        self.revision = 0  # create_revision of my key
        self.header_revision = 0  # the store's revision when I was seen to hold the lock

    async def acquire(self, timeout=None):
        """True when held; raises LockTimeout after `timeout` seconds (None: wait forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.lease = self._given_lease or await self._client.lease(self.ttl)
        self.key = self.prefix + b"%x" % self.lease.id
        t = self._client.transactions
        await self._client.transaction(
            [t.create(self.key) == 0], [t.put(self.key, b"", lease=self.lease)],
            [t.get(self.key)])
        _, meta = await self._client.get(self.key)
        assert meta is not None, "my lock key vanished: its lease expired"
        self.revision = meta.create_revision
        try:
            self.header_revision = await wait_turn(self._client, self.prefix, self.revision,
                                                   deadline, f"lock {self.name!r}")
            return True
        except LockTimeout:
            raise LockTimeout(f"lock {self.name!r} not acquired in {timeout} s") from None
        finally:
            if not self.header_revision:
                await self._give_up()

    async def _give_up(self):
        key, lease, self.lease, self.key = self.key, self.lease, None, None
        self.header_revision = 0
        if key is not None:
            await self._client.delete(key)
        if lease is not None and lease is not self._given_lease:
            await lease.revoke()

    async def release(self):
        if self.key is None:
            return False
        await self._give_up()
        return True

    async def refresh(self):
        """Keep the lock's lease alive once; returns the TTL it was renewed to. ValueError
        when the lock is not held (as python-etcd3's)."""
        if self.lease is None:
            raise ValueError(f"lock {self.name!r} is not held: acquire it first")
        return await self.lease.refresh()

    async def is_acquired(self):
        if self.key is None:
            return False
        return (await predecessor(self._client, self.prefix, self.revision))[0] is None and \
            (await self._client.get(self.key))[0] is not None

    async def __aenter__(self):
        await self.acquire()
        return self

    async def __aexit__(self, *exc):
        await self.release()
