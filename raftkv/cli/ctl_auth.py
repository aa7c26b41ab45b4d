"""raftkvctl's auth verbs, with etcdctl's arguments and output formats:

    auth enable|disable|status
    user add NAME[:PASSWORD] [--no-password] | delete NAME | list | get NAME [--detail]
         | passwd NAME | grant-role NAME ROLE | revoke-role NAME ROLE
    role add NAME | delete NAME | list | get NAME
         | grant-permission ROLE read|write|readwrite KEY [END] [--prefix|--from-key]
         | revoke-permission ROLE KEY [END] [--prefix|--from-key]

A password not given on the command line is asked for on a terminal (twice for a new one),
or read as one line from stdin with --interactive=false, as etcdctl does. The client's own
identity is the global --user NAME[:PASSWORD] (and --password), or RAFTKVCTL_USER and
RAFTKVCTL_PASSWORD. Output follows etcdctl 3.4: auth enable|disable print their line in every
format; the others print the response in json (the header at least) and fields (where etcdctl
has a fields printer: not user get without --detail, nor user list) and have no table.
"""
from __future__ import annotations

import getpass
import os
import sys

from raftkv.api import wire
from raftkv.cli.ctl_format import UNSUPPORTED, _emit, go_quote
from raftkv.client.auth import PERMISSIONS, perm_tuples
from raftkv.client.types import prefix_range_end

PERM_NAMES = {v: k.upper() for k, v in PERMISSIONS.items()}  # authpb.Permission's type names


def add_parsers(sub):
    p = sub.add_parser("auth", help="auth enable|disable|status")
    asub = p.add_subparsers(dest="auth_cmd", required=True)
    for name in ("enable", "disable", "status"):
        asub.add_parser(name)
    p.set_defaults(fn=cmd_auth)

    p = sub.add_parser("user", help="user commands")
    usub = p.add_subparsers(dest="user_cmd", required=True)
    add = usub.add_parser("add")
    add.add_argument("name", help="NAME or NAME:PASSWORD")
    add.add_argument("--no-password", action="store_true")
    _interactive(add)
    passwd = usub.add_parser("passwd")
    passwd.add_argument("name")
    _interactive(passwd)
    get = usub.add_parser("get")
    get.add_argument("name")
    get.add_argument("--detail", action="store_true")
    usub.add_parser("delete").add_argument("name")
    usub.add_parser("list")
    for verb in ("grant-role", "revoke-role"):
        q = usub.add_parser(verb)
        q.add_argument("name")
        q.add_argument("role")
    p.set_defaults(fn=cmd_user)

    p = sub.add_parser("role", help="role commands")
    rsub = p.add_subparsers(dest="role_cmd", required=True)
    for verb in ("add", "delete", "get"):
        rsub.add_parser(verb).add_argument("name")
    rsub.add_parser("list")
    grant = rsub.add_parser("grant-permission")
    grant.add_argument("name")
    grant.add_argument("perm", choices=["read", "write", "readwrite"])
    revoke = rsub.add_parser("revoke-permission")
    revoke.add_argument("name")
    for q in (grant, revoke):
        q.add_argument("key")
        q.add_argument("range_end", nargs="?")
        q.add_argument("--prefix", action="store_true")
        q.add_argument("--from-key", action="store_true")
    p.set_defaults(fn=cmd_role)


def _interactive(p):
    p.add_argument("--interactive", default="true", choices=["true", "false"],
                   help="false: read the password from stdin")


def identity(args):
    """AsyncClient's user and password from --user/--password or RAFTKVCTL_USER/_PASSWORD
    (a --user without a password asks for it on the terminal, as etcdctl does)."""
    user = args.user or os.environ.get("RAFTKVCTL_USER") or None
    password = args.password or os.environ.get("RAFTKVCTL_PASSWORD") or None
    if user is None:
        if password is not None:
            raise ValueError("--password given without --user")
        return {}
    if password is None:
        if ":" in user:
            user, password = user.split(":", 1)
        else:
            password = getpass.getpass("Password: ")
    elif ":" in user:
        raise ValueError("--user includes a password and --password is given too")
    if not user:
        raise ValueError("empty user name in --user")
    return {"user": user, "password": password}


def _new_password(args, name, confirm):
    if args.interactive == "false":
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(f"Password of {name}: ")
    if confirm and getpass.getpass("Type password of " + name + " again for confirmation: ") \
            != password:
        raise ValueError("given passwords are different")
    return password


async def cmd_auth(c, args, out):
    if args.auth_cmd == "status":
        st = await c.auth_status()
        out.write(f"Authentication Status: {str(st['enabled']).lower()}\n"
                  f"AuthRevision: {st['authRevision']}\n")
        return
    if args.auth_cmd == "disable":
        await c.auth_disable()
        out.write("Authentication Disabled\n")
        return
    try:
        await c.auth_enable()
    except wire.RaftkvError as exc:
        if exc.code != "ROOT_ROLE_NOT_EXIST":
            raise
        await c.role_add("root")  # as etcdctl: give the root user its role, then again
        await c.user_grant_role("root", "root")
        await c.auth_enable()
    out.write("Authentication Enabled\n")


def _done(args, out, resp, line):
    """A verb that only changes something: etcdctl prints the response's header in json and
    fields, its line in simple output, and has no table (its error comes after the
    request, which has been done)."""
    _emit(args, out, resp, lambda: out.write(line + "\n"),
          fields=lambda f: f.hdr(resp.get("header")))


async def cmd_user(c, args, out):
    verb, name = args.user_cmd, getattr(args, "name", None)
    if verb == "add":
        password = None
        if not args.no_password:
            if ":" in name:
                name, password = name.split(":", 1)
            else:
                password = _new_password(args, name, confirm=True)
        _done(args, out, await c.user_add(name, password), f"User {name} created")
    elif verb == "passwd":
        _done(args, out, await c.user_change_password(
            name, _new_password(args, name, confirm=True)), "Password updated")
    elif verb == "delete":
        _done(args, out, await c.user_delete(name), f"User {name} deleted")
    elif verb == "list":
        resp = _listing(await c.call("user_list", {}), "users")
        _emit(args, out, resp, lambda: out.write("".join(
            f"{u}\n" for u in resp.get("users", []))), fields=UNSUPPORTED)
    elif verb == "get":
        await _user_get(c, args, out, name)
    elif verb == "grant-role":
        _done(args, out, await c.user_grant_role(name, args.role),
              f"Role {args.role} is granted to user {name}")
    else:
        _done(args, out, await c.user_revoke_role(name, args.role),
              f"Role {args.role} is revoked from user {name}")


async def _user_get(c, args, out, name):
    """etcdctl's: the user's roles; with --detail a "User:" line (in every format) and each
    role as role get prints it, after an empty line."""
    resp = _listing(await c.call("user_get", {"name": name}), "roles")
    roles = resp["roles"]
    if not args.detail:
        _emit(args, out, resp, lambda: out.write(
            f"User: {name}\nRoles:" + "".join(f" {r}" for r in roles) + "\n"),
            fields=UNSUPPORTED)
        return
    out.write(f"User: {name}\n")
    for role in roles:
        out.write("\n")
        _role_get(args, out, role, await c.call("role_get", {"role": role}))


def _listing(resp, field):
    """An answer with the header and one list, in the protobuf's field order (json)."""
    return {"header": resp.get("header", {}), field: list(resp.get(field, []))}


def _role_get(args, out, name, resp):
    perms = [{"permType": p.get("permType", 0), "key": p.get("key", b""),
              "range_end": p.get("range_end", b"")} for p in resp.get("perm", [])]

    def fields(f):
        f.hdr(resp.get("header"))
        for p in perms:
            # etcdctl's Println("\"PermType\" : ", type): two spaces
            f.out.write(f'"PermType" :  {PERM_NAMES.get(p["permType"], p["permType"])}\n')
            f.line("Key", p["key"], quote=True)
            f.line("RangeEnd", p["range_end"], quote=True)

    _emit(args, out, {"header": resp.get("header", {}), "perm": perms},
          lambda: _print_role(out, name, perm_tuples(perms)), fields=fields)


async def cmd_role(c, args, out):
    verb, name = args.role_cmd, getattr(args, "name", None)
    if verb == "add":
        _done(args, out, await c.role_add(name), f"Role {name} created")
    elif verb == "delete":
        _done(args, out, await c.role_delete(name), f"Role {name} deleted")
    elif verb == "list":
        resp = _listing(await c.call("role_list", {}), "roles")
        roles = resp["roles"]

        def fields(f):
            f.hdr(resp.get("header"))
            f.out.write('"Roles" :' + "".join(f" {go_quote(r)}" for r in roles) + "\n")

        _emit(args, out, resp, lambda: out.write("".join(f"{r}\n" for r in roles)),
              fields=fields)
    elif verb == "get":
        _role_get(args, out, name, await c.call("role_get", {"role": name}))
    elif verb == "grant-permission":
        _done(args, out, await c.role_grant_permission(
            name, args.perm, args.key, args.range_end, prefix=args.prefix,
            from_key=args.from_key), f"Role {name} updated")
    else:
        resp = await c.role_revoke_permission(name, args.key, args.range_end,
                                              prefix=args.prefix, from_key=args.from_key)
        if args.range_end or args.prefix or args.from_key:
            end = prefix_range_end(args.key.encode()) if args.prefix else \
                b"\0" if args.from_key else args.range_end.encode()
            line = (f"Permission of range [{args.key}, {end.decode(errors='replace')}) is "
                    f"revoked from role {name}")
        else:
            line = f"Permission of key {args.key} is revoked from role {name}"
        _done(args, out, resp, line)


def _print_role(out, name, perms):
    """etcdctl's simple format: read then write permissions; a key, or a [start, end) range
    ("<open ended>" for every key from start on), marked when it is a prefix."""
    out.write(f"Role {name}\n")
    for title, kinds in (("KV Read:", ("read", "readwrite")),
                         ("KV Write:", ("write", "readwrite"))):
        out.write(title + "\n")
        for perm, key, end in perms:
            if perm not in kinds:
                continue
            k = key.decode(errors="replace")
            if not end:
                out.write(f"\t{k}\n")
                continue
            line = f"\t[{k}, <open ended>" if end == b"\0" else \
                f"\t[{k}, {end.decode(errors='replace')})"
            if prefix_range_end(key) == end:
                line += f" (prefix {k})"
            out.write(line + "\n")
