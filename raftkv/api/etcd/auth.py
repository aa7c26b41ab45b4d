"""etcdserverpb.Auth, answered as an etcd member with authentication disabled and an empty
auth store answers.

raftkv has no users or roles. AuthStatus says enabled=false; AuthDisable succeeds (a no-op, as
in etcd); AuthEnable fails because no root user exists; Authenticate fails with "authentication
is not enabled"; listings are empty; Get/Delete/Grant/Revoke name a user or role that does not
exist. UserAdd and RoleAdd (which etcd accepts even with auth disabled) are refused with
"authentication is not enabled": raftkv does not store users or roles.
"""
from __future__ import annotations

import grpc

from raftkv.api.etcd.convert import RaftkvError, abort, current_header, fill
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

_FP = grpc.StatusCode.FAILED_PRECONDITION
USER_NOT_FOUND = "etcdserver: user name not found"
ROLE_NOT_FOUND = "etcdserver: role name not found"


class AuthServicer(rpc_pb2_grpc.AuthServicer):
    def __init__(self, service):
        self._service = service

    async def _ok(self, context, response_cls, **fields):
        try:
            header = await current_header(self._service)
        except RaftkvError as exc:
            await abort(context, exc)
        return fill(response_cls(header=rpc_pb2.ResponseHeader()), {"header": header, **fields})

    async def AuthStatus(self, request, context):
        return await self._ok(context, rpc_pb2.AuthStatusResponse, enabled=False)

    async def AuthDisable(self, request, context):
        return await self._ok(context, rpc_pb2.AuthDisableResponse)

    async def AuthEnable(self, request, context):
        await abort(context, RaftkvError("ROOT_USER_NOT_EXIST"))

    async def Authenticate(self, request, context):
        await abort(context, RaftkvError("AUTH_NOT_ENABLED"))

    async def UserAdd(self, request, context):
        await abort(context, RaftkvError("AUTH_NOT_ENABLED"))

    async def RoleAdd(self, request, context):
        await abort(context, RaftkvError("AUTH_NOT_ENABLED"))

    async def UserList(self, request, context):
        return await self._ok(context, rpc_pb2.AuthUserListResponse, users=[])

    async def RoleList(self, request, context):
        return await self._ok(context, rpc_pb2.AuthRoleListResponse, roles=[])

    async def UserGet(self, request, context):
        await context.abort(_FP, USER_NOT_FOUND)

    async def UserDelete(self, request, context):
        await context.abort(_FP, USER_NOT_FOUND)

    async def UserChangePassword(self, request, context):
        await context.abort(_FP, USER_NOT_FOUND)

    async def UserGrantRole(self, request, context):
        await context.abort(_FP, USER_NOT_FOUND)

    async def UserRevokeRole(self, request, context):
        await context.abort(_FP, USER_NOT_FOUND)

    async def RoleGet(self, request, context):
        await context.abort(_FP, ROLE_NOT_FOUND)

    async def RoleDelete(self, request, context):
        await context.abort(_FP, ROLE_NOT_FOUND)

    async def RoleGrantPermission(self, request, context):
        await context.abort(_FP, ROLE_NOT_FOUND)

    async def RoleRevokePermission(self, request, context):
        await context.abort(_FP, ROLE_NOT_FOUND)
