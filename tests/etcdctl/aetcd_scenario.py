"""Put, get, watch, lease and txn through aetcd (an etcd v3 client library from PyPI).

Run as a separate process by test_client_library.py: aetcd carries its own generated etcd
protobuf modules, which must not share a process with raftkv's (same proto file names).
Usage: python aetcd_scenario.py HOST PORT [auth]; prints one line per check and "ALL OK" at the
end ("auth": the authentication checks, with users set up by the caller).
"""
import asyncio
import sys

import aetcd


async def scenario(host, port):
    async with aetcd.Client(host=host, port=port, timeout=10) as c:
        await c.put(b"lib/a", b"1")
        got = await c.get(b"lib/a")
        assert got.value == b"1", got
        print("put/get ok")

        await c.put(b"lib/b", b"2")
        prefix = [kv.key async for kv in _aiter(await c.get_prefix(b"lib/"))]
        assert prefix == [b"lib/a", b"lib/b"], prefix
        print("get_prefix ok")

        watch = await c.watch(b"lib/w")
        await c.put(b"lib/w", b"x")
        async for event in watch:
            assert event.kv.key == b"lib/w" and event.kv.value == b"x", event
            break
        await watch.cancel()
        print("watch ok")

        lease = await c.lease(10)
        await c.put(b"lib/leased", b"v", lease=lease)
        remaining = await lease.remaining_ttl()
        assert 0 < remaining <= 10, remaining
        assert await lease.granted_ttl() == 10
        assert await lease.keys() == [b"lib/leased"]
        await lease.refresh()
        await lease.revoke()
        assert await c.get(b"lib/leased") is None
        print("lease ok")

        ok, _ = await c.transaction(
            compare=[c.transactions.value(b"lib/a") == b"1"],
            success=[c.transactions.put(b"lib/t", b"yes")],
            failure=[c.transactions.put(b"lib/t", b"no")])
        assert ok and (await c.get(b"lib/t")).value == b"yes"
        ok, _ = await c.transaction(
            compare=[c.transactions.version(b"lib/a") > 5],
            success=[c.transactions.put(b"lib/t", b"yes2")],
            failure=[c.transactions.put(b"lib/t", b"no2")])
        assert not ok and (await c.get(b"lib/t")).value == b"no2"
        print("txn ok")
    print("ALL OK")


async def auth_scenario(host, port):
    """With auth on (set up by the test): user alice may write lib/app/ and nothing else."""
    async with aetcd.Client(host=host, port=port, timeout=10, username="alice",
                            password="alicepw") as c:
        await c.put(b"lib/app/x", b"1")
        assert (await c.get(b"lib/app/x")).value == b"1"
        try:
            await c.put(b"lib/other", b"1")
        except aetcd.exceptions.ClientError as exc:  # PermissionDenied
            assert "permission denied" in str(exc), exc
        else:
            raise AssertionError("a write outside alice's keys was accepted")
        print("auth ok")
    try:
        async with aetcd.Client(host=host, port=port, timeout=10, username="alice",
                                password="wrong") as c:
            await c.get(b"lib/app/x")
    except aetcd.exceptions.ClientError as exc:
        assert "authentication failed" in str(exc), exc
        print("bad password refused")
    print("ALL OK")


async def _aiter(items):
    for item in items:
        yield item


if __name__ == "__main__":
    run = auth_scenario if sys.argv[3:] == ["auth"] else scenario
    asyncio.run(run(sys.argv[1], int(sys.argv[2])))
