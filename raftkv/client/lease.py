"""Lease: a granted lease and its operations (python-etcd3's Lease, with async methods)."""
from __future__ import annotations


class Lease:
    def __init__(self, client, lease_id, ttl):
        self._client = client
        self.id = lease_id
        self.granted_ttl = ttl

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
