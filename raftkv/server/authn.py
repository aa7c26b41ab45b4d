"""The service's auth operations (etcd's Auth service), for both front ends.

Changes (enable, disable, users, roles, permissions) go through the log as the auth store's ops
(raftkv/mvcc/auth.py), with the caller's user, and are checked there. A password is hashed here,
off the event loop, before proposing: the log holds only the hash. Authenticate checks the
password against this member's state after a ReadIndex barrier (as etcd does), then proposes the
new token so that every member knows it (a JWT token is signed here instead). Reads of the auth
state (status, users, roles) are linearizable and need the root role once auth is on, except a
user reading itself or one of its own roles, as in etcd.
"""
from __future__ import annotations

import asyncio

from raftkv.errors import RaftkvError
from raftkv.mvcc import auth as auth_mod

class AuthFrontEnd:
    OPS = auth_mod.ADMIN_OPS | auth_mod.READ_OPS | {"authenticate"}

    def __init__(self, service):
        self._service = service

    @property
    def _store(self):
        return self._service.m.kv.auth

    async def call(self, op, body, who):
        """who: the request's identity fields (Service.user_of). A read resolves them after
        its ReadIndex barrier, as a range does, so that a token or role change committed
        before it holds on a member that had not applied it yet."""
        service, store = self._service, self._store
        if op in auth_mod.READ_OPS:
            await service.read_barrier()
            user = service.user_of(who)
            self._check_read(op, body, user)
            return dict(self._read(op, body), header=service.header())
        user = service.user_of(who)
        if op == "authenticate":
            return await self._authenticate(body)
        store.check_admin(user)  # a clear answer now; apply checks again in log order
        proposal = await self._proposal(op, body)
        proposal[auth_mod.USER_FIELD] = user
        return await service._write(op, proposal)

    def _check_read(self, op, body, user):
        store = self._store
        if not store.enabled:
            return
        if op == "user_get" and body.get("name", "") == user:
            # etcd: a user may read itself (also "" with no token: "user name not found")
            return
        if op == "role_get" and user and body.get("role", "") in store.roles_of(user):
            return  # ... and the roles it has
        store.check_admin(user)

    def _read(self, op, body):
        store = self._store
        if op == "auth_status":
            return store.status()
        if op == "user_get":
            return {"roles": store.user_roles(body.get("name", ""))}
        if op == "user_list":
            return {"users": store.user_list()}
        if op == "role_get":
            return {"perm": store.role_permissions(body.get("role", ""))}
        return {"roles": store.role_list()}

    async def _proposal(self, op, body):
        """The log op's body: the request's fields, a password replaced by its hash."""
        if op == "user_add":
            name = body.get("name", "")
            if not name:
                raise RaftkvError("USER_EMPTY")
            no_password = bool(body.get("no_password") or
                               (body.get("options") or {}).get("no_password"))
            if no_password:
                return {"name": name, "no_password": True}
            return {"name": name, "password": await self._hash(body.get("password", "")),
                    "no_password": False}
        if op == "user_change_password":
            return {"name": body.get("name", ""),
                    "password": await self._hash(body.get("password", ""))}
        fields = {"user_delete": ("name",), "user_grant_role": ("user", "role"),
                  "user_revoke_role": ("name", "role"), "role_add": ("name",),
                  "role_delete": ("role",), "role_grant_permission": ("name", "perm"),
                  "role_revoke_permission": ("role", "key", "range_end")}.get(op, ())
        return {name: body[name] for name in fields if name in body}

    async def _hash(self, password):
        cost = self._service.m.cfg.bcrypt_cost
        return await asyncio.to_thread(auth_mod.hash_password, password, cost)

    async def _authenticate(self, body):
        service, store = self._service, self._store
        if not store.enabled:
            raise RaftkvError("AUTH_NOT_ENABLED")
        await service.read_barrier()
        name, password = body.get("name", ""), body.get("password", "")
        await asyncio.to_thread(store.check_password, name, password)
        if store.jwt is not None:  # signed here; any member with the key can check it
            return {"header": service.header(), "token": store.jwt.sign(name, store.revision)}
        token = f"{store.new_token_prefix()}.{service.loop.applied_index + 1}"
        resp = await service._write(auth_mod.TOKEN_OP, {"name": name, "token": token})
        return {"header": resp["header"], "token": token}
