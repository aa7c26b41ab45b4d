"""Lease over gRPC: grant, revoke, keep-alive stream, time-to-live, list."""
from __future__ import annotations

import queue

import grpc
import pytest

from raftkv.api.etcd.proto import rpc_pb2
from raftkv.errors import RaftkvError

pytestmark = pytest.mark.timeout(60)
T = 5


def test_grant_and_revoke(grpc_server):
    lease = grpc_server.lease
    resp = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=T)
    assert resp.ID == 1000 and resp.TTL == 30 and resp.header.member_id == 1
    resp = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=5, ID=42), timeout=T)
    assert resp.ID == 42
    with pytest.raises(grpc.RpcError) as info:
        lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=5, ID=42), timeout=T)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "etcdserver: lease already exists"
    lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=42), timeout=T)
    with pytest.raises(grpc.RpcError) as info:
        lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=42), timeout=T)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "etcdserver: requested lease not found"


def test_put_with_lease_and_unknown_lease(grpc_server):
    grpc_server.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9, ID=7), timeout=T)
    grpc_server.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v", lease=7), timeout=T)
    resp = grpc_server.kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=T)
    assert resp.kvs[0].lease == 7
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v", lease=8), timeout=T)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_keepalive_stream(grpc_server):
    grpc_server.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10, ID=5), timeout=T)
    requests = queue.Queue()
    responses = grpc_server.lease.LeaseKeepAlive(iter(requests.get, None), timeout=20)
    try:
        for _ in range(3):
            requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=5))
            resp = next(responses)
            assert resp.ID == 5 and resp.TTL == 10 and resp.header.revision == 1
        requests.put(rpc_pb2.LeaseKeepAliveRequest(ID=99))  # unknown: TTL 0, not an error
        resp = next(responses)
        assert resp.ID == 99 and resp.TTL == 0 and resp.header.cluster_id == 1
        requests.put(None)  # half-close ends the stream
        assert list(responses) == []
    finally:
        responses.cancel()
    ops = [op for op, _ in grpc_server.service.calls]
    assert ops.count("lease_keepalive") == 4


def test_keepalive_stream_other_errors_end_the_stream(grpc_server):
    grpc_server.service.fail_next["lease_keepalive"] = RaftkvError("NOT_LEADER")
    responses = grpc_server.lease.LeaseKeepAlive(
        iter([rpc_pb2.LeaseKeepAliveRequest(ID=1)]), timeout=20)
    with pytest.raises(grpc.RpcError) as info:
        next(responses)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "etcdserver: not leader"


def test_time_to_live_and_leases(grpc_server):
    grpc_server.lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=10, ID=5), timeout=T)
    grpc_server.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v", lease=5), timeout=T)
    resp = grpc_server.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=5, keys=True),
                                             timeout=T)
    assert (resp.ID, resp.TTL, resp.grantedTTL, list(resp.keys)) == (5, 10, 10, [b"k"])
    resp = grpc_server.lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=6), timeout=T)
    assert resp.ID == 6 and resp.TTL == -1  # unknown lease: TTL -1, not an error
    resp = grpc_server.lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=T)
    assert [s.ID for s in resp.leases] == [5]
