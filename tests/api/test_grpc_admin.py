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


def test_auth_answers_as_disabled(grpc_server):
    auth = grpc_server.auth
    assert not auth.AuthStatus(rpc_pb2.AuthStatusRequest(), timeout=T).enabled
    auth.AuthDisable(rpc_pb2.AuthDisableRequest(), timeout=T)
    assert list(auth.UserList(rpc_pb2.AuthUserListRequest(), timeout=T).users) == []
    assert list(auth.RoleList(rpc_pb2.AuthRoleListRequest(), timeout=T).roles) == []
    cases = [
        (auth.Authenticate, rpc_pb2.AuthenticateRequest(name="root", password="x"),
         "etcdserver: authentication is not enabled"),
        (auth.AuthEnable, rpc_pb2.AuthEnableRequest(), "etcdserver: root user does not exist"),
        (auth.UserGet, rpc_pb2.AuthUserGetRequest(name="u"), "etcdserver: user name not found"),
        (auth.RoleGet, rpc_pb2.AuthRoleGetRequest(role="r"), "etcdserver: role name not found"),
        (auth.RoleGrantPermission, rpc_pb2.AuthRoleGrantPermissionRequest(
            name="r", perm=auth_pb2.Permission(key=b"k")), "etcdserver: role name not found"),
    ]
    for method, request, message in cases:
        with pytest.raises(grpc.RpcError) as info:
            method(request, timeout=T)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.details() == message
