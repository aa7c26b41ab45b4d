"""Auth management for AsyncClient (etcd's Auth service over the native protocol): users,
roles, key permissions, enable/disable. Once auth is enabled these need a root user's
client (AsyncClient(..., user="root", password=...)), except reading one's own user."""
from __future__ import annotations

from raftkv.client.types import prefix_range_end, to_bytes

PERMISSIONS = {"read": 0, "write": 1, "readwrite": 2}


class AuthAdmin:
    """Mixed into AsyncClient; every method is one request (self.call). Those that only
    change something return the member's response (its header)."""

    async def auth_enable(self):
        """Needs a user "root" with the role "root"; RaftkvError ROOT_USER_NOT_EXIST or
        ROOT_ROLE_NOT_EXIST otherwise (etcd's rule)."""
        return await self.call("auth_enable", {}, write=False)

    async def auth_disable(self):
        return await self.call("auth_disable", {}, write=False)

    async def auth_status(self):
        """{"enabled": bool, "authRevision": int}"""
        resp = await self.call("auth_status", {})
        return {"enabled": bool(resp.get("enabled")), "authRevision": resp.get("authRevision", 0)}

    async def user_add(self, name, password=None):
        """password None: a user without a password (it cannot authenticate by password)."""
        body = {"name": name, "no_password": password is None}
        if password is not None:
            body["password"] = password
        return await self.call("user_add", body, write=False)

    async def user_delete(self, name):
        return await self.call("user_delete", {"name": name}, write=False)

    async def user_change_password(self, name, password):
        return await self.call("user_change_password", {"name": name, "password": password},
                               write=False)

    async def user_list(self):
        return list((await self.call("user_list", {})).get("users", []))

    async def user_get(self, name):
        """The user's roles."""
        return list((await self.call("user_get", {"name": name})).get("roles", []))

    async def user_grant_role(self, name, role):
        return await self.call("user_grant_role", {"user": name, "role": role}, write=False)

    async def user_revoke_role(self, name, role):
        return await self.call("user_revoke_role", {"name": name, "role": role}, write=False)

    async def role_add(self, name):
        return await self.call("role_add", {"name": name}, write=False)

    async def role_delete(self, name):
        return await self.call("role_delete", {"role": name}, write=False)

    async def role_list(self):
        return list((await self.call("role_list", {})).get("roles", []))

    async def role_get(self, name):
        """The role's permissions: [(perm "read"|"write"|"readwrite", key, range_end)];
        range_end b"" for one key, b"\\0" for every key from key on."""
        return perm_tuples((await self.call("role_get", {"role": name})).get("perm", []))

    async def role_grant_permission(self, name, perm, key, range_end=None, prefix=False,
                                    from_key=False):
        """perm "read", "write" or "readwrite" on one key, [key, range_end), every key with
        the prefix key, or (from_key) every key from key on."""
        body = {"name": name, "perm": {"permType": _perm(perm), "key": to_bytes(key),
                                       "range_end": _range_end(key, range_end, prefix,
                                                               from_key)}}
        return await self.call("role_grant_permission", body, write=False)

    async def role_revoke_permission(self, name, key, range_end=None, prefix=False,
                                     from_key=False):
        return await self.call("role_revoke_permission", {
            "role": name, "key": to_bytes(key),
            "range_end": _range_end(key, range_end, prefix, from_key)}, write=False)


def perm_tuples(perms):
    """A role_get answer's permissions as [(perm "read"|"write"|"readwrite", key,
    range_end)]."""
    names = {v: k for k, v in PERMISSIONS.items()}
    return [(names.get(p.get("permType", 0), "read"), p.get("key", b""),
             p.get("range_end", b"")) for p in perms]


def _perm(perm):
    if perm not in PERMISSIONS:
        raise ValueError(f"permission {perm!r} is not one of {', '.join(PERMISSIONS)}")
    return PERMISSIONS[perm]


def _range_end(key, range_end, prefix, from_key):
    if prefix:
        return prefix_range_end(to_bytes(key))
    if from_key:
        return b"\0"
    return to_bytes(range_end) if range_end is not None else b""
