"""etcdserverpb.Cluster: MemberList, MemberAdd, MemberRemove, MemberUpdate, MemberPromote."""
from __future__ import annotations

from raftkv.api.etcd.convert import unary
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, service):
        self._service = service

    async def MemberList(self, request, context):
        return await unary(self._service, context, "member_list", request,
                           rpc_pb2.MemberListResponse)

    async def MemberAdd(self, request, context):
        return await unary(self._service, context, "member_add", request,
                           rpc_pb2.MemberAddResponse)

    async def MemberRemove(self, request, context):
        return await unary(self._service, context, "member_remove", request,
                           rpc_pb2.MemberRemoveResponse)

    async def MemberUpdate(self, request, context):
        return await unary(self._service, context, "member_update", request,
                           rpc_pb2.MemberUpdateResponse)

    async def MemberPromote(self, request, context):
        return await unary(self._service, context, "member_promote", request,
                           rpc_pb2.MemberPromoteResponse)
