"""Reads in the Ready loop. A ReadIndex round not confirmed within READ_INDEX_RETRY_S is asked
again (as etcd does), so a read whose request or answer was lost with a peer connection is
served once the cluster answers, instead of waiting for its timeout. A read arriving while the
member knows no leader waits in line until one is known, and a round pending when the leader
changes is asked again of the new one (etcd 3.4.23 fails it with `leader changed`); the
caller's timeout is the only bound. A client that fails over by itself (raftkv's own, which
asks for it in its hello) is refused at once instead. A serializable read waits until what
this member applied is visible, so it sees the writes the member acknowledged."""
import asyncio
import types

import pytest

from raftkv.errors import RaftkvError
from raftkv.raft import Role, SoftState
from raftkv.server.raft_loop import READ_INDEX_RETRY_S, RaftLoop

LEADER = 2


class FakeNode:
    def __init__(self):
        self.raft = types.SimpleNamespace(term=1, vote=0)
        self.asked = []

    def read_index(self, ctx):
        self.asked.append(ctx)

    def has_ready(self):
        return False


def _loop(node, leader=LEADER):
    loop = RaftLoop(node, 1, io=None, send=None, tick_s=0.1, on_conf_change=None,
                    on_tick=None)
    loop.leader_id = leader
    return loop


def test_a_read_without_a_leader_waits_and_is_asked_once_one_is_known():
    async def main():
        node = FakeNode()
        loop = _loop(node, leader=0)
        read = loop.read_barrier()
        gone = loop.read_barrier()
        loop._drain_inbox()
        assert node.asked == []  # the core would drop it: not asked
        assert not read.done() and not gone.done()
        gone.cancel()  # its caller gave up while there was no leader: forgotten on a tick
        loop._enqueue(("tick", None))
        node.tick = lambda: None
        loop._drain_inbox()
        assert loop._read_waiters == [read] and node.asked == []
        loop._on_soft_state(SoftState(lead=LEADER, role=Role.FOLLOWER))
        loop._drain_inbox()
        assert len(node.asked) == 1
        assert loop._read_rounds[node.asked[0]][1] == [read]
        assert not read.done()

    asyncio.run(main())


def test_a_round_pending_at_a_leader_change_is_asked_of_the_next_leader():
    async def main():
        node = FakeNode()
        loop = _loop(node)
        read = loop.read_barrier()
        gone = loop.read_barrier()
        loop._drain_inbox()
        first = node.asked[0]
        gone.cancel()
        loop._on_soft_state(SoftState(lead=0, role=Role.CANDIDATE))  # the leader is lost
        loop._drain_inbox()
        assert not read.done()  # etcd 3.4.23 would answer `leader changed` here
        assert node.asked == [first] and loop._read_rounds == {}
        assert loop._read_waiters == [read]
        loop._on_soft_state(SoftState(lead=3, role=Role.FOLLOWER))
        loop._drain_inbox()
        assert len(node.asked) == 2 and node.asked[1] != first
        assert loop._read_rounds[node.asked[1]][1] == [read]
        loop._on_soft_state(SoftState(lead=LEADER, role=Role.FOLLOWER))  # straight to another
        loop._drain_inbox()
        assert len(node.asked) == 3 and loop._read_rounds[node.asked[2]][1] == [read]

    asyncio.run(main())


def test_a_fail_fast_read_is_refused_without_a_leader_and_fails_when_its_leader_is_lost():
    async def main():
        node = FakeNode()
        loop = _loop(node, leader=0)
        refused = loop.read_barrier(fail_fast=True)
        assert refused.done() and refused.exception().code == "NO_LEADER"
        assert loop._read_waiters == []
        loop._on_soft_state(SoftState(lead=LEADER, role=Role.FOLLOWER))
        fast, held = loop.read_barrier(fail_fast=True), loop.read_barrier()
        loop._drain_inbox()
        assert loop._read_rounds[node.asked[0]][1] == [fast, held]
        loop._on_soft_state(SoftState(lead=0, role=Role.CANDIDATE))  # the leader is lost
        with pytest.raises(RaftkvError) as err:
            await fast
        assert err.value.code == "LEADER_CHANGED"  # its client asks another member
        assert not held.done() and loop._read_waiters == [held]  # the other waits, as before

    asyncio.run(main())


def test_an_unconfirmed_round_is_asked_again_and_the_old_answer_ignored():
    async def main():
        node = FakeNode()
        loop = _loop(node)
        read = loop.read_barrier()
        gone = loop.read_barrier()
        loop._drain_inbox()
        assert len(node.asked) == 1
        first = node.asked[0]
        started, _ = loop._read_rounds[first]

        loop._retry_read_rounds(started + READ_INDEX_RETRY_S / 2)  # too soon: nothing
        loop._drain_inbox()
        assert node.asked == [first]

        gone.cancel()  # its client gave up: not asked for again
        loop._retry_read_rounds(started + READ_INDEX_RETRY_S)
        loop._drain_inbox()
        assert len(node.asked) == 2 and node.asked[1] != first
        second = node.asked[1]
        assert list(loop._read_rounds) == [second] and loop._read_rounds[second][1] == [read]
        assert not read.done()

    asyncio.run(main())


def test_reads_queued_meanwhile_join_the_new_round():
    async def main():
        node = FakeNode()
        loop = _loop(node)
        a = loop.read_barrier()
        loop._drain_inbox()
        started, _ = loop._read_rounds[node.asked[0]]
        b = loop.read_barrier()
        loop._retry_read_rounds(started + READ_INDEX_RETRY_S + 0.1)
        loop._drain_inbox()
        assert len(node.asked) == 2
        assert list(loop._read_rounds) == [node.asked[1]]
        assert loop._read_rounds[node.asked[1]][1] == [b, a]

    asyncio.run(main())


def test_a_serializable_read_waits_until_this_members_applies_are_visible():
    async def main():
        loop = _loop(FakeNode())
        flushed = []
        loop.flush = lambda: flushed.append(1)
        assert loop.local_barrier().done()  # nothing applied but unpublished: at once
        loop._submitted_index, loop.applied_index = 7, 5  # answered, its round not committed
        fut = loop.local_barrier()
        assert not fut.done() and flushed  # the lingering round is asked to commit now
        loop.applied_index = 6
        loop._release_reads()
        assert not fut.done()
        loop.applied_index = 7
        loop._release_reads()
        assert fut.result() == 7

    asyncio.run(main())
