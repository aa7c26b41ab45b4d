"""v3lockpb.Lock: Lock (blocks until the caller holds the lock) and Unlock, as etcd 3.4's
v3lock server: raftkv/api/etcd/concurrency.py over the service, every error gRPC Unknown but
STOPPED (convert.abort_recipe)."""
from __future__ import annotations

from raftkv.api.etcd.concurrency import Caller, lock, session_lease, unlock
from raftkv.api.etcd.convert import RaftkvError, abort_recipe
from raftkv.api.etcd.proto import v3lock_pb2, v3lock_pb2_grpc


class LockServicer(v3lock_pb2_grpc.LockServicer):
    def __init__(self, service):
        self._service = service

    async def Lock(self, request, context):
        caller = Caller.of(self._service, context)
        try:
            lease = await session_lease(caller, request.lease)
            key, header = await lock(caller, request.name, lease)
        except RaftkvError as exc:
            await abort_recipe(context, exc)
        return v3lock_pb2.LockResponse(header=header, key=key)

    async def Unlock(self, request, context):
        caller = Caller.of(self._service, context)
        try:
            header = await unlock(caller, request.key)
        except RaftkvError as exc:
            await abort_recipe(context, exc)
        return v3lock_pb2.UnlockResponse(header=header)
