"""RemoteService (raftkv/api/etcd/workers.py): the service contract over native connections,
as the --grpc-workers processes use it."""
import asyncio

import pytest

from raftkv.api import wire
from raftkv.api.etcd import workers
from raftkv.api.native import start_native_server
from tests.api.fake_service import FakeService


class SnapService(FakeService):
    async def snapshot(self, who=None):
        for chunk in (b"ab", b"cd"):
            yield chunk


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20.0))


def test_calls_errors_watches_and_snapshot(monkeypatch):
    monkeypatch.setattr(workers, "STREAMS_PER_CONNECTION", 2)

    async def main():
        server, port = await start_native_server(SnapService(), "127.0.0.1", 0, watches_max=2)
        async with server:
            rs = workers.RemoteService("127.0.0.1", port, 5.0)
            await rs.call("put", {"key": b"a", "value": b"1"})
            got = await rs.call("range", {"key": b"a"})
            assert got["kvs"][0]["value"] == b"1"
            with pytest.raises(wire.RaftkvError) as exc:
                await rs.call("lease_revoke", {"ID": 12345})
            assert exc.value.code == "LEASE_NOT_FOUND"
            # 5 watches: more than one native connection allows (watches_max=2 here).
            streams = [rs.watch({"key": b"w"}) for _ in range(5)]
            for s in streams:
                assert (await s.__anext__())["created"]  # registered at the member
            firsts = [asyncio.ensure_future(s.__anext__()) for s in streams]
            assert len(rs._stream_conns) == 3
            await rs.call("put", {"key": b"w", "value": b"x"})
            for f in firsts:
                assert (await f)["events"][0]["kv"]["key"] == b"w"
            for s in streams:
                await s.aclose()
            assert len(rs._stream_conns) == 1
            assert [c async for c in rs.snapshot()] == [b"ab", b"cd"]

    run(main())


def test_a_member_that_is_gone_is_an_etcd_error():
    async def main():
        server, port = await start_native_server(FakeService(), "127.0.0.1", 0)
        server.close()
        await server.wait_closed()
        rs = workers.RemoteService("127.0.0.1", port, 5.0)
        with pytest.raises(wire.RaftkvError) as exc:
            await rs.call("range", {"key": b"a"})
        assert exc.value.code == "STOPPED"

    run(main())
