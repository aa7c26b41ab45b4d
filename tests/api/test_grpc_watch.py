"""Watch over gRPC: one bidi stream, many watchers, create/cancel/progress, compaction,
fragments."""
from __future__ import annotations

import queue

import grpc
import pytest

from raftkv.api.etcd import watch as watch_mod
from raftkv.api.etcd.proto import kv_pb2, rpc_pb2
from raftkv.errors import RaftkvError

pytestmark = pytest.mark.timeout(60)
T = 5
STREAM_DEADLINE = 20


class Stream:
    """A Watch call fed from a queue; next() returns the following response."""

    def __init__(self, server):
        self.requests = queue.Queue()
        self.responses = server.watch.Watch(iter(self.requests.get, None),
                                            timeout=STREAM_DEADLINE)

    def create(self, key, range_end=b"", **fields):
        create = rpc_pb2.WatchCreateRequest(key=key, range_end=range_end, **fields)
        self.requests.put(rpc_pb2.WatchRequest(create_request=create))
        return next(self.responses)

    def cancel(self, watch_id):
        cancel = rpc_pb2.WatchCancelRequest(watch_id=watch_id)
        self.requests.put(rpc_pb2.WatchRequest(cancel_request=cancel))

    def progress(self):
        self.requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    def next(self):
        return next(self.responses)

    def close(self):
        self.responses.cancel()
        self.requests.put(None)


@pytest.fixture
def stream(grpc_server):
    s = Stream(grpc_server)
    yield s
    s.close()


def put(server, key, value):
    return server.kv.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=T)


def test_create_assigns_ids_and_delivers_events(grpc_server, stream):
    created = stream.create(b"a")
    assert created.created and created.watch_id == 0 and not created.canceled
    assert created.header.revision == 1 and created.header.cluster_id == 1
    created = stream.create(b"p", b"q")
    assert created.created and created.watch_id == 1
    ops = [op for op, _ in grpc_server.service.calls[-2:]]
    put(grpc_server, b"a", b"1")
    resp = stream.next()
    assert resp.watch_id == 0 and resp.header.revision == 2
    assert [(e.type, e.kv.key, e.kv.value) for e in resp.events] == [
        (kv_pb2.Event.PUT, b"a", b"1")]
    put(grpc_server, b"p1", b"2")
    resp = stream.next()
    assert resp.watch_id == 1 and resp.events[0].kv.key == b"p1"
    grpc_server.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a"), timeout=T)
    resp = stream.next()
    assert resp.watch_id == 0 and resp.events[0].type == kv_pb2.Event.DELETE
    assert resp.events[0].kv.mod_revision == 4
    # the created header read from the service, then the user's permission checked
    assert ops == ["header", "watch_check"]


def test_cancel_stops_a_watcher(grpc_server, stream):
    stream.create(b"a")
    stream.create(b"b")
    stream.cancel(0)
    resp = stream.next()
    assert resp.canceled and resp.watch_id == 0
    put(grpc_server, b"a", b"ignored")
    put(grpc_server, b"b", b"seen")
    resp = stream.next()
    assert resp.watch_id == 1 and resp.events[0].kv.key == b"b"
    # Auto ids keep counting up (as in etcd), skipping ids in use.
    created = stream.create(b"c")
    assert created.watch_id == 2


def test_client_chosen_watch_id_and_duplicate(stream):
    created = stream.create(b"a", watch_id=7)
    assert created.created and created.watch_id == 7
    dup = stream.create(b"b", watch_id=7)
    assert dup.created and dup.canceled and dup.watch_id == -1
    assert dup.cancel_reason == watch_mod.DUPLICATE_ID


@pytest.mark.parametrize("key, range_end", [(b"b", b"a"), (b"b", b"b"), (b"\xff", b"c"),
                                             (b"", b"\0")])
def test_empty_range_is_refused_without_using_an_id(stream, key, range_end):
    """etcd 3.4 (watchStream.Watch) refuses a range that holds no key (range_end at or below
    the key; "\\0" alone means from-key) with watch_id -1 before looking at the id, and the
    next automatic id is still 0 (differential watch test, seed 1: raftkv watched nothing)."""
    refused = stream.create(key, range_end, watch_id=7)
    if range_end == b"\0":  # from-key: a real watcher
        assert refused.watch_id == 7 and not refused.canceled
        return
    assert refused.created and refused.canceled and refused.watch_id == -1
    assert refused.cancel_reason == watch_mod.EMPTY_RANGE
    assert stream.create(b"a").watch_id == 0


def test_progress_request_answers_with_header(grpc_server, stream):
    stream.create(b"a")
    put(grpc_server, b"z", b"1")
    stream.progress()
    resp = stream.next()
    assert resp.watch_id == -1 and not resp.events and not resp.created
    assert resp.header.revision == 2


def test_start_revision_defaults_to_next_revision(grpc_server, stream):
    service = grpc_server.service
    bodies, original = [], service.watch

    def recording_watch(body):
        bodies.append(body)
        return original(body)

    service.watch = recording_watch
    put(grpc_server, b"x", b"1")
    stream.create(b"a", prev_kv=True, filters=[rpc_pb2.WatchCreateRequest.NODELETE])
    stream.create(b"b", start_revision=1)
    assert bodies[0] == {"key": b"a", "range_end": b"", "start_revision": 3, "prev_kv": True,
                         "filters": [1], "progress_notify": False}
    assert bodies[1]["start_revision"] == 1
    put(grpc_server, b"a", b"2")
    grpc_server.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a"), timeout=T)
    put(grpc_server, b"a", b"3")
    first, second = stream.next(), stream.next()
    assert [e.kv.value for e in list(first.events) + list(second.events)] == [b"2", b"3"]


def test_filters_drop_puts(grpc_server, stream):
    stream.create(b"a", filters=[rpc_pb2.WatchCreateRequest.NOPUT])
    put(grpc_server, b"a", b"1")
    grpc_server.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a"), timeout=T)
    resp = stream.next()
    assert [e.type for e in resp.events] == [kv_pb2.Event.DELETE]


class _CompactedWatch:
    def __init__(self, service):
        self.service = service

    async def __call__(self, body):
        # the service's answer: header revision 0 (raftkv.mvcc.watch), passed on as it is
        yield {"header": dict(self.service._header(), revision=0), "compact_revision": 5}


def test_compacted_watch_is_canceled_with_revision(grpc_server, stream):
    grpc_server.service.watch = _CompactedWatch(grpc_server.service)
    created = stream.create(b"a", start_revision=2)
    assert created.created
    resp = stream.next()
    assert resp.canceled and resp.compact_revision == 5 and resp.watch_id == created.watch_id


def test_compacted_watcher_keeps_its_id_until_canceled(grpc_server, stream):
    """etcd 3.4 sends the compaction notice with header revision 0 and keeps the watcher's id
    on the stream: a create with it is a duplicate, an automatic id skips it, and a cancel is
    answered (differential watch test, seed 1: raftkv sent the store's revision, forgot the
    id and answered the cancel with nothing)."""
    grpc_server.service.watch = _CompactedWatch(grpc_server.service)
    created = stream.create(b"a", start_revision=2, watch_id=1)
    resp = stream.next()
    assert resp.canceled and resp.compact_revision == 5 and resp.watch_id == 1
    assert resp.header.revision == 0 and resp.header.member_id
    dup = stream.create(b"b", watch_id=1)
    assert dup.canceled and dup.cancel_reason == watch_mod.DUPLICATE_ID
    assert stream.create(b"b").watch_id == 0
    stream.next()  # watcher 0's compaction notice
    assert stream.create(b"b").watch_id == 2
    stream.next()
    stream.cancel(created.watch_id)
    resp = stream.next()
    assert resp.canceled and resp.watch_id == 1 and not resp.compact_revision
    assert resp.header.revision
    assert stream.create(b"c", watch_id=1).watch_id == 1


def test_progress_notify_sends_empty_responses(make_server):
    """The service's progress notifications (it sends them only to a watcher that has every
    event up to their revision) become empty responses of the watcher's id."""
    server = make_server()
    server.service.progress_interval = 0.2
    s = Stream(server)
    try:
        created = s.create(b"a", progress_notify=True)
        resp = s.next()
        assert resp.watch_id == created.watch_id and not resp.events and not resp.canceled
        assert resp.header.revision == 1
    finally:
        s.close()


def test_fragments_split_large_responses():
    events = [{"type": 0, "kv": {"key": b"k%d" % i, "value": b"v" * 100}} for i in range(10)]
    response = watch_mod._response({"revision": 9}, 3, events)
    parts = watch_mod.fragments(response, 400)
    assert len(parts) > 1
    assert [p.fragment for p in parts] == [True] * (len(parts) - 1) + [False]
    assert all(p.watch_id == 3 and p.header.revision == 9 for p in parts)
    assert [e.kv.key for p in parts for e in p.events] == [e["kv"]["key"] for e in events]
    assert all(p.ByteSize() <= 400 for p in parts)
    assert watch_mod.fragments(response, 1 << 20) == [response]


def test_fragmented_stream(make_server):
    """Fragments are cut at --max-request-bytes plus etcd's 512 KiB gRPC overhead, as etcd
    3.4's watch server does; a response above the request limit alone goes whole
    (differential watch test: raftkv cut a 1.1 KB response at --max-request-bytes 1024)."""
    server = make_server(max_request_bytes=300)
    for i in range(5):
        put(server, b"f%d" % i, b"v" * 100)
    server.service.watch = _BatchWatch(server.service)
    s = Stream(server)
    try:
        s.create(b"f", b"g", fragment=True)
        whole = s.next()
        assert not whole.fragment and len(whole.events) == 5 and whole.ByteSize() > 300
        assert s.next().canceled  # _BatchWatch ended
        for i in range(5):
            put(server, b"f%d" % i, b"v" * (150 << 10))
        assert s.create(b"f", b"g", fragment=True).created
        parts = [s.next()]
        while parts[-1].fragment:
            parts.append(s.next())
        assert len(parts) > 1
        assert [e.kv.key for p in parts for e in p.events] == [b"f%d" % i for i in range(5)]
        assert all(p.ByteSize() < 300 + (512 << 10) for p in parts)
    finally:
        s.close()


class _BatchWatch:
    """Yields every current key as one batch of PUT events."""

    def __init__(self, service):
        self.service = service

    async def __call__(self, body):
        events = [{"type": 0, "kv": kv} for _, kv in sorted(self.service.kvs.items())]
        yield {"header": self.service._header(), "events": events}


def test_watch_errors(grpc_server, stream):
    async def failing_watch(body):
        raise RaftkvError("NO_LEADER")
        yield  # an async generator

    grpc_server.service.watch = failing_watch
    created = stream.create(b"a")
    resp = stream.next()
    assert resp.canceled and resp.watch_id == created.watch_id
    assert resp.cancel_reason == "etcdserver: no leader"
    grpc_server.service.fail_next["header"] = RaftkvError("STOPPED")
    stream.requests.put(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
    with pytest.raises(grpc.RpcError) as info:
        stream.next()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "etcdserver: server stopped"


def test_hasleader_metadata_refused_without_leader(grpc_server):
    service = grpc_server.service
    original = service._op_status
    service._op_status = lambda body: dict(original(body), leader=0)
    responses = grpc_server.watch.Watch(iter([]), timeout=STREAM_DEADLINE,
                                        metadata=[("hasleader", "true")])
    with pytest.raises(grpc.RpcError) as info:
        next(responses)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "etcdserver: no leader"
    service._op_status = original
    requests = queue.Queue()
    responses = grpc_server.watch.Watch(iter(requests.get, None), timeout=STREAM_DEADLINE,
                                        metadata=[("hasleader", "true")])
    requests.put(rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"a")))
    assert next(responses).created
    responses.cancel()
    requests.put(None)
