"""Load generator drivers that need raftkv's client (imported by loadgen only when asked for).

native: "native:host:port,host:port,..." (an http:// prefix is accepted). Each driver is one
AsyncClient, i.e. one pipelined connection; the many client coroutines that share a driver
multiplex their requests on it. Driver n starts at endpoint n mod len(endpoints), so
connections spread over the members (followers answer writes with NOT_LEADER, and the client
then moves to the next endpoint).
"""
from __future__ import annotations

from raftkv.cli.loadgen import register_driver
from raftkv.client import AsyncClient

NATIVE_TIMEOUT_S = 10.0  # per operation, retries included; a slow op counts as an error after


class NativeDriver:
    def __init__(self, arg, conn_index):
        endpoints = [e for e in (arg or "127.0.0.1:2379").split(",") if e.strip()]
        assert endpoints, "native driver needs endpoints"
        shift = conn_index % len(endpoints)
        self.endpoints = endpoints[shift:] + endpoints[:shift]
        self.client = None

    async def connect(self):
        self.client = AsyncClient(self.endpoints, timeout=NATIVE_TIMEOUT_S)
        await self.client.status()  # connects now, so the timed loop measures requests only

    async def put(self, key, value):
        await self.client.call("put", {"key": key, "value": value})

    async def get(self, key, serializable):
        body = {"key": key, "serializable": True} if serializable else {"key": key}
        await self.client.call("range", body)

    async def txn_put(self, key, value):
        await self.client.call("txn", {"compare": [], "failure": [],
                                       "success": [{"request_put": {"key": key,
                                                                    "value": value}}]})

    async def close(self):
        if self.client is not None:
            await self.client.close()


register_driver("native", NativeDriver)
