"""Load generator drivers that need raftkv's client (imported by loadgen only when asked for).

native: "native:host:port,host:port,..." (an http:// prefix is accepted, and a member's native
Unix socket as unix://PATH or unixs://PATH: any AsyncClient endpoint). Each driver is one
AsyncClient, i.e. one pipelined connection; the many client coroutines that share a driver
multiplex their requests on it. Driver n starts at endpoint n mod len(endpoints), so
connections spread over the members (followers answer writes with NOT_LEADER, and the client
then moves to the next endpoint). With a user (name, password) the AsyncClient authenticates
as that user (its status() call in connect() already does) and sends the token with every
request.
"""
from __future__ import annotations

import asyncio
import logging

from raftkv.cli.loadgen import register_driver
from raftkv.client import AsyncClient
from raftkv.client.types import prefix_range_end

NATIVE_TIMEOUT_S = 10.0  # per operation, retries included; a slow op counts as an error after


class NativeDriver:
    def __init__(self, arg, conn_index, user=None):
        endpoints = [e for e in (arg or "127.0.0.1:2379").split(",") if e.strip()]
        assert endpoints, "native driver needs endpoints"
        shift = conn_index % len(endpoints)
        self.endpoints = endpoints[shift:] + endpoints[:shift]
        self.user = user  # (name, password) or None
        self.client = None

    async def connect(self):
        auth = {} if self.user is None else {"user": self.user[0], "password": self.user[1]}
        self.client = AsyncClient(self.endpoints, timeout=NATIVE_TIMEOUT_S, **auth)
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


# grpc: the etcd v3 API (etcdserverpb.KV) through the generated stubs, so the same driver runs
# against raftkv's gRPC front end and against a real etcd. "grpc:host:port,host:port,...".
# Each driver is one grpc.aio channel (one HTTP/2 connection): the client coroutines that share
# it have many requests in flight on it at once. Driver n starts at endpoint n mod len; after a
# transport failure (UNAVAILABLE, DEADLINE_EXCEEDED) it moves to the next endpoint, as clientv3's
# balancer would; the failed call itself still counts as an error.
#
# With a user (name, password), the driver does what etcd's clients do: Auth.Authenticate once
# per connection (in connect(), which also warms the channel up), the token as gRPC metadata
# "token" on every call, and on "invalid auth token" (the token expired or a member restarted)
# one new Authenticate, shared by the calls that failed with the same token, and a retry.
#
# The stubs are generated message definitions (no server code); tools/tidy.py lets raftkv.cli
# import raftkv.api.etcd.proto for this driver.

GRPC_TIMEOUT_S = 10.0
_GRPC_FAILOVER_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
INVALID_TOKEN_DETAILS = "etcdserver: invalid auth token"  # etcd's ErrGRPCInvalidAuthToken


class GrpcDriver:
    _pb = None  # (rpc_pb2, rpc_pb2_grpc), loaded once per process

    def __init__(self, arg, conn_index, user=None):
        endpoints = [e.strip() for e in (arg or "127.0.0.1:2379").split(",") if e.strip()]
        endpoints = [e.split("://", 1)[-1] for e in endpoints]
        assert endpoints, "grpc driver needs endpoints"
        self.endpoints = endpoints
        self.index = conn_index % len(endpoints)
        self.channel = None
        self.kv = None
        self._closing = set()  # channels left behind by a failover, closing with grace
        self.pb, self.pb_grpc = self._stubs()
        self.user = user  # (name, password) or None
        self.metadata = None  # (("token", token),) once authenticated; None without a user
        self.authentications = 0  # Authenticate calls made (connect and re-authentications)
        self._auth_lock = asyncio.Lock()

    @classmethod
    def _stubs(cls):
        if cls._pb is None:  # imported on first use: native-only runs never load protobuf
            from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

            cls._pb = (rpc_pb2, rpc_pb2_grpc)
        return cls._pb

    async def _open(self):
        import grpc

        self.channel = grpc.aio.insecure_channel(self.endpoints[self.index])
        self.kv = self.pb_grpc.KVStub(self.channel)

    async def connect(self):
        if len(self.endpoints) > 1:
            await self._find_leader()
        await self._open()
        if self.user is not None:
            await self.authenticate()  # also connects: the user may not read the key below
            return
        # One cheap serializable read so that the timed loop measures requests, not connects.
        await self.kv.Range(self.pb.RangeRequest(key=b"\0", serializable=True, count_only=True),
                            timeout=GRPC_TIMEOUT_S, wait_for_ready=True)

    async def authenticate(self, failed_metadata=None):
        """Auth.Authenticate as self.user; later calls send the new token. failed_metadata:
        the metadata a call failed with; if another coroutine has replaced it meanwhile, its
        token is used instead of authenticating again."""
        async with self._auth_lock:
            if failed_metadata is not None and self.metadata is not failed_metadata:
                return
            name, password = self.user
            stub = self.pb_grpc.AuthStub(self.channel)
            resp = await stub.Authenticate(
                self.pb.AuthenticateRequest(name=name, password=password),
                timeout=GRPC_TIMEOUT_S, wait_for_ready=True)
            self.authentications += 1
            self.metadata = (("token", resp.token),)

    async def _find_leader(self):
        """Start on the leader's endpoint, as raftkv's native client does (prefer_leader), so
        that both protocols, and etcd, are measured with writes that skip a follower's
        forwarding hop."""
        import grpc

        ids, leader = {}, 0
        for i, ep in enumerate(self.endpoints):
            channel = grpc.aio.insecure_channel(ep)
            try:
                r = await self.pb_grpc.MaintenanceStub(channel).Status(
                    self.pb.StatusRequest(), timeout=2.0)
                ids[r.header.member_id] = i
                leader = leader or r.leader
            except grpc.aio.AioRpcError:
                continue
            finally:
                await channel.close()
            if leader in ids:
                self.index = ids[leader]
                return

    async def _call(self, method_name, request, retried=False):
        import grpc

        channel, metadata = self.channel, self.metadata
        try:
            return await getattr(self.kv, method_name)(request, timeout=GRPC_TIMEOUT_S,
                                                       metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            if metadata is not None and not retried and _invalid_token(exc):
                await self.authenticate(metadata)  # once: the retry's error is final
                return await self._call(method_name, request, retried=True)
            _note_error(exc)
            failover = exc.code().name in _GRPC_FAILOVER_CODES and len(self.endpoints) > 1
            if failover and channel is self.channel:  # once per broken channel, not per call
                await self._failover()
            raise

    async def _failover(self):
        """Move to the next endpoint. The old channel closes in the background with a grace
        period, so the other calls in flight on it end on their own (no CancelledError)."""
        old = self.channel
        self.index = (self.index + 1) % len(self.endpoints)
        await self._open()
        if old is not None:
            task = asyncio.ensure_future(old.close(grace=GRPC_TIMEOUT_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def put(self, key, value):
        await self._call("Put", self.pb.PutRequest(key=key, value=value))

    async def get(self, key, serializable):
        await self._call("Range", self.pb.RangeRequest(key=key, serializable=serializable))

    async def txn_put(self, key, value):
        op = self.pb.RequestOp(request_put=self.pb.PutRequest(key=key, value=value))
        await self._call("Txn", self.pb.TxnRequest(success=[op]))

    async def watch_keys(self, prefix):
        """An async iterator of the keys of the events under prefix (one Watch stream)."""
        end = prefix_range_end(prefix)
        create = self.pb.WatchCreateRequest(key=prefix, range_end=end)
        stub = self.pb_grpc.WatchStub(self.channel)
        call = stub.Watch(metadata=self.metadata)
        await call.write(self.pb.WatchRequest(create_request=create))
        return _WatchKeys(call)

    async def status(self):
        """(member_id, leader_id) of the member this driver talks to (Maintenance.Status)."""
        stub = self.pb_grpc.MaintenanceStub(self.channel)
        r = await stub.Status(self.pb.StatusRequest(), timeout=2.0)
        return r.header.member_id, r.leader

    async def close(self):
        if self.channel is not None:
            await self.channel.close(grace=None)
            self.channel = None
        for task in list(self._closing):
            task.cancel()


_seen_codes = set()


def _invalid_token(exc):
    return exc.code().name == "UNAUTHENTICATED" and exc.details() == INVALID_TOKEN_DETAILS


def _note_error(exc):
    """Log the first error of each gRPC status code in this process (errors are only counted
    by the engine; this says what they were)."""
    code = exc.code().name
    if code not in _seen_codes:
        _seen_codes.add(code)
        logging.getLogger("raftkv.bench").warning("grpc %s: %s (first of its kind)", code,
                                                  exc.details())


class _WatchKeys:
    def __init__(self, call):
        self.call = call
        self.pending = []

    def __aiter__(self):
        return self

    async def __anext__(self):
        while not self.pending:
            resp = await self.call.read()
            if resp is None or resp.canceled:
                raise StopAsyncIteration
            self.pending.extend(ev.kv.key for ev in resp.events)
        return self.pending.pop(0)

    def cancel(self):
        self.call.cancel()


register_driver("grpc", GrpcDriver)
