"""Leader election over KV, Lease and Watch (clientv3/concurrency.Election), keys compatible
with etcd's: an Election here and one in a Go program (or `etcdctl elect`) on the same name
take part in the same election, on raftkv or on etcd.

Each candidate holds one key, b"<name>/<lease id in hex>", attached to its lease and holding
its proposal as value; the leader is the key under b"<name>/" with the smallest
create_revision.

campaign(value):
1. One txn: if create_revision(my key) == 0, put my key with value (on the lease); else read
   it (a campaign again on the same lease keeps its place, and proclaims the value if it
   differs). My revision is the txn's revision, or the create_revision of the key.
2. Wait until every key under the prefix created before mine is gone (lock.wait_turn: watch
   the last of them until it is deleted, then look again): I am the leader.
proclaim(value) puts a new value if my key still has my revision (else ElectionNotLeader);
resign() deletes it the same way. A leader that dies loses its key with its lease, and the
next candidate in create_revision order takes over.

observe() yields the leader as a range response ({"header", "kvs": [kv]}), as etcd's Observe
sends a GetResponse: the current leader (or the first key put when there is none), each
new value it proclaims, and each next leader once it is gone.
"""
from __future__ import annotations

import time

from raftkv.client.errors import ConnectionLost, ElectionNotLeader
from raftkv.client.lock import wait_turn
from raftkv.client.types import to_bytes


def _kv_of(ev):
    """A watch Event as the KeyValue dict a range response holds."""
    return {"key": ev.key, "create_revision": ev.create_revision,
            "mod_revision": ev.mod_revision, "version": ev.version, "value": ev.value,
            "lease": ev.lease_id}


class Election:
    """lease: the Lease to campaign under (kept alive by its owner, e.g. a Session), instead
    of one of `ttl` seconds granted at campaign and revoked at resign."""

    def __init__(self, client, name, ttl=60, *, lease=None):
        assert ttl > 0
        self._client = client
        self.name = to_bytes(name)
        self.ttl = ttl
        self.prefix = self.name + b"/"
        self._given_lease = lease
        self.lease = None
        self.key = None  # my key once campaigning
        self.revision = 0  # create_revision of my key
        self.header_revision = 0  # the store's revision when I was seen to lead

    async def campaign(self, value, timeout=None):
        """Put my proposal and wait until I lead; True then. timeout (seconds): raise
        LockTimeout and withdraw if not elected by then (None: wait as long as it takes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        value = to_bytes(value)
        self.lease = self._given_lease or await self._client.lease(self.ttl)
        self.key = self.prefix + b"%x" % self.lease.id
        t = self._client.transactions
        ok, responses = await self._client.transaction(
            [t.create(self.key) == 0], [t.put(self.key, value, lease=self.lease)],
            [t.get(self.key)])
        if ok:
            self.revision = (await self._client.get(self.key))[1].create_revision
        else:
            old_value, meta = responses[0][0]
            self.revision = meta.create_revision
            if old_value != value:
                await self.proclaim(value)
        try:
            self.header_revision = await wait_turn(self._client, self.prefix, self.revision,
                                                   deadline, f"election {self.name!r}")
            return True
        finally:
            if not self.header_revision:
                await self.resign()

    async def proclaim(self, value):
        """Give the leader's key a new value without a new election."""
        if self.key is None:
            raise ElectionNotLeader("election: not leader")
        t = self._client.transactions
        ok, _ = await self._client.transaction(
            [t.create(self.key) == self.revision],
            [t.put(self.key, to_bytes(value), lease=self.lease)], [])
        if not ok:
            self.key = None
            raise ElectionNotLeader("election: not leader")

    async def resign(self):
        """Give up leadership (or the candidacy): delete my key if it is still mine, and
        revoke the lease if this Election granted it. False if there was nothing to do."""
        key, lease, self.key, self.lease = self.key, self.lease, None, None
        self.header_revision = 0
        if key is None:
            return False
        t = self._client.transactions
        await self._client.transaction([t.create(key) == self.revision], [t.delete(key)], [])
        if lease is not None and lease is not self._given_lease:
            await lease.revoke()
        return True

    async def leader(self):
        """The leader's range response ({"header", "kvs": [kv], "count"}) or None."""
        resp = await self._client.get_response(self.prefix, prefix=True)
        kvs = resp.get("kvs", [])
        if not kvs:
            return None
        return dict(resp, kvs=[min(kvs, key=lambda kv: kv["create_revision"])])

    async def observe(self):
        """An async iterator of the leader's range responses, as etcd's Observe (see the
        module docstring); it ends only when the caller stops iterating."""
        while True:
            resp = await self._client.get_response(self.prefix, prefix=True)
            header, kvs = resp.get("header", {}), resp.get("kvs", [])
            if kvs:
                kv = min(kvs, key=lambda kv: kv["create_revision"])
            else:  # no leader: wait for the first key put under the prefix
                kv = await self._first_put(header.get("revision", 0))
                header = dict(header, revision=kv["mod_revision"])
            yield {"header": header, "kvs": [kv]}
            events, cancel = await self._client.watch(kv["key"],
                                                      start_revision=header["revision"] + 1)
            try:
                async for ev in events:
                    if ev.type == "DELETE":
                        break
                    yield dict(resp, header=dict(header, revision=ev.mod_revision),
                               kvs=[_kv_of(ev)])
            finally:
                await cancel()

    async def _first_put(self, revision):
        events, cancel = await self._client.watch(self.prefix, prefix=True,
                                                  start_revision=revision)
        try:
            async for ev in events:
                if ev.type == "PUT":
                    return _kv_of(ev)
        finally:
            await cancel()
        raise ConnectionLost("election: the watch ended")
