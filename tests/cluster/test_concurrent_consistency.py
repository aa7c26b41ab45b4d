"""Concurrent clients on every member, with watchers coming and going (which switches the
members' LMDB rounds between lingering, where the Ready loop applies inside the lent txn, and
committing at once): no update is lost or applied twice, every member ends with the same
history, and a watch from revision 1 sees that history once, in order."""
from __future__ import annotations

import asyncio
import threading
import time

import pytest

from raftkv.client import AsyncClient

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

COUNTERS = 4
WORKERS_PER_MEMBER = 2
RUN_S = 6.0
PREFIX = b"/cc/"


async def _increment_loop(client, stop_at, done):
    """Compare-and-swap increments of the counters in turn; counts the ones that succeeded."""
    t = client.transactions
    i = 0
    while time.monotonic() < stop_at:
        key = PREFIX + b"counter/%d" % (i % COUNTERS)
        i += 1
        value, meta = await client.get(key)
        n = int(value or b"0")
        cmp = [t.mod(key) == meta.mod_revision] if meta else [t.version(key) == 0]
        ok, _ = await client.transaction(cmp, [t.put(key, b"%d" % (n + 1))])
        if ok:
            done[key] = done.get(key, 0) + 1
        await client.put(PREFIX + b"log/%d" % i, b"x" * 64)  # plain puts in between


async def _watch_toggler(endpoints, stop_at):
    """Open and close watches on and off (each member switches its apply rounds)."""
    client = AsyncClient(endpoints, timeout=10.0, prefer_leader=False)
    try:
        while time.monotonic() < stop_at:
            events, cancel = await client.watch_prefix(PREFIX)
            await asyncio.sleep(0.3)
            await cancel()
            await asyncio.sleep(0.3)
    finally:
        await client.close()


def test_cas_counters_and_histories_agree_under_concurrency(shared_cluster3):
    h = shared_cluster3
    stop_at = time.monotonic() + RUN_S
    results, errors = [], []

    def worker(member, k):
        async def main():
            done = {}
            async with AsyncClient([member.native_endpoint], timeout=10.0) as client:
                await _increment_loop(client, stop_at, done)
            return done
        try:
            results.append(asyncio.run(main()))
        except Exception as exc:  # noqa: BLE001 -- reported below
            errors.append(repr(exc))

    def toggler(member):
        try:
            asyncio.run(_watch_toggler([member.native_endpoint], stop_at))
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(m, k))
               for m in h.members for k in range(WORKERS_PER_MEMBER)]
    threads += [threading.Thread(target=toggler, args=(m,)) for m in h.members[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=RUN_S + 60)
    assert not errors, errors
    assert len(results) == len(h.members) * WORKERS_PER_MEMBER

    succeeded = {}
    for done in results:
        for key, n in done.items():
            succeeded[key] = succeeded.get(key, 0) + n
    assert sum(succeeded.values()) > 0

    c = h.client(timeout=10.0)
    for key, n in succeeded.items():
        assert int(c.get(key)[0]) == n, key  # every acknowledged increment, exactly once

    # Every member, read alone and linearizably, holds the same keys and revisions.
    def view(m):
        return [(meta.key, meta.mod_revision, meta.version, v)
                for v, meta in h.client([m], timeout=10.0).get_prefix(PREFIX)]
    expected = view(h.members[0])
    deadline = time.monotonic() + 15.0
    for m in h.members[1:]:
        while view(m) != expected:
            assert time.monotonic() < deadline, f"{m.name} differs"
            time.sleep(0.1)

    # A watch from revision 1 replays the prefix's history once, in revision order, and
    # ends with the values the members hold.
    async def replay():
        async with AsyncClient([h.members[2].native_endpoint], timeout=10.0) as client:
            last_rev = max(rev for _, rev, _, _ in expected)
            events, cancel = await client.watch_prefix(PREFIX, start_revision=1)
            seen, final = [], {}
            async for ev in events:
                seen.append(ev.mod_revision)
                final[ev.key] = ev.value
                if ev.mod_revision >= last_rev:
                    break
            await cancel()
            return seen, final
    seen, final = asyncio.run(asyncio.wait_for(replay(), 60.0))
    assert seen == sorted(set(seen)), "events repeated or out of order"
    assert final == {k: v for k, _, _, v in expected}
