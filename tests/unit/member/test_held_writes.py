"""Writes on a member that knows no leader (an election, a majority down). As etcd 3.4.23,
whose raft node reads no proposal while it knows no leader, the Ready loop holds them in the
batcher, in arrival order, and proposes them on the first turn that knows a leader. A held
write whose --request-timeout passes (TIMEOUT) or whose caller goes away (its future or
Reply cancelled) is dropped and never proposed; none is proposed twice. A client that fails
over itself (raftkv's own: leaderless.FAIL_FAST) is refused at once (NO_LEADER). Writes
already proposed when the leader is lost still fail with LEADER_CHANGED; held ones wait on."""
import asyncio
import types

import pytest

from raftkv.errors import RaftkvError
from raftkv.raft import Role, SoftState
from raftkv.server.proposals import Reply, decode_batch
from raftkv.server.raft_loop import RaftLoop
from raftkv.server.service import Service

LEADER = 2
LONG_S = 60.0


class FakeNode:
    """The core as the loop sees it: raft.lead is whom it knows as leader right now."""

    def __init__(self, lead=0):
        self.raft = types.SimpleNamespace(term=1, vote=0, lead=lead)
        self.proposed = []  # payloads, as propose_many got them

    def propose_many(self, payloads):
        self.proposed.extend(payloads)

    def tick(self):
        pass

    def read_index(self, ctx):
        pass

    def has_ready(self):
        return False


def _loop(node, leader=0):
    loop = RaftLoop(node, 1, io=None, send=None, tick_s=0.1)
    loop.leader_id = leader
    return loop


def _proposed_keys(node):
    return [body["key"] for p in node.proposed for _, _, _, body, _ in decode_batch(p)]


def _put(loop, key, timeout_s=LONG_S, **kw):
    return loop.propose("put", {"key": key, "value": b"v"}, 64, timeout_s, **kw)


def _tick(loop):
    loop._enqueue(("tick", None))
    loop._drain_inbox()


def test_a_write_without_a_leader_is_held_then_proposed_once_in_order():
    async def main():
        node = FakeNode(lead=0)
        loop = _loop(node)
        answers = []
        a = _put(loop, b"a")
        _put(loop, b"b", waiter=Reply(lambda resp, exc: answers.append((resp, exc))))
        loop._drain_inbox()
        _tick(loop)
        assert node.proposed == [] and not a.done() and answers == []
        c = _put(loop, b"c")  # arrives while the others wait: goes after them
        loop._drain_inbox()
        assert node.proposed == [] and len(loop.batcher) == 3
        node.raft.lead = LEADER  # the core learned of a leader (its Ready comes next)
        loop._on_soft_state(SoftState(lead=LEADER, role=Role.FOLLOWER))
        loop._drain_inbox()
        assert _proposed_keys(node) == [b"a", b"b", b"c"]
        assert len(loop.batcher) == 0
        loop._drain_inbox()
        _tick(loop)
        assert _proposed_keys(node) == [b"a", b"b", b"c"]  # never again
        for seq in sorted(loop.registry._pending):
            loop.registry.resolve(1, seq, {"header": {}})
        assert a.done() and c.done() and answers == [({"header": {}}, None)]

    asyncio.run(main())


def test_a_held_write_that_timed_out_or_whose_caller_left_is_never_proposed():
    async def main():
        node = FakeNode(lead=0)
        loop = _loop(node)
        answers = []
        late = _put(loop, b"late", timeout_s=0.01)
        gone = _put(loop, b"gone")
        left = Reply(lambda resp, exc: answers.append(exc))
        _put(loop, b"left", waiter=left)
        kept = _put(loop, b"kept")
        loop._drain_inbox()
        await asyncio.sleep(0.03)
        assert loop.registry.expire(lambda: RaftkvError("TIMEOUT")) == 1  # as a tick does
        with pytest.raises(RaftkvError) as exc:
            await late
        assert exc.value.code == "TIMEOUT"
        gone.cancel()  # its task was cancelled: a gRPC deadline, a closed connection
        left.cancel()  # the task-free path's caller went away
        _tick(loop)  # a tick's turn drops them from the queue
        assert len(loop.batcher) == 1 and len(loop.registry) == 1
        gone_too = _put(loop, b"gone too")
        loop._drain_inbox()
        gone_too.cancel()  # gave up after the last tick: dropped when a leader is known
        node.raft.lead = LEADER
        loop._drain_inbox()
        assert _proposed_keys(node) == [b"kept"]
        assert answers == [] and not kept.done()  # a cancelled Reply is never called
        assert len(loop.registry) == 1

    asyncio.run(main())


def test_a_fail_fast_write_is_refused_at_once_without_a_leader():
    async def main():
        node = FakeNode(lead=0)
        loop = _loop(node, leader=LEADER)  # the Ready saying the leader is lost is not in
        answers = []
        fast = _put(loop, b"fast", fail_fast=True)
        _put(loop, b"fast-reply", waiter=Reply(lambda resp, exc: answers.append(exc.code)),
             fail_fast=True)
        held = _put(loop, b"held")
        loop._drain_inbox()
        with pytest.raises(RaftkvError) as exc:
            await fast
        assert exc.value.code == "NO_LEADER" and answers == ["NO_LEADER"]
        assert not held.done() and len(loop.batcher) == 1
        node.raft.lead = LEADER
        loop._drain_inbox()
        assert _proposed_keys(node) == [b"held"]

    asyncio.run(main())


def test_the_service_refuses_only_a_fail_fast_write_without_a_leader():
    svc = types.SimpleNamespace(m=types.SimpleNamespace(kv=types.SimpleNamespace(corrupt=0)),
                                max_request_bytes=1 << 20,
                                loop=types.SimpleNamespace(leader_id=0))
    body = {"key": b"k", "value": b"v"}
    assert Service._check_write(svc, body, "put", False) > 0  # held by the loop
    with pytest.raises(RaftkvError) as exc:
        Service._check_write(svc, body, "put", True)
    assert exc.value.code == "NO_LEADER"
    svc.loop.leader_id = LEADER
    assert Service._check_write(svc, body, "put", True) > 0


def test_a_leader_lost_fails_proposed_writes_and_keeps_held_ones_waiting():
    async def main():
        node = FakeNode(lead=LEADER)
        loop = _loop(node, leader=LEADER)
        proposed = _put(loop, b"proposed")
        loop._drain_inbox()
        assert _proposed_keys(node) == [b"proposed"]
        node.raft.lead = 0  # a vote request of a higher term, stepped in this turn
        held = _put(loop, b"held")
        loop._drain_inbox()
        assert len(loop.batcher) == 1
        loop._on_soft_state(SoftState(lead=0, role=Role.FOLLOWER))  # its Ready
        with pytest.raises(RaftkvError) as exc:
            await proposed  # the outcome is unknown: the client decides (its idempotency id)
        assert exc.value.code == "LEADER_CHANGED"
        assert not held.done()
        node.raft.lead = 3
        loop._on_soft_state(SoftState(lead=3, role=Role.FOLLOWER))
        loop._drain_inbox()
        assert _proposed_keys(node) == [b"proposed", b"held"] and not held.done()

    asyncio.run(main())
