"""etcdserverpb.Maintenance: Alarm, Status, Defragment, Hash, HashKV, Snapshot (server
stream), MoveLeader.

Snapshot: `service.snapshot()` is an async iterator of the byte chunks of the member's state
as etcd's backend, a bbolt file (raftkv/mvcc/bbolt.py, mvcc/snapshot.export_bbolt), so
`etcdctl snapshot status/restore` read it. They are sent as blobs of at most SNAPSHOT_BLOB_MAX
bytes, followed (as etcd does) by one final message whose blob is the 32-byte SHA-256 of
everything sent before; etcdctl checks it, and first checks that the size is a multiple of 512
plus 32. A bbolt file is a whole number of 4096-byte pages; an image of another size would be
zero-padded to a multiple of 512 before the digest.
remaining_bytes is 0 on every message: the image's total size is not known up front (etcd's
clients do not read it).
"""
from __future__ import annotations

import hashlib

from raftkv.api.etcd.convert import RaftkvError, abort, unary, with_identity
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

SNAPSHOT_BLOB_MAX = 1 << 20
SNAPSHOT_ALIGN = 512  # etcdctl wants (image + digest) % 512 == 32, as for a bbolt file


class MaintenanceServicer(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, service):
        self._service = service

    async def Alarm(self, request, context):
        return await self._headerless(context, "alarm", request, rpc_pb2.AlarmResponse)

    async def Status(self, request, context):
        return await unary(self._service, context, "status", request, rpc_pb2.StatusResponse)

    async def Defragment(self, request, context):
        return await self._headerless(context, "defragment", request,
                                      rpc_pb2.DefragmentResponse)

    async def _headerless(self, context, op, request, response_cls):
        """etcd 3.4's maintenance server answers Alarm and Defragment without a response
        header (checked on 3.4.23); the native protocol keeps raftkv's."""
        response = await unary(self._service, context, op, request, response_cls)
        response.ClearField("header")
        return response

    async def Hash(self, request, context):
        return await unary(self._service, context, "hash", request, rpc_pb2.HashResponse)

    async def HashKV(self, request, context):
        return await unary(self._service, context, "hash_kv", request, rpc_pb2.HashKVResponse)

    async def MoveLeader(self, request, context):
        return await unary(self._service, context, "move_leader", request,
                           rpc_pb2.MoveLeaderResponse)

    async def Snapshot(self, request, context):
        digest = hashlib.sha256()
        total = 0
        try:
            async for chunk in self._service.snapshot(who=with_identity(context, {})):
                chunk = bytes(chunk)
                digest.update(chunk)
                total += len(chunk)
                for start in range(0, len(chunk), SNAPSHOT_BLOB_MAX):
                    blob = chunk[start:start + SNAPSHOT_BLOB_MAX]
                    yield rpc_pb2.SnapshotResponse(blob=blob)
        except RaftkvError as exc:
            await abort(context, exc)
        pad = bytes(-total % SNAPSHOT_ALIGN)
        if pad:
            digest.update(pad)
            yield rpc_pb2.SnapshotResponse(blob=pad)
        yield rpc_pb2.SnapshotResponse(blob=digest.digest())
