"""etcdserverpb.Lease: LeaseGrant, LeaseRevoke, LeaseKeepAlive (stream), LeaseTimeToLive,
LeaseLeases.

As etcd does, an unknown lease is not an error for KeepAlive (TTL 0) nor for TimeToLive
(TTL -1); the service reports it as LEASE_NOT_FOUND and this module turns it into that answer.
"""
from __future__ import annotations

from raftkv.api.etcd.convert import RaftkvError, abort, current_header, fill, to_dict, unary, \
    with_identity
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    def __init__(self, service):
        self._service = service

    async def LeaseGrant(self, request, context):
        return await unary(self._service, context, "lease_grant", request,
                           rpc_pb2.LeaseGrantResponse)

    async def LeaseRevoke(self, request, context):
        return await unary(self._service, context, "lease_revoke", request,
                           rpc_pb2.LeaseRevokeResponse)

    async def LeaseLeases(self, request, context):
        return await unary(self._service, context, "lease_leases", request,
                           rpc_pb2.LeaseLeasesResponse)

    async def LeaseTimeToLive(self, request, context):
        result = await self._call_or_unknown(context, "lease_timetolive", request, -1)
        return fill(rpc_pb2.LeaseTimeToLiveResponse(), result)

    async def LeaseKeepAlive(self, request_iterator, context):
        async for request in request_iterator:
            result = await self._call_or_unknown(context, "lease_keepalive", request, 0)
            yield fill(rpc_pb2.LeaseKeepAliveResponse(), result)

    async def _call_or_unknown(self, context, op, request, unknown_ttl):
        """service.call(op); an unknown lease answers {ID, TTL: unknown_ttl} instead."""
        try:
            try:
                return await self._service.call(op, with_identity(context, to_dict(request)))
            except RaftkvError as exc:
                if exc.code != "LEASE_NOT_FOUND":
                    raise
            header = await current_header(self._service)
        except RaftkvError as exc:
            await abort(context, exc)
        return {"header": header, "ID": request.ID, "TTL": unknown_ttl}
