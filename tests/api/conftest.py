"""Fixtures for the etcd gRPC front-end tests: a server on 127.0.0.1 (port 0) over a fake
service, run on its own event loop in a background thread so tests use plain sync stubs.

GrpcFakeService extends tests/api/fake_service.FakeService with the ops the gRPC front end also
maps (txn, compact, lease keep-alive / time-to-live / list, cluster and maintenance ops,
snapshot) and lets a test make the next call of an op raise a given error.
"""
from __future__ import annotations

import asyncio
import hashlib
import threading
import types

import grpc
import pytest

from raftkv.api.etcd.proto import rpc_pb2_grpc
from raftkv.api.etcd.server import start_grpc_server
from raftkv.errors import RaftkvError
from tests.api.fake_service import FakeService

STARTUP_TIMEOUT = 10.0
SNAPSHOT_IMAGE = bytes(range(256)) * 8  # 2048 bytes: a multiple of 512, as etcdctl requires


def _compare(kv, cmp):
    target = cmp.get("target", 0)
    field = ["version", "create_revision", "mod_revision", "value", "lease"][target]
    actual = (kv or {}).get(field, b"" if target == 3 else 0)
    expected = cmp.get(field, b"" if target == 3 else 0)
    result = cmp.get("result", 0)
    return [actual == expected, actual > expected, actual < expected,
            actual != expected][result]


class GrpcFakeService(FakeService):
    def __init__(self):
        super().__init__()
        self.fail_next = {}  # op -> RaftkvError raised by the next call of op
        self.members = [{"ID": 1, "name": "m1", "peerURLs": ["http://127.0.0.1:2380"],
                         "clientURLs": ["http://127.0.0.1:2379"]}]

    async def call(self, op, body):
        error = self.fail_next.pop(op, None)
        if error is not None:
            self.calls.append((op, body))
            raise error
        return await super().call(op, body)

    def _op_txn(self, body):
        ok = all(_compare(self.kvs.get(c.get("key")), c) for c in body.get("compare", []))
        responses = []
        for op in body.get("success" if ok else "failure", []):
            (kind, req), = op.items()
            name = kind[len("request_"):]
            resp = getattr(self, "_op_" + name)(req)
            responses.append({"response_" + name: resp})
        return {"header": self._header(), "succeeded": ok, "responses": responses}

    def _op_compact(self, body):
        if body.get("revision", 0) > self.revision:
            raise RaftkvError("FUTURE_REV")
        return {"header": self._header()}

    def _op_lease_keepalive(self, body):
        if body.get("ID") not in self.leases:
            raise RaftkvError("LEASE_NOT_FOUND")
        return {"header": self._header(), "ID": body["ID"], "TTL": self.leases[body["ID"]]}

    def _op_lease_timetolive(self, body):
        lease_id = body.get("ID")
        if lease_id not in self.leases:
            raise RaftkvError("LEASE_NOT_FOUND")
        keys = [k for k, kv in sorted(self.kvs.items()) if kv["lease"] == lease_id]
        return {"header": self._header(), "ID": lease_id, "TTL": self.leases[lease_id],
                "grantedTTL": self.leases[lease_id], "keys": keys if body.get("keys") else []}

    def _op_lease_leases(self, body):
        return {"header": self._header(), "leases": [{"ID": i} for i in sorted(self.leases)]}

    def _op_member_list(self, body):
        return {"header": self._header(), "members": self.members}

    def _op_alarm(self, body):
        return {"header": self._header(), "alarms": []}

    def _op_hash_kv(self, body):
        return {"header": self._header(), "hash": 12345, "compact_revision": 0}

    def _op_defragment(self, body):
        return {"header": self._header()}

    async def snapshot(self, who=None):
        for start in range(0, len(SNAPSHOT_IMAGE), 1000):
            yield SNAPSHOT_IMAGE[start:start + 1000]


SNAPSHOT_SHA256 = hashlib.sha256(SNAPSHOT_IMAGE).digest()


class ServerThread:
    """start_grpc_server on a private event loop in a daemon thread."""

    def __init__(self, service, **kwargs):
        self.service = service
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            start_grpc_server(service, "127.0.0.1", 0, **kwargs), self.loop)
        self.server, self.port = future.result(STARTUP_TIMEOUT)

    def stop(self):
        future = asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop)
        future.result(STARTUP_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(STARTUP_TIMEOUT)
        self.loop.close()


def _stubs(channel):
    return types.SimpleNamespace(
        kv=rpc_pb2_grpc.KVStub(channel), watch=rpc_pb2_grpc.WatchStub(channel),
        lease=rpc_pb2_grpc.LeaseStub(channel), cluster=rpc_pb2_grpc.ClusterStub(channel),
        maintenance=rpc_pb2_grpc.MaintenanceStub(channel), auth=rpc_pb2_grpc.AuthStub(channel))


@pytest.fixture
def make_server():
    """make_server(**start_grpc_server kwargs) -> namespace(port, service, channel, stubs)."""
    started = []

    def make(**kwargs):
        service = GrpcFakeService()
        thread = ServerThread(service, **kwargs)
        channel = grpc.insecure_channel(f"127.0.0.1:{thread.port}")
        started.append((thread, channel))
        return types.SimpleNamespace(port=thread.port, service=service, channel=channel,
                                     thread=thread, **vars(_stubs(channel)))

    yield make
    for thread, channel in started:
        channel.close()
        thread.stop()


@pytest.fixture
def grpc_server(make_server):
    return make_server()
