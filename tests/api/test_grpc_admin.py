"""Cluster, Maintenance and Auth over gRPC."""
from __future__ import annotations

import grpc
import pytest

from raftkv.api.etcd.proto import auth_pb2, rpc_pb2
from raftkv.errors import RaftkvError
from tests.api.conftest import SNAPSHOT_IMAGE, SNAPSHOT_SHA256

pytestmark = pytest.mark.timeout(60)
T = 5


def test_member_list(grpc_server):
    resp = grpc_server.cluster.MemberList(rpc_pb2.MemberListRequest(), timeout=T)
    assert [(m.ID, m.name, list(m.peerURLs)) for m in resp.members] == [
        (1, "m1", ["http://127.0.0.1:2380"])]
    assert grpc_server.service.calls[-1] == ("member_list", {"linearizable": False})


def test_member_add_error(grpc_server):
    grpc_server.service.fail_next["member_add"] = RaftkvError("PEER_URL_EXIST")
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.cluster.MemberAdd(
            rpc_pb2.MemberAddRequest(peerURLs=["http://x:1"], isLearner=True), timeout=T)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "etcdserver: Peer URLs already exists"
    assert grpc_server.service.calls[-1] == (
        "member_add", {"peerURLs": ["http://x:1"], "isLearner": True})


def test_status_alarm_hashkv_defrag(grpc_server):
    m = grpc_server.maintenance
    resp = m.Status(rpc_pb2.StatusRequest(), timeout=T)
    assert (resp.version, resp.dbSize, resp.leader, resp.raftTerm) == ("3.4.23", 4096, 1, 2)
    assert resp.header.member_id == 1
    resp = m.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=T)
    assert list(resp.alarms) == []
    assert grpc_server.service.calls[-1] == ("alarm", {"action": 0, "memberID": 0, "alarm": 0})
    resp = m.HashKV(rpc_pb2.HashKVRequest(revision=0), timeout=T)
    assert resp.hash == 12345
    m.Defragment(rpc_pb2.DefragmentRequest(), timeout=T)
    with pytest.raises(grpc.RpcError) as info:  # not implemented by the fake
        m.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=2), timeout=T)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_snapshot_stream_ends_with_sha256(grpc_server):
    blobs = [r.blob for r in grpc_server.maintenance.Snapshot(rpc_pb2.SnapshotRequest(),
                                                              timeout=T)]
    assert b"".join(blobs[:-1]) == SNAPSHOT_IMAGE and blobs[-1] == SNAPSHOT_SHA256
    assert len(b"".join(blobs)) % 512 == 32


def test_auth_rpcs_call_service_ops_with_the_token(grpc_server):
    """Each Auth RPC is one service op with the request's fields (UserAdd's options.no_password
    flattened) and the metadata token; the answers are the service's (behaviour: tests
    against real members, tests/etcdctl/test_auth.py and the conformance run)."""
    auth, service = grpc_server.auth, grpc_server.service
    meta = (("token", "tok.7"),)
    assert not auth.AuthStatus(rpc_pb2.AuthStatusRequest(), timeout=T,
                               metadata=meta).enabled
    assert service.calls[-1] == ("auth_status", {"token": "tok.7"})
    auth.UserAdd(rpc_pb2.AuthUserAddRequest(
        name="u", password="p", options=auth_pb2.UserAddOptions(no_password=True)), timeout=T)
    assert service.calls[-1] == ("user_add", {"name": "u", "password": "p",
                                              "no_password": True})
    auth.RoleGrantPermission(rpc_pb2.AuthRoleGrantPermissionRequest(
        name="r", perm=auth_pb2.Permission(permType=2, key=b"k", range_end=b"\0")),
        timeout=T, metadata=meta)
    assert service.calls[-1] == ("role_grant_permission", {
        "name": "r", "perm": {"permType": 2, "key": b"k", "range_end": b"\0"},
        "token": "tok.7"})
    assert list(auth.RoleGet(rpc_pb2.AuthRoleGetRequest(role="r"), timeout=T).perm) == [
        auth_pb2.Permission(permType=1, key=b"a", range_end=b"b")]
    resp = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="u", password="p"), timeout=T)
    assert resp.token == "u.token"
    with pytest.raises(grpc.RpcError) as info:
        auth.UserGet(rpc_pb2.AuthUserGetRequest(name="nobody"), timeout=T)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "etcdserver: user name not found"