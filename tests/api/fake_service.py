"""An in-memory stand-in for the member's service object (docs/INTERNAL_API.md §5).

Front-end tests (native protocol, gRPC) run against it so they need neither Raft nor LMDB. It
keeps etcd's shapes and main errors but no history: reads at a past revision are refused.
End-to-end behaviour is tested against real clusters in tests/cluster/.
"""
from __future__ import annotations

import asyncio

from raftkv.errors import RaftkvError


def _in_range(key, start, end):
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


class FakeService:
    def __init__(self):
        self.timeout_s = 7.0  # the member's --request-timeout (its default)
        self.progress_interval = None  # seconds between progress notifications
        self.kvs = {}  # key -> KeyValue dict
        self.revision = 1
        self.leases = {}  # ID -> TTL
        self._watchers = []  # (key, range_end, queue)
        self.calls = []

    async def call(self, op, body):
        self.calls.append((op, body))
        handler = getattr(self, "_op_" + op, None)
        if handler is None:
            raise RaftkvError("UNKNOWN_OP", f"raftkv: unknown operation {op!r}")
        return handler(body)

    def _header(self):
        return {"revision": self.revision, "cluster_id": 1, "member_id": 1, "raft_term": 2}

    def _op_header(self, body):
        return {"header": self._header()}

    def _op_watch_check(self, body):  # auth is off here: every watch is permitted
        return {}

    # Auth: only what the gRPC mapping tests need (real behaviour: real members).
    def _op_auth_status(self, body):
        return {"header": self._header(), "enabled": False, "authRevision": 0}

    def _op_user_add(self, body):
        return {"header": self._header()}

    _op_role_grant_permission = _op_user_add

    def _op_role_get(self, body):
        return {"header": self._header(),
                "perm": [{"permType": 1, "key": b"a", "range_end": b"b"}]}

    def _op_authenticate(self, body):
        return {"header": self._header(), "token": body["name"] + ".token"}

    def _op_user_get(self, body):
        raise RaftkvError("USER_NOT_FOUND")

    def _op_status(self, body):
        return {"header": self._header(), "version": "3.4.23", "dbSize": 4096, "leader": 1,
                "raftIndex": self.revision, "raftTerm": 2, "members": 3, "fault_tolerance": 1}

    def _op_range(self, body):
        key, end = body.get("key", b""), body.get("range_end", b"")
        if body.get("revision", 0) > self.revision:
            raise RaftkvError("FUTURE_REV")
        kvs = sorted((kv for k, kv in self.kvs.items() if _in_range(k, key, end)),
                     key=lambda kv: kv["key"])
        count, limit = len(kvs), body.get("limit", 0)
        more = bool(limit) and count > limit
        if limit:
            kvs = kvs[:limit]
        if body.get("count_only"):
            kvs = []
        elif body.get("keys_only"):
            kvs = [dict(kv, value=b"") for kv in kvs]
        return {"header": self._header(), "kvs": kvs, "more": more, "count": count}

    def _op_put(self, body):
        key = body.get("key", b"")
        if not key:
            raise RaftkvError("EMPTY_KEY")
        lease = body.get("lease", 0)
        if lease and lease not in self.leases:
            raise RaftkvError("LEASE_NOT_FOUND")
        self.revision += 1
        prev = self.kvs.get(key)
        kv = {"key": key, "value": body.get("value", b""), "lease": lease,
              "create_revision": prev["create_revision"] if prev else self.revision,
              "mod_revision": self.revision, "version": prev["version"] + 1 if prev else 1}
        self.kvs[key] = kv
        self._notify({"type": 0, "kv": kv})
        resp = {"header": self._header()}
        if body.get("prev_kv") and prev:
            resp["prev_kv"] = prev
        return resp

    def _op_delete_range(self, body):
        key, end = body.get("key", b""), body.get("range_end", b"")
        gone = [k for k in sorted(self.kvs) if _in_range(k, key, end)]
        prev = [self.kvs.pop(k) for k in gone]
        if gone:
            self.revision += 1
        for kv in prev:
            self._notify({"type": 1, "kv": {"key": kv["key"], "mod_revision": self.revision}})
        resp = {"header": self._header(), "deleted": len(gone)}
        if body.get("prev_kv"):
            resp["prev_kvs"] = prev
        return resp

    def _op_lease_grant(self, body):
        lease_id = body.get("ID") or (len(self.leases) + 1000)
        if lease_id in self.leases:
            raise RaftkvError("LEASE_EXIST")
        self.leases[lease_id] = body.get("TTL", 0)
        return {"header": self._header(), "ID": lease_id, "TTL": self.leases[lease_id]}

    def _op_lease_revoke(self, body):
        if self.leases.pop(body.get("ID", 0), None) is None:
            raise RaftkvError("LEASE_NOT_FOUND")
        return {"header": self._header()}

    async def watch(self, body):
        """Yields {"header", "events"} batches for puts/deletes made after the call; with
        progress_notify and a progress_interval set, an empty batch (a progress notification)
        each interval without an event, as the real service."""
        queue = asyncio.Queue()
        entry = (body.get("key", b""), body.get("range_end", b""), queue)
        self._watchers.append(entry)
        interval = self.progress_interval if body.get("progress_notify") else None
        try:
            yield {"created": True, "header": self._header()}
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), interval)
                except asyncio.TimeoutError:
                    yield {"header": self._header(), "events": []}
                    continue
                yield {"header": self._header(), "events": [event]}
        finally:
            self._watchers.remove(entry)

    def _notify(self, event):
        for key, end, queue in self._watchers:
            if _in_range(event["kv"]["key"], key, end):
                queue.put_nowait(event)
