"""etcd's gRPC server flags on the gRPC front end (raftkv/api/etcd/server.py GrpcLimits):
--grpc-keepalive-min-time (a client pinging more often is sent GOAWAY too_many_pings),
--grpc-keepalive-interval / --grpc-keepalive-timeout (the server's own pings) and
--max-concurrent-streams, as grpc.aio options, the same for the member's server and its
--grpc-workers (which get them as JSON in argv)."""
from __future__ import annotations

import os
import queue
import time

import grpc
import pytest

from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.api.etcd.server import C_INT_MAX, GrpcLimits, server_options
from raftkv.api.etcd.workers import WorkerPool
from raftkv.cli.local_cluster import LocalCluster

pytestmark = pytest.mark.timeout(60)
STREAM_DEADLINE_S = 10
# A client that pings as often as it can: C-core still spaces its pings about 1 s apart.
PINGING_CLIENT = [("grpc.keepalive_time_ms", 100), ("grpc.keepalive_timeout_ms", 2000),
                  ("grpc.keepalive_permit_without_calls", 1),
                  ("grpc.http2.max_pings_without_data", 0)]


def _options(limits=None):
    return dict(server_options(1024, limits=limits))


def test_defaults_are_etcds():
    opts = _options()
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] == 5_000
    assert opts["grpc.keepalive_time_ms"] == 2 * 3600 * 1000
    assert opts["grpc.keepalive_timeout_ms"] == 20_000
    assert opts["grpc.http2.max_ping_strikes"] == 2  # grpc-go's maxPingStrikes
    assert opts["grpc.max_concurrent_streams"] == C_INT_MAX  # 2^32-1 does not fit C-core's int
    assert opts["grpc.keepalive_permit_without_calls"] == 1


def test_flag_values_become_options():
    limits = GrpcLimits.from_seconds(0.25, 90, 3, 7)
    assert limits == GrpcLimits(250, 90_000, 3_000, 7)
    opts = _options(limits)
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] == 250
    assert (opts["grpc.keepalive_time_ms"], opts["grpc.keepalive_timeout_ms"]) == (90_000, 3_000)
    assert opts["grpc.max_concurrent_streams"] == 7
    # etcd's "0 to disable": either duration 0 and the server never pings.
    for interval_s, timeout_s in ((0, 20), (7200, 0)):
        opts = _options(GrpcLimits.from_seconds(5, interval_s, timeout_s, 10))
        assert opts["grpc.keepalive_time_ms"] == C_INT_MAX
    # Beyond C-core's int of milliseconds (24.8 days): never, not an overflow.
    assert GrpcLimits.from_seconds(5, 10**9, 20, 1).keepalive_interval_ms == C_INT_MAX


def test_workers_get_the_same_limits():
    limits = GrpcLimits(250, 90_000, 3_000, 7)
    assert GrpcLimits.from_json(limits.to_json()) == limits
    pool = WorkerPool(1, ["http://127.0.0.1:1"], "127.0.0.1", 2, max_request_bytes=1024,
                      request_timeout=1.0, limits=limits)
    cmd = pool._command(0)
    assert GrpcLimits.from_json(cmd[cmd.index("--grpc-limits") + 1]) == limits


def _idle_watch(port, deadline_s):
    """A Watch stream from PINGING_CLIENT on which no event ever comes; returns how it ended
    (the RpcError) and after how many seconds."""
    start = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=PINGING_CLIENT) as channel:
        requests = queue.Queue()
        responses = rpc_pb2_grpc.WatchStub(channel).Watch(iter(requests.get, None),
                                                          timeout=deadline_s)
        create = rpc_pb2.WatchCreateRequest(key=b"quiet")
        requests.put(rpc_pb2.WatchRequest(create_request=create))
        try:
            assert next(responses).created
            for resp in responses:
                raise AssertionError(f"unexpected watch response {resp}")
        except grpc.RpcError as exc:
            return exc, time.monotonic() - start
        finally:
            requests.put(None)
    raise AssertionError("the watch ended without an error")


def test_a_client_pinging_faster_than_min_time_gets_goaway(make_server):
    server = make_server(limits=GrpcLimits(keepalive_min_time_ms=3_000))
    exc, took = _idle_watch(server.port, STREAM_DEADLINE_S)
    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
    assert "too many pings" in exc.details().lower()
    assert took < STREAM_DEADLINE_S - 1


def test_pings_within_min_time_do_not_kill_idle_streams(make_server):
    """C-core's own default (5 min) would drop etcdctl's 10 s pings on a long watch: the pings
    a --grpc-keepalive-min-time allows must keep the stream up."""
    server = make_server(limits=GrpcLimits(keepalive_min_time_ms=100))
    exc, took = _idle_watch(server.port, 4)  # about 4 pings with no data flowing
    assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
    assert took >= 3.5


def test_max_concurrent_streams_holds_back_the_next_call(make_server):
    server = make_server(limits=GrpcLimits(max_concurrent_streams=1))
    requests = queue.Queue()
    responses = server.watch.Watch(iter(requests.get, None), timeout=STREAM_DEADLINE_S)
    requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k")))
    assert next(responses).created
    with pytest.raises(grpc.RpcError) as info:  # waits for a stream slot that never frees
        server.kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=1.0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    responses.cancel()
    requests.put(None)
    deadline = time.monotonic() + 5
    while True:  # the slot frees once the server has seen the cancel
        try:
            server.kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=1.0)
            break
        except grpc.RpcError:
            assert time.monotonic() < deadline, "the stream slot never freed"


@pytest.mark.parametrize("workers", [0, 1])
def test_a_member_passes_its_flags_to_grpc(tmp_path, workers):
    """The whole path, with the member serving gRPC itself and with a --grpc-workers child:
    under `--grpc-keepalive-min-time 100ms` a client pinging every second keeps its idle watch
    (etcd's default, 5 s, would send it GOAWAY, as the test above shows for 3 s)."""
    args = ["--grpc-keepalive-min-time", "100ms", "--grpc-workers", str(workers)]
    with LocalCluster(str(tmp_path), members=1, extra_args=args) as cluster:
        cluster.start()
        cluster.wait_listening(30.0)
        m = cluster.members[0]
        deadline = time.monotonic() + 30
        while "ready: etcd gRPC" not in _log(m):  # with workers: once every worker serves
            assert m.alive() and time.monotonic() < deadline, _log(m)
            time.sleep(0.05)
        exc, took = _idle_watch(m.client_port, 4)
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (exc, _log(m))
        assert took >= 3.5


def _log(m):
    if not os.path.exists(m.log_path):
        return ""
    with open(m.log_path, "rb") as f:
        return f.read().decode(errors="replace")
