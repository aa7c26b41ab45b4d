"""Status right after an acknowledged write reports that write's revision: the member answers a
put from its apply, before the store's lingering LMDB round makes it visible, so status (native
and gRPC Maintenance.Status) waits for that round as a serializable read does, on the leader and
on a follower."""
from __future__ import annotations

import grpc
import pytest

from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

ROUNDS = 100


def _members(h):
    leader = h.leader()
    return [("leader", leader), ("follower", next(m for m in h.members if m is not leader))]


def test_native_status_after_a_put_reports_its_revision(shared_cluster3):
    h = shared_cluster3
    for role, m in _members(h):
        c = h.client([m], timeout=10.0)
        for i in range(ROUNDS):
            rev = c.put(f"/status-rev/native/{role}", str(i))["header"]["revision"]
            seen = c.status()["header"]["revision"]
            assert seen == rev, f"{role}, round {i}: put at revision {rev}, status said {seen}"


def test_grpc_status_after_a_put_reports_its_revision(shared_cluster3):
    h = shared_cluster3
    for role, m in _members(h):
        with grpc.insecure_channel(m.grpc_endpoint) as channel:
            kv = rpc_pb2_grpc.KVStub(channel)
            maintenance = rpc_pb2_grpc.MaintenanceStub(channel)
            for i in range(ROUNDS):
                put = kv.Put(rpc_pb2.PutRequest(key=f"/status-rev/grpc/{role}".encode(),
                                                value=str(i).encode()), timeout=10)
                st = maintenance.Status(rpc_pb2.StatusRequest(), timeout=10)
                assert st.header.revision == put.header.revision, \
                    f"{role}, round {i}: put at revision {put.header.revision}, " \
                    f"status said {st.header.revision}"
