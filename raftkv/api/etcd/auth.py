"""etcdserverpb.Auth: each RPC is one service op (raftkv/server/authn.py) whose request and
response fields are the protobuf messages' own; the client's token comes from the gRPC
metadata "token" (convert.unary). UserAdd's options.no_password is passed as no_password.
"""
from __future__ import annotations

from raftkv.api.etcd.convert import to_dict, unary
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

# RPC name -> (service op, response message)
_RPCS = {
    "AuthEnable": ("auth_enable", rpc_pb2.AuthEnableResponse),
    "AuthDisable": ("auth_disable", rpc_pb2.AuthDisableResponse),
    "AuthStatus": ("auth_status", rpc_pb2.AuthStatusResponse),
    "Authenticate": ("authenticate", rpc_pb2.AuthenticateResponse),
    "UserGet": ("user_get", rpc_pb2.AuthUserGetResponse),
    "UserList": ("user_list", rpc_pb2.AuthUserListResponse),
    "UserDelete": ("user_delete", rpc_pb2.AuthUserDeleteResponse),
    "UserChangePassword": ("user_change_password", rpc_pb2.AuthUserChangePasswordResponse),
    "UserGrantRole": ("user_grant_role", rpc_pb2.AuthUserGrantRoleResponse),
    "UserRevokeRole": ("user_revoke_role", rpc_pb2.AuthUserRevokeRoleResponse),
    "RoleAdd": ("role_add", rpc_pb2.AuthRoleAddResponse),
    "RoleGet": ("role_get", rpc_pb2.AuthRoleGetResponse),
    "RoleList": ("role_list", rpc_pb2.AuthRoleListResponse),
    "RoleDelete": ("role_delete", rpc_pb2.AuthRoleDeleteResponse),
    "RoleGrantPermission": ("role_grant_permission",
                            rpc_pb2.AuthRoleGrantPermissionResponse),
    "RoleRevokePermission": ("role_revoke_permission",
                             rpc_pb2.AuthRoleRevokePermissionResponse),
}


def _rpc(op, response_cls):
    async def handler(self, request, context):
        return await unary(self._service, context, op, request, response_cls)
    return handler


class AuthServicer(rpc_pb2_grpc.AuthServicer):
    def __init__(self, service):
        self._service = service

    async def UserAdd(self, request, context):
        body = to_dict(request)
        body["no_password"] = bool((body.pop("options", None) or {}).get("no_password"))
        return await unary(self._service, context, "user_add", request,
                           rpc_pb2.AuthUserAddResponse, body)


for _name, (_op, _cls) in _RPCS.items():
    setattr(AuthServicer, _name, _rpc(_op, _cls))
