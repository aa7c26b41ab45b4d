"""KV over gRPC: protobuf <-> dict mapping, headers, and error statuses."""
from __future__ import annotations

import grpc
import pytest

from raftkv.api.etcd.proto import rpc_pb2
from raftkv.errors import RaftkvError

pytestmark = pytest.mark.timeout(60)
T = 5  # seconds per RPC


def test_put_then_range(grpc_server):
    kv = grpc_server.kv
    resp = kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), timeout=T)
    assert resp.header.revision == 2
    assert (resp.header.cluster_id, resp.header.member_id, resp.header.raft_term) == (1, 1, 2)
    assert not resp.HasField("prev_kv")
    resp = kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"2", prev_kv=True), timeout=T)
    assert resp.prev_kv.value == b"1" and resp.prev_kv.version == 1
    kv.Put(rpc_pb2.PutRequest(key=b"b", value=b"3"), timeout=T)
    resp = kv.Range(rpc_pb2.RangeRequest(key=b"a", range_end=b"c"), timeout=T)
    assert [(x.key, x.value, x.version) for x in resp.kvs] == [(b"a", b"2", 2), (b"b", b"3", 1)]
    assert resp.count == 2 and not resp.more and resp.header.revision == 4
    assert resp.kvs[0].create_revision == 2 and resp.kvs[0].mod_revision == 3


def test_range_request_fields_reach_the_service(grpc_server):
    request = rpc_pb2.RangeRequest(key=b"k", range_end=b"\0", limit=1, serializable=True,
                                   sort_order=rpc_pb2.RangeRequest.DESCEND,
                                   sort_target=rpc_pb2.RangeRequest.MOD, keys_only=True,
                                   min_mod_revision=3)
    grpc_server.kv.Range(request, timeout=T)
    op, body = grpc_server.service.calls[-1]
    assert op == "range"
    assert body["key"] == b"k" and body["range_end"] == b"\0" and body["limit"] == 1
    assert body["sort_order"] == 2 and body["sort_target"] == 3 and body["keys_only"]
    assert body["serializable"] and body["min_mod_revision"] == 3
    assert body["count_only"] is False and body["revision"] == 0


def test_range_limit_sets_more(grpc_server):
    for key in (b"p1", b"p2", b"p3"):
        grpc_server.kv.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=T)
    resp = grpc_server.kv.Range(rpc_pb2.RangeRequest(key=b"p", range_end=b"q", limit=2),
                                timeout=T)
    assert len(resp.kvs) == 2 and resp.more and resp.count == 3


def test_delete_range_with_prev_kvs(grpc_server):
    for key in (b"d1", b"d2"):
        grpc_server.kv.Put(rpc_pb2.PutRequest(key=key, value=b"x"), timeout=T)
    resp = grpc_server.kv.DeleteRange(
        rpc_pb2.DeleteRangeRequest(key=b"d", range_end=b"e", prev_kv=True), timeout=T)
    assert resp.deleted == 2 and [kv.key for kv in resp.prev_kvs] == [b"d1", b"d2"]
    resp = grpc_server.kv.Range(rpc_pb2.RangeRequest(key=b"d", range_end=b"e"), timeout=T)
    assert resp.count == 0 and not resp.kvs


def test_txn_success_and_failure_branches(grpc_server):
    kv = grpc_server.kv
    kv.Put(rpc_pb2.PutRequest(key=b"t", value=b"old"), timeout=T)
    compare = rpc_pb2.Compare(key=b"t", target=rpc_pb2.Compare.VALUE,
                              result=rpc_pb2.Compare.EQUAL, value=b"old")
    request = rpc_pb2.TxnRequest(
        compare=[compare],
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"t", value=b"new")),
                 rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"t"))],
        failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"t"))])
    resp = kv.Txn(request, timeout=T)
    assert resp.succeeded and len(resp.responses) == 2
    assert resp.responses[0].WhichOneof("response") == "response_put"
    assert resp.responses[1].response_range.kvs[0].value == b"new"
    resp = kv.Txn(request, timeout=T)  # value is now "new": the failure branch runs
    assert not resp.succeeded and len(resp.responses) == 1
    assert resp.responses[0].response_range.kvs[0].value == b"new"
    op, body = grpc_server.service.calls[-1]
    assert op == "txn"
    assert body["compare"] == [{"result": 0, "target": 3, "key": b"t", "value": b"old",
                                "range_end": b""}]
    assert body["success"][0] == {"request_put": {
        "key": b"t", "value": b"new", "lease": 0, "prev_kv": False, "ignore_value": False,
        "ignore_lease": False}}


def test_compare_oneof_member_sent_only_when_set(grpc_server):
    compare = rpc_pb2.Compare(key=b"x", target=rpc_pb2.Compare.VERSION, version=0)
    grpc_server.kv.Txn(rpc_pb2.TxnRequest(compare=[compare]), timeout=T)
    body = grpc_server.service.calls[-1][1]
    assert body["compare"][0]["version"] == 0
    assert "value" not in body["compare"][0] and "mod_revision" not in body["compare"][0]


def test_compact_maps_to_service(grpc_server):
    resp = grpc_server.kv.Compact(rpc_pb2.CompactionRequest(revision=1, physical=True),
                                  timeout=T)
    assert resp.header.revision == 1
    assert grpc_server.service.calls[-1] == ("compact", {"revision": 1, "physical": True})


@pytest.mark.parametrize("code,status", [
    ("COMPACTED", grpc.StatusCode.OUT_OF_RANGE),
    ("NO_SPACE", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("NO_LEADER", grpc.StatusCode.UNAVAILABLE),
    ("TOO_MANY_OPS", grpc.StatusCode.INVALID_ARGUMENT),
    ("CORRUPT", grpc.StatusCode.DATA_LOSS),
])
def test_service_errors_become_etcd_statuses(grpc_server, code, status):
    error = RaftkvError(code)
    grpc_server.service.fail_next["range"] = error
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.kv.Range(rpc_pb2.RangeRequest(key=b"a"), timeout=T)
    assert info.value.code() == status
    assert info.value.details() == error.message


def test_fake_service_errors_pass_through(grpc_server):
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.kv.Put(rpc_pb2.PutRequest(key=b"", value=b"v"), timeout=T)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "etcdserver: key is not provided"
    with pytest.raises(grpc.RpcError) as info:
        grpc_server.kv.Range(rpc_pb2.RangeRequest(key=b"a", revision=99), timeout=T)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert info.value.details() == "etcdserver: mvcc: required revision is a future revision"


def test_request_larger_than_limit_is_refused(make_server):
    server = make_server(max_request_bytes=1024)
    big = b"v" * (600 * 1024)  # over 1 KiB + 512 KiB of gRPC overhead allowance
    with pytest.raises(grpc.RpcError) as info:
        server.kv.Put(rpc_pb2.PutRequest(key=b"k", value=big), timeout=T)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    server.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v" * 4096), timeout=T)


def test_unary_calls_in_flight_are_counted(make_server):
    """calls= keeps a CallGauge of the unary calls in flight (a member keeps its WAL syncs off
    the event loop while it is non-zero): one during a call, none after, also after an
    error; streams are not counted."""
    from raftkv.api.etcd.server import CallGauge

    gauge = CallGauge()
    srv = make_server(calls=gauge)
    seen = []
    inner = srv.service.call

    async def call(op, body):
        seen.append(gauge.n)
        return await inner(op, body)

    srv.service.call = call
    srv.kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"), timeout=T)
    srv.service.fail_next["range"] = RaftkvError("NO_LEADER")
    with pytest.raises(grpc.RpcError):
        srv.kv.Range(rpc_pb2.RangeRequest(key=b"a"), timeout=T)
    keepalive = srv.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=1)]), timeout=T)
    assert len(list(keepalive)) == 1
    assert seen[:2] == [1, 1] and seen[2:] and not any(seen[2:]) and gauge.n == 0
