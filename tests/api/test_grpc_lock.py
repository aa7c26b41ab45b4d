"""Lock and Election over gRPC (raftkv/api/etcd/lock.py, election.py, concurrency.py) on the fake
service: a call that waits, then its client cancels, disconnects or runs out of time, leaves no
watcher and no task behind, and its key is deleted as etcd's cleanup deletes it. (What they
answer is compared with etcd 3.4.23 in tests/etcdctl/test_differential_lock.py.)"""
from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from raftkv.api.etcd import concurrency
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc, v3election_pb2 as epb
from raftkv.api.etcd.proto import v3election_pb2_grpc
from raftkv.api.etcd.proto import v3lock_pb2 as lpb, v3lock_pb2_grpc
from raftkv.errors import RaftkvError
from raftkv.server.leaderless import LEADER_POLL_S
from tests.api.conftest import GrpcFakeService, ServerThread

pytestmark = pytest.mark.timeout(60)
T = 5
WAIT_S = 10.0
POLL_S = 0.02
_RANGE = rpc_pb2.RangeRequest


class ConcurrencyFakeService(GrpcFakeService):
    """The fake service's range, plus what the recipes ask of it: sort by create revision,
    a limit after sorting, max_create_revision."""

    def _op_range(self, body):
        resp = super()._op_range(dict(body, limit=0))
        kvs = [kv for kv in resp["kvs"] if not body.get("max_create_revision")
               or kv["create_revision"] <= body["max_create_revision"]]
        if body.get("sort_target") == _RANGE.CREATE:
            kvs.sort(key=lambda kv: kv["create_revision"],
                     reverse=body.get("sort_order") == _RANGE.DESCEND)
        if body.get("limit"):
            kvs = kvs[:body["limit"]]
        return dict(resp, kvs=kvs, count=len(kvs))


@pytest.fixture
def server():
    service = ConcurrencyFakeService()
    thread = ServerThread(service)
    channels = []

    def channel():
        channels.append(grpc.insecure_channel(f"127.0.0.1:{thread.port}"))
        return channels[-1]
    yield service, thread, channel
    for c in channels:
        c.close()
    thread.stop()


def _tasks(thread):
    async def count():
        return len(asyncio.all_tasks())
    return asyncio.run_coroutine_threadsafe(count(), thread.loop).result(T)


def _until(predicate, what):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)


def _lease(channel, lease_id):
    rpc_pb2_grpc.LeaseStub(channel).LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=60),
                                               timeout=T)


def _held(channel):
    """Leases 0x1 and 0x2, and the lock "l" held with 0x1: (Lock stub, its LockResponse)."""
    for lease in (0x1, 0x2):
        _lease(channel, lease)
    lock = v3lock_pb2_grpc.LockStub(channel)
    return lock, lock.Lock(lpb.LockRequest(name=b"l", lease=0x1), timeout=T)


def _queued(service, key):
    """Until key exists and its waiter watches."""
    _until(lambda: key in service.kvs and service._watchers, f"{key!r} queued")


def _settled(service, thread, baseline, gone_key):
    """No watcher, the cleanup done, the key gone, and the loop's tasks back to baseline."""
    _until(lambda: not service._watchers, "the waiter's watcher closed")
    _until(lambda: gone_key not in service.kvs, f"{gone_key!r} deleted")
    _until(lambda: not concurrency._cleanups, "the cleanup task done")
    _until(lambda: _tasks(thread) <= baseline, "the RPC's tasks gone")


@pytest.mark.parametrize("end", ["cancel", "disconnect", "deadline"])
def test_a_waiting_lock_that_ends_leaves_nothing_behind(server, end):
    service, thread, channel = server
    lock, held = _held(channel())
    assert held.key == b"l/1"
    baseline = _tasks(thread)
    waiter_channel = channel()
    waiter = v3lock_pb2_grpc.LockStub(waiter_channel).Lock.future(
        lpb.LockRequest(name=b"l", lease=0x2), timeout=1.0 if end == "deadline" else 30)
    _queued(service, b"l/2")
    if end == "cancel":
        waiter.cancel()
    elif end == "disconnect":
        waiter_channel.close()
    _settled(service, thread, baseline, b"l/2")
    assert b"l/1" in service.kvs  # the holder's key is untouched
    with pytest.raises((grpc.RpcError, grpc.FutureCancelledError)):
        waiter.result(T)


def test_a_lock_released_after_waiting_closes_its_watcher(server):
    service, thread, channel = server
    lock, held = _held(channel())
    baseline = _tasks(thread)
    waiter = lock.Lock.future(lpb.LockRequest(name=b"l", lease=0x2), timeout=30)
    _queued(service, b"l/2")
    lock.Unlock(lpb.UnlockRequest(key=held.key), timeout=T)
    assert waiter.result(T).key == b"l/2"
    _settled(service, thread, baseline, b"l/1")


def test_a_cancelled_campaign_resigns_and_an_observer_leaves_nothing_behind(server):
    service, thread, channel = server
    main = channel()
    for lease in (0x1, 0x2):
        _lease(main, lease)
    election = v3election_pb2_grpc.ElectionStub(main)
    baseline = _tasks(thread)
    observer = election.Observe(epb.LeaderRequest(name=b"e"), timeout=30)
    leader = election.Campaign(epb.CampaignRequest(name=b"e", lease=0x1, value=b"a"),
                               timeout=T)
    assert next(observer).kv.value == b"a"
    waiter = election.Campaign.future(epb.CampaignRequest(name=b"e", lease=0x2, value=b"b"),
                                      timeout=30)
    _until(lambda: b"e/2" in service.kvs and len(service._watchers) == 2, "e/2 queued")
    waiter.cancel()
    observer.cancel()
    _settled(service, thread, baseline, b"e/2")
    assert service.kvs[b"e/1"]["create_revision"] == leader.leader.rev


def test_a_cleanup_refused_for_want_of_a_leader_is_sent_again(server):
    """A member without a leader refuses the cancelled waiter's delete (NO_LEADER, nothing
    proposed); the cleanup tries again, as etcd's delete waits for a leader, so the key goes
    rather than staying until its lease ends."""
    service, thread, channel = server
    lock, held = _held(channel())
    baseline = _tasks(thread)
    waiter = lock.Lock.future(lpb.LockRequest(name=b"l", lease=0x2), timeout=30)
    _queued(service, b"l/2")
    service.fail_next["delete_range"] = RaftkvError("NO_LEADER")
    waiter.cancel()
    _settled(service, thread, baseline, b"l/2")
    assert [op for op, _ in service.calls].count("delete_range") == 2


def test_lock_and_leader_refused_for_want_of_a_leader_are_sent_again(server):
    service, _, channel = server
    main = channel()
    _lease(main, 0x1)
    service.fail_next["txn"] = RaftkvError("NO_LEADER")
    lock = v3lock_pb2_grpc.LockStub(main).Lock(lpb.LockRequest(name=b"l", lease=0x1), timeout=T)
    assert lock.key == b"l/1"
    election = v3election_pb2_grpc.ElectionStub(main)
    election.Campaign(epb.CampaignRequest(name=b"e", lease=0x1, value=b"a"), timeout=T)
    service.fail_next["range"] = RaftkvError("NO_LEADER")
    assert election.Leader(epb.LeaderRequest(name=b"e"), timeout=T).kv.value == b"a"


def test_no_leader_is_answered_once_the_request_timeout_has_passed():
    class Leaderless:
        timeout_s = 0.3

        def __init__(self):
            self.calls = 0

        async def call(self, op, body):
            self.calls += 1
            raise RaftkvError("NO_LEADER")
    service = Leaderless()
    started = time.monotonic()
    with pytest.raises(RaftkvError) as exc:
        asyncio.run(concurrency.leader(concurrency.Caller(service, {}), b"e"))
    assert exc.value.code == "NO_LEADER"
    assert time.monotonic() - started >= service.timeout_s - LEADER_POLL_S
    assert service.calls >= 2


def test_the_member_going_away_is_answered_unavailable(server):
    """STOPPED (a --grpc-workers worker lost its member, or the member stops): Unavailable, as
    a client of an etcd that dies sees its connection drop, not Unknown; Observe ends so too."""
    service, _, channel = server
    main = channel()
    _lease(main, 0x1)
    service.fail_next["txn"] = RaftkvError("STOPPED")
    with pytest.raises(grpc.RpcError) as exc:
        v3lock_pb2_grpc.LockStub(main).Lock(lpb.LockRequest(name=b"l", lease=0x1), timeout=T)
    assert (exc.value.code(), exc.value.details()) == (grpc.StatusCode.UNAVAILABLE,
                                                       "etcdserver: server stopped")
    service.fail_next["range"] = RaftkvError("STOPPED")
    observer = v3election_pb2_grpc.ElectionStub(main).Observe(epb.LeaderRequest(name=b"e"),
                                                               timeout=T)
    with pytest.raises(grpc.RpcError) as exc:
        next(observer)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
