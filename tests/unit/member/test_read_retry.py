"""Reads in the Ready loop. A ReadIndex round not confirmed within READ_INDEX_RETRY_S is asked
again (as etcd does), so a read whose request or answer was lost with a peer connection is
served once the cluster answers, instead of waiting for its timeout. A serializable read waits
until what this member applied is visible, so it sees the writes the member acknowledged."""
import asyncio
import types

from raftkv.server.raft_loop import READ_INDEX_RETRY_S, RaftLoop


class FakeNode:
    def __init__(self):
        self.raft = types.SimpleNamespace(term=1, vote=0)
        self.asked = []

    def read_index(self, ctx):
        self.asked.append(ctx)

    def has_ready(self):
        return False


def _loop(node):
    return RaftLoop(node, 1, io=None, send=None, tick_s=0.1, on_conf_change=None,
                    on_tick=None)


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
