"""Lease: a granted lease and its operations (python-etcd3's Lease, with async methods);
Session: a lease kept alive in the background (clientv3/concurrency's Session)."""
from __future__ import annotations

import asyncio

KEEP_ALIVE_MIN_S = 0.5  # keep_alive's shortest interval, for TTLs of a second or two


class Lease:
    """id; granted_ttl (also `ttl`, python-etcd3's attribute), the TTL the grant answered.
    remaining_ttl() and keys() ask the member each time (python-etcd3 has them as
    properties; here they are methods, async on AsyncClient); see also
    client.get_lease_info(id)."""

    def __init__(self, client, lease_id, ttl):
        self._client = client
        self.id = lease_id
        self.granted_ttl = ttl
        self.ttl = ttl

    def __repr__(self):
        return f"Lease(id={self.id:#x}, granted_ttl={self.granted_ttl})"

    async def refresh(self):
        """Keep the lease alive once; returns the TTL it was renewed to."""
        resp = await self._client.call("lease_keepalive", {"ID": self.id})
        return resp.get("TTL", 0)

    async def revoke(self):
        await self._client.call("lease_revoke", {"ID": self.id})

    async def remaining_ttl(self):
        resp = await self._client.call("lease_timetolive", {"ID": self.id})
        return resp.get("TTL", -1)

    async def keys(self):
        resp = await self._client.call("lease_timetolive", {"ID": self.id, "keys": True})
        return list(resp.get("keys", []))

    async def keep_alive(self, interval_s=None):
        """Refresh the lease every third of its TTL (etcd's clients refresh at a third) until
        it is gone (expired or revoked: the member answers TTL 0); then return. Run it as a
        task and cancel it to stop; a request error ends it with that error."""
        interval_s = interval_s or max(self.granted_ttl / 3.0, KEEP_ALIVE_MIN_S)
        while True:
            if await self.refresh() <= 0:
                return
            await asyncio.sleep(interval_s)


class Session:
    """clientv3/concurrency's Session: a lease kept alive in the background until close()
    (which revokes it) or until it is lost (`done` is then set). Locks and elections made
    with lease=session.lease stay held as long as the process runs, whatever the TTL; if the
    process dies, the lease expires after ttl seconds and their keys go with it.

        async with Session(client, ttl=60) as s:
            async with client.lock("name", lease=s.lease): ...
    """

    def __init__(self, client, ttl=60):
        assert ttl > 0
        self._client = client
        self.ttl = ttl
        self.lease = None
        self.done = asyncio.Event()  # set when the lease is gone or can no longer be renewed
        self._task = None

    async def start(self):
        self.lease = await self._client.lease(self.ttl)
        self._task = asyncio.get_running_loop().create_task(self.lease.keep_alive())
        self._task.add_done_callback(lambda _t: self.done.set())
        return self

    @property
    def expired(self):
        """The keep-alives found the lease gone (expired or revoked by someone else)."""
        t = self._task
        return t is not None and t.done() and not t.cancelled() and t.exception() is None

    async def close(self, revoke=True):
        """Stop the keep-alives and (revoke=True) revoke the lease, unless it is gone."""
        expired = self.expired
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if revoke and self.lease is not None and not expired:
            await self.lease.revoke()
        self.done.set()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()
