"""FakeService plus the ops the client tests need that it lacks (txn, lease TTLs, members).

Kept in the client tests: the shared fake stays small, and these are simple, not etcd-exact.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading

from raftkv.api.native import start_native_server
from raftkv.errors import RaftkvError
from tests.api.fake_service import FakeService

_TARGET_FIELDS = {0: "version", 1: "create_revision", 2: "mod_revision", 3: "value",
                  4: "lease"}


class RichFakeService(FakeService):
    def __init__(self):
        super().__init__()
        self.seen_request_ids = []
        self.alarm_raised = False  # a NOSPACE alarm of member 1, for alarm list|disarm
        self.native_urls = []  # member m1's published native URLs (raftkvctl --cluster)
        self.unstarted_member = False  # member list also has one that published nothing
        self.earlier_member = False  # and one of an earlier raftkv: client URLs, no native
        self.compacted = 0  # a watch from a revision below this is canceled, as etcd's

    async def call(self, op, body):
        if "request_id" in body:
            self.seen_request_ids.append((op, tuple(body["request_id"])))
        return await super().call(op, body)

    def _compare(self, c):
        kv = self.kvs.get(c.get("key", b""))
        field = _TARGET_FIELDS[c.get("target", 0)]
        if kv is None and field == "value":
            return False  # etcd: a value compare on a missing key always fails
        have = kv.get(field, b"" if field == "value" else 0) if kv else (
            b"" if field == "value" else 0)
        want = c.get(field, b"" if field == "value" else 0)
        return {0: have == want, 1: have > want, 2: have < want, 3: have != want}[
            c.get("result", 0)]

    def _op_txn(self, body):
        ok = all(self._compare(c) for c in body.get("compare", []))
        responses = []
        for req in body.get("success" if ok else "failure", []):
            (kind, sub), = req.items()
            op = {"request_range": "range", "request_put": "put",
                  "request_delete_range": "delete_range"}[kind]
            resp = getattr(self, "_op_" + op)(sub)
            responses.append({"response_" + op: resp})
        return {"header": self._header(), "succeeded": ok, "responses": responses}

    def _op_lease_keepalive(self, body):
        if body.get("ID") not in self.leases:  # as the member (and etcd) answer
            return {"header": self._header(), "ID": body.get("ID"), "TTL": 0}
        return {"header": self._header(), "ID": body["ID"], "TTL": self.leases[body["ID"]]}

    def _op_lease_timetolive(self, body):
        lid = body.get("ID")
        if lid not in self.leases:
            return {"header": self._header(), "ID": lid, "TTL": -1, "grantedTTL": 0}
        resp = {"header": self._header(), "ID": lid, "TTL": self.leases[lid],
                "grantedTTL": self.leases[lid]}
        if body.get("keys"):
            resp["keys"] = sorted(k for k, kv in self.kvs.items() if kv["lease"] == lid)
        return resp

    def _op_lease_leases(self, body):
        return {"header": self._header(), "leases": [{"ID": i} for i in sorted(self.leases)]}

    def _op_member_list(self, body):
        members = [{"ID": 1, "name": "m1", "peerURLs": ["http://127.0.0.1:2380"],
                    "clientURLs": ["http://127.0.0.1:2379"], "isLearner": False,
                    "nativeURLs": list(self.native_urls)}]
        if self.unstarted_member:
            members.append({"ID": 2, "name": "", "peerURLs": ["http://127.0.0.1:2390"],
                            "clientURLs": [], "isLearner": False, "nativeURLs": []})
        if self.earlier_member:  # its record as a member that knows no nativeURLs gives it
            members.append({"ID": 3, "name": "m3", "peerURLs": ["http://127.0.0.1:2391"],
                            "clientURLs": ["http://127.0.0.1:2392"], "isLearner": False})
        return {"header": self._header(), "members": members}

    async def watch(self, body):
        if body.get("start_revision", 0) and body["start_revision"] < self.compacted:
            yield {"created": True, "header": self._header()}
            yield {"header": dict(self._header(), revision=0), "events": [],
                   "compact_revision": self.compacted, "canceled": True}
            return
        async for item in super().watch(body):
            yield item

    # Auth: the answers' shapes (real behaviour: tests/etcdctl against real members).
    def _op_user_get(self, body):
        if body.get("name") != "alice":
            raise RaftkvError("USER_NOT_FOUND")
        return {"roles": ["reader"], "header": self._header()}  # the member's key order

    def _op_user_list(self, body):
        return {"users": ["alice", "root"], "header": self._header()}

    def _op_role_list(self, body):
        return {"roles": ["reader", "root"], "header": self._header()}

    def _op_role_get(self, body):
        return {"header": self._header(), "perm": [
            {"permType": 0, "key": b"a/", "range_end": b"a0"},
            {"permType": 2, "key": b"k", "range_end": b""},
            {"permType": 1, "key": b"z", "range_end": b"\0"}]}

    def _op_user_delete(self, body):
        return {"header": self._header()}

    _op_user_change_password = _op_user_grant_role = _op_user_revoke_role = _op_user_delete
    _op_role_add = _op_role_delete = _op_role_revoke_permission = _op_user_delete

    def _op_compact(self, body):
        return {"header": self._header()}

    # Membership and maintenance: shapes as the member's (raftkv/server/service.py).
    def _op_member_add(self, body):
        member = {"ID": 0x2a, "name": "", "peerURLs": body["peerURLs"], "clientURLs": [],
                  "isLearner": bool(body.get("isLearner"))}
        return {"header": self._header(), "member": member,
                "members": [member, *self._op_member_list({})["members"]]}

    def _op_member_remove(self, body):
        if body.get("ID") != 0x2a:
            raise RaftkvError("MEMBER_NOT_FOUND")
        return {"header": self._header(), "members": self._op_member_list({})["members"]}

    _op_member_promote = _op_member_remove

    def _op_member_update(self, body):
        if body.get("ID") != 1:
            raise RaftkvError("MEMBER_NOT_FOUND")
        members = self._op_member_list({})["members"]
        members[0]["peerURLs"] = list(body["peerURLs"])
        return {"header": self._header(), "members": members}

    def _op_alarm(self, body):
        raised = [{"memberID": 1, "alarm": 1}] if self.alarm_raised else []
        if body.get("action") == 2 and raised:
            self.alarm_raised = False
        return {"header": self._header(), "alarms": raised}

    def _op_defragment(self, body):
        return {"header": self._header()}

    def _op_hash_kv(self, body):
        if body.get("revision", 0) > self.revision:
            raise RaftkvError("FUTURE_REV")
        return {"header": self._header(), "hash": 1084519789, "compact_revision": -1}

    def _op_hash(self, body):
        return {"header": self._header(), "hash": 3125550909}

    def _op_move_leader(self, body):
        if body.get("targetID") != 1:
            raise RaftkvError("BAD_LEADER_TRANSFEREE")
        return {"header": self._header()}


class ServerThread:
    """A native server over a service on its own loop in a thread (for blocking clients);
    ssl: a server SSLContext to serve TLS; unix_path: listen on this Unix socket instead."""

    def __init__(self, service, ssl=None, unix_path=None):
        self.service = service
        self.unix_path = unix_path
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            start_native_server(service, "127.0.0.1", 0, ssl=ssl, unix_path=unix_path),
            self.loop)
        self.server, self.port = fut.result(10)

    @property
    def endpoint(self):
        return f"unix://{self.unix_path}" if self.unix_path else f"127.0.0.1:{self.port}"

    def stop(self):
        async def _close():
            self.server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 5)

        asyncio.run_coroutine_threadsafe(_close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
