"""Client requests are cut into entry-sized batches and resolved only on their proposer."""
import asyncio

import pytest

from raftkv.server.proposals import Batcher, Registry, Reply, decode_batch, encode_batch


def test_batch_round_trip_and_noop():
    reqs = [(7, 1, "put", {"key": b"k", "value": b"v"}), (7, 2, "delete_range", {"key": b"k"})]
    assert decode_batch(encode_batch(reqs)) == reqs
    assert decode_batch(b"") == []


def test_batcher_respects_byte_and_count_limits():
    b = Batcher(entry_bytes_max=100, entry_requests_max=3)
    for i in range(10):
        b.add((1, i, "put", {"key": b"k%d" % i}), 40)
    payloads = b.cut()
    batches = [decode_batch(p) for p in payloads]
    assert [len(x) for x in batches] == [2, 2, 2, 2, 2]  # 2 x 40 bytes fit, 3 would not
    assert [r[1] for x in batches for r in x] == list(range(10))  # order kept
    assert len(b) == 0 and b.cut() == []
    b2 = Batcher(entry_bytes_max=10_000, entry_requests_max=3)
    for i in range(7):
        b2.add((1, i, "put", {}), 1)
    assert [len(decode_batch(p)) for p in b2.cut()] == [3, 3, 1]


def test_oversized_single_request_still_gets_its_own_entry():
    b = Batcher(entry_bytes_max=10)
    b.add((1, 1, "put", {"value": b"x" * 100}), 110)
    assert len(b.cut()) == 1


def test_registry_resolves_only_its_own_requests_and_expires():
    async def main():
        reg = Registry(member_id=5)
        seq, fut = reg.register(timeout_s=60)
        reg.resolve(6, seq, "other member's")  # same seq, other proposer: ignored
        assert not fut.done()
        reg.resolve(5, seq, "mine")
        assert await fut == "mine"
        seq2, fut2 = reg.register(timeout_s=0)
        assert reg.expire(lambda: TimeoutError("late")) == 1
        with pytest.raises(TimeoutError):
            await fut2
        _, fut3 = reg.register(timeout_s=60)
        reg.fail_all(lambda: RuntimeError("stopping"))
        with pytest.raises(RuntimeError):
            await fut3
        assert len(reg) == 0

    asyncio.run(main())


def test_registry_sequences_differ_between_incarnations():
    async def main():
        a, b = Registry(1), Registry(1)
        return a.register(1)[0], b.register(1)[0]

    s1, s2 = asyncio.run(main())
    assert s1 != s2


def test_a_reply_waiter_is_called_at_once_and_only_once():
    async def main():
        reg = Registry(7)
        got = []
        seq, reply = reg.register(5.0, Reply(lambda resp, exc: got.append((resp, exc))))
        reg.resolve(7, seq, {"ok": 1})
        assert got == [({"ok": 1}, None)]  # synchronously, not a loop turn later
        reg.resolve(7, seq, {"ok": 2})
        assert reply.done() and len(got) == 1
        seq2, _ = reg.register(0.0, Reply(lambda resp, exc: got.append((resp, exc))))
        assert reg.expire(lambda: RuntimeError("late")) == 1
        assert got[1][0] is None and isinstance(got[1][1], RuntimeError)
        seq3, cancelled = reg.register(5.0, Reply(lambda resp, exc: got.append("called")))
        cancelled.cancel()
        reg.resolve(7, seq3, {})
        assert len(got) == 2

        def broken(resp, exc):
            raise ValueError("a bug in the callback")
        seq4, _ = reg.register(5.0, Reply(broken))
        reg.resolve(7, seq4, {})  # logged, never raised into the apply that resolves it
        assert len(reg) == 0

    asyncio.run(main())
