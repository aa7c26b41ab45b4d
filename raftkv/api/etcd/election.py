"""v3electionpb.Election: Campaign (blocks until the caller leads), Proclaim, Leader, Observe
(server stream) and Resign, as etcd 3.4's v3election server: raftkv/api/etcd/concurrency.py
over the service, every error gRPC Unknown but STOPPED (convert.abort_recipe).

As etcd's server, Proclaim and Resign open a session on the leader key's lease first, so a
leader key with lease 0 grants a new lease (and Proclaim puts the value under it); Observe ends
its stream without an error when a read or watcher fails (auth refused it, say), but with
Unavailable when the member is going away (STOPPED), as a dying etcd's stream breaks.
"""
from __future__ import annotations

from raftkv.api.etcd import concurrency
from raftkv.api.etcd.concurrency import Caller, session_lease
from raftkv.api.etcd.convert import RaftkvError, abort_recipe
from raftkv.api.etcd.proto import v3election_pb2 as epb
from raftkv.api.etcd.proto import v3election_pb2_grpc


class ElectionServicer(v3election_pb2_grpc.ElectionServicer):
    def __init__(self, service):
        self._service = service

    def _caller(self, context):
        return Caller.of(self._service, context)

    async def Campaign(self, request, context):
        caller = self._caller(context)
        try:
            lease = await session_lease(caller, request.lease)
            leader, header = await concurrency.campaign(caller, request.name, lease,
                                                        request.value)
        except RaftkvError as exc:
            await abort_recipe(context, exc)
        return epb.CampaignResponse(header=header, leader=epb.LeaderKey(**leader))

    async def Proclaim(self, request, context):
        caller = self._caller(context)
        try:
            leader = _leader_key(request)
            lease = await session_lease(caller, leader.lease)
            header = await concurrency.proclaim(caller, leader.key, leader.rev, lease,
                                                request.value)
        except RaftkvError as exc:
            await abort_recipe(context, exc)
        return epb.ProclaimResponse(header=header)

    async def Resign(self, request, context):
        caller = self._caller(context)
        try:
            leader = _leader_key(request)
            await session_lease(caller, leader.lease)
            header = await concurrency.resign(caller, leader.key, leader.rev)
        except RaftkvError as exc:
            await abort_recipe(context, exc)
        return epb.ResignResponse(header=header)

    async def Leader(self, request, context):
        try:
            header, kv = await concurrency.leader(self._caller(context), request.name)
        except RaftkvError as exc:
            await abort_recipe(context, exc)
        return epb.LeaderResponse(header=header, kv=kv)

    async def Observe(self, request, context):
        try:
            async for header, kv in concurrency.observe(self._caller(context), request.name):
                yield epb.LeaderResponse(header=header, kv=kv)
        except RaftkvError as exc:  # STOPPED: the member is going away
            await abort_recipe(context, exc)


def _leader_key(request):
    """The request's leader key; etcd refuses a request without one."""
    if not request.HasField("leader"):
        raise RaftkvError("ELECTION_NO_LEADER_KEY")
    return request.leader
