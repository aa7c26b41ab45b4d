"""raftkvctl: etcdctl v3's verbs and output formats over raftkv's native client.

    raftkvctl [--endpoints=h:p,...] [-w simple|json|table|fields] VERB ...
    put KEY [VALUE]          get KEY [END]          del KEY [END]        txn [-i]
    watch KEY [END]          lease grant|revoke|keep-alive|timetolive|list
    member list|add|remove|update|promote            endpoint health|status|hashkv
    compaction REV           alarm list|disarm      defrag               move-leader ID
    snapshot save|status|restore                    lock NAME [CMD...]   elect NAME [PROP]
    auth enable|disable|status   user add|delete|list|get|passwd|grant-role|revoke-role
    role add|delete|list|get|grant-permission|revoke-permission          load FILE  version
    make-mirror [--prefix P] [--dest-prefix D | --no-dest-prefix] DESTINATION

Endpoints come from --endpoints, else RAFTKVCTL_ENDPOINTS, else 127.0.0.1:2379: host:port,
http(s)://host:port, or a member's native Unix socket, unix://PATH or unixs://PATH (TLS); see
raftkv.client.endpoints. TLS takes etcdctl's flags: --cacert, --cert, --key,
--insecure-skip-tls-verify, each also settable as RAFTKVCTL_CACERT etc.; any of the first
three, or an https:// or unixs:// endpoint, turns TLS on. With auth
enabled, --user NAME[:PASSWORD] (or RAFTKVCTL_USER, RAFTKVCTL_PASSWORD) authenticates. Output
follows etcdctl: simple prints key and value lines ("OK" for put, the count for del); json
prints the response as etcdctl does (compact, bytes in base64, zero fields left out); table
draws a box for list-like answers; fields prints etcdctl's "Name" : value lines (checked
against etcdctl on etcd 3.4.23 by tests/etcdctl/test_raftkvctl_conformance.py). Errors go
to stderr as "Error: <message>" with exit status 1, or etcdctl's other status where it has
one: 2 (authentication failed; `lease keep-alive --once` of a lease that is gone), 4 (a bad
--sort-by or --order; a format etcdctl has no printer for), 5 (snapshot save failed), 128
(etcdctl's ExitBadArgs: a missing or malformed argument of member, move-leader, lock, elect).
endpoint health|status|hashkv and defrag take etcdctl's --cluster: every member's native URLs
(which raftkv members publish beside their client URLs, and member list answers as raftkv's
own nativeURLs) instead of --endpoints; a member that publishes none (an earlier raftkv) is
dialed at its entry of --endpoints, else reported as unreachable. version prints
raftkvctl's own version (not etcdctl's) and the etcd API version, 3.4, in etcdctl's two
lines.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import re
import shlex
import sys
import time
import urllib.parse

import raftkv
from raftkv.api import wire
from raftkv.cli import ctl_auth, ctl_concurrency, ctl_mirror, ctl_snapshot
from raftkv.cli.ctl_format import (
    EXIT_BAD_FEATURE,
    EXIT_INTERRUPTED,
    HEADER_FIELDS,
    UNSUPPORTED,
    Fields,
    bad_args,
    go_quote,
    hoist_global_flags,
    human_bytes,
    print_range,
    _emit,
    _Failed,
    _print_json,
    _print_kvs,
    _s,
    pb_json,
)
from raftkv.client import AsyncClient
from raftkv.client.errors import RevisionCompactedError
from raftkv.client.txn import Compare, Transactions, txn_body
from raftkv.client.types import ProgressNotify, prefix_range_end, to_bytes

DEFAULT_ENDPOINTS = "127.0.0.1:2379"
API_VERSION = "3.4"  # the etcd API raftkv serves (its members answer as etcd 3.4.23)
PROGRESS_INTERVAL_S = 0.5  # how often `load` redraws its progress line on a TTY
SORT_TARGETS = ("KEY", "VERSION", "CREATE", "MODIFY", "VALUE")  # the protobuf enum's order


# Key-value verbs.

def _range_args(args, key):
    if not key and (args.prefix or args.from_key):
        key = b"\0"  # as clientv3 (op.go): all keys, since a request's key may not be empty
    body = {"key": key}
    if args.prefix:
        body["range_end"] = prefix_range_end(key)
    elif args.from_key:
        body["range_end"] = b"\0"
    elif args.range_end is not None:
        body["range_end"] = to_bytes(args.range_end)
    return body


async def cmd_put(c, args, out):
    value = args.value if args.value is not None else sys.stdin.read()
    body = {"key": to_bytes(args.key), "value": to_bytes(value)}
    if args.lease:
        body["lease"] = lease_id_arg(args.lease, "bad lease ID")
    if args.prev_kv:
        body["prev_kv"] = True
    resp = await c.call("put", body)

    def simple():
        out.write("OK\n")
        if resp.get("prev_kv"):
            _print_kvs([resp["prev_kv"]], args, out)

    _emit(args, out, resp, simple, fields=lambda f: f.put(resp))


async def cmd_get(c, args, out):
    body = _range_args(args, to_bytes(args.key))
    for name in ("limit", "keys_only", "count_only"):
        if getattr(args, name):
            body[name] = getattr(args, name)
    if args.rev:
        body["revision"] = args.rev
    if args.consistency == "s":
        body["serializable"] = True
    order, target = (args.order or "").upper(), (args.sort_by or "").upper()
    if order not in ("", "ASCEND", "DESCEND"):
        raise _Failed(f"bad sort order {args.order}", exit_code=EXIT_BAD_FEATURE)
    if target not in ("", *SORT_TARGETS):
        raise _Failed(f"bad sort target {args.sort_by}", exit_code=EXIT_BAD_FEATURE)
    if order or target:  # etcdctl (case-insensitive): ascending by default
        body["sort_order"] = 2 if order == "DESCEND" else 1
        body["sort_target"] = SORT_TARGETS.index(target or "KEY")
    print_range(args, out, await c.call("range", body))


async def cmd_del(c, args, out):
    body = _range_args(args, to_bytes(args.key))
    if args.prev_kv:
        body["prev_kv"] = True
    resp = await c.call("delete_range", body)

    def simple():
        out.write(f"{resp.get('deleted', 0)}\n")
        _print_kvs(resp.get("prev_kvs", []), args, out)

    _emit(args, out, resp, simple, fields=lambda f: f.delete(resp))


# txn -i: etcdctl's syntax (compares, blank line, success ops, blank line, failure ops).

_CMP_RE = re.compile(r'^\s*(\w+)\("((?:[^"\\]|\\.)*)"\)\s*(=|!=|<|>)\s*(.*?)\s*$')
_CMP_TARGETS = {"value": "value", "val": "value", "version": "version", "ver": "version",
                "create": "create", "c": "create", "mod": "mod", "m": "mod", "lease": "lease"}


def parse_compare(line):
    m = _CMP_RE.match(line)
    if not m or m.group(1) not in _CMP_TARGETS:
        raise ValueError(f"malformed comparison: {line!r}")
    target, key, op, operand = _CMP_TARGETS[m.group(1)], m.group(2), m.group(3), m.group(4)
    operand = shlex.split(operand)[0] if operand else ""
    cmp = Compare(target, key.encode())
    if target == "value":
        operand = operand.encode()
    elif target == "lease":
        operand = int(operand, 16)
    else:
        operand = int(operand)
    return {"=": cmp.__eq__, "!=": cmp.__ne__, "<": cmp.__lt__, ">": cmp.__gt__}[op](operand)


def parse_op(line):
    """One request line: put KEY VALUE [--lease=ID] | get KEY [END] [--prefix] | del ..."""
    words = shlex.split(line)
    if not words:
        raise ValueError("empty request")
    verb, rest = words[0], [w for w in words[1:] if not w.startswith("--")]
    flags = {w.split("=")[0]: (w.split("=", 1) + [""])[1] for w in words[1:]
             if w.startswith("--")}
    t = Transactions()
    if verb == "put" and len(rest) == 2:
        lease = lease_id_arg(flags["--lease"], "bad lease ID") if flags.get("--lease") else None
        return t.put(rest[0], rest[1], lease=lease, prev_kv="--prev-kv" in flags)
    if verb in ("get", "del") and 1 <= len(rest) <= 2:
        key = rest[0].encode()
        end = prefix_range_end(key) if "--prefix" in flags else (
            rest[1].encode() if len(rest) == 2 else None)
        if verb == "get":
            return t.get(key, end)
        return t.delete(key, end, prev_kv="--prev-kv" in flags)
    raise ValueError(f"malformed request: {line!r}")


def parse_txn(text):
    """(compares, success ops, failure ops) from etcdctl's interactive txn text."""
    sections, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip():
            current.append(line.strip())
        elif current or len(sections) < 3:
            sections.append(current)
            current = []
    sections = (sections + [[], [], []])[:3]
    return ([parse_compare(x) for x in sections[0]], [parse_op(x) for x in sections[1]],
            [parse_op(x) for x in sections[2]])


async def cmd_txn(c, args, out):
    text = sys.stdin.read()
    compares, success, failure = parse_txn(text)
    resp = await c.call("txn", txn_body(compares, success, failure))

    def simple():
        out.write("SUCCESS\n" if resp.get("succeeded") else "FAILURE\n")
        for r in resp.get("responses", []):
            out.write("\n")
            if "response_put" in r:
                out.write("OK\n")
            elif "response_delete_range" in r:
                out.write(f"{r['response_delete_range'].get('deleted', 0)}\n")
            elif "response_range" in r:
                _print_kvs(r["response_range"].get("kvs", []), args, out)

    _emit(args, out, resp, simple, fields=lambda f: f.txn(resp))


async def cmd_watch(c, args, out):
    """etcdctl's watch: each response the member sends printed as etcdctl's display.Watch
    prints clientv3's WatchResponse (simple: each event's type and key-value lines; json: the
    whole response; fields: its header and events; table: etcdctl's error at the first
    response). A watch canceled for compaction ends as etcdctl's, exit status 5."""
    key = to_bytes(args.key)
    end = _range_args(args, key).get("range_end")
    watch, cancel = await c.watch(key, range_end=end, start_revision=args.rev,
                                  prev_kv=args.prev_kv, progress_notify=args.progress_notify)
    left = args.max_events or math.inf
    try:
        async for resp in watch.responses():
            if args.write_out == "table":
                raise _Failed("table not supported as output format",
                              exit_code=EXIT_BAD_FEATURE)
            events = [ev for ev in resp.events if not isinstance(ev, ProgressNotify)]
            if len(events) < len(resp.events):  # etcdctl's line, then the (empty) response
                out.write(f"progress notify: {resp.header.get('revision', 0)}\n")
            events = events[:left] if left < len(events) else events
            _print_watch_response(args, out, resp.header, events)
            out.flush()
            left -= len(events)
            if left <= 0:
                break
    except RevisionCompactedError as exc:
        sys.stderr.write(f"watch was canceled ({exc})\n")
        _print_watch_response(args, out, exc.header, [],
                              compacted=exc.compacted_revision)
        raise _Failed("watch is canceled by the server", exit_code=EXIT_INTERRUPTED) from None
    finally:
        await cancel()


def _kv_fields(ev):
    """An Event's key-value as the wire dict (mvccpb.KeyValue's fields, in its order)."""
    return {"key": ev.key, "create_revision": ev.create_revision,
            "mod_revision": ev.mod_revision, "version": ev.version, "value": ev.value,
            "lease": ev.lease_id}


def _print_watch_response(args, out, header, events, compacted=0):
    if args.write_out == "json":
        # clientv3's WatchResponse through Go's encoding/json: the header and each
        # mvccpb.Event with omitempty (type PUT, 0, left out), then its own fields in full
        _print_json({"Header": _inline_header({"header": header}),
                     "Events": [pb_json({"type": 1 if ev.type == "DELETE" else 0,
                                         "kv": _kv_fields(ev), "prev_kv": ev.prev_kv})
                                for ev in events],
                     "CompactRevision": compacted, "Canceled": bool(compacted),
                     "Created": False}, out)
    elif args.write_out == "fields":
        f = Fields(out)
        f.hdr(header)
        for ev in events:
            f.line("Type", ev.type)
            if ev.prev_kv:
                f.kv(ev.prev_kv, "Prev")
            f.kv(_kv_fields(ev))
    else:
        for ev in events:
            out.write(f"{ev.type}\n")
            if ev.prev_kv:
                _print_kvs([ev.prev_kv], args, out)
            _print_kvs([_kv_fields(ev)], args, out)


# Leases.

async def cmd_lease(c, args, out):
    handler = {"grant": _lease_grant, "revoke": _lease_revoke, "keep-alive": _lease_keepalive,
               "timetolive": _lease_ttl, "list": _lease_list}[args.lease_cmd]
    await handler(c, args, out)


async def _lease_grant(c, args, out):
    try:
        resp = await c.call("lease_grant", {"TTL": args.ttl, "ID": 0})
    except wire.RaftkvError as exc:
        raise _Failed(f"failed to grant lease ({exc})") from None
    ttl = resp.get("TTL", args.ttl)
    # etcdctl's JSON is clientv3's LeaseGrantResponse: the header's fields inline
    flat = {**_inline_header(resp), "ID": resp["ID"], "TTL": ttl, "Error": ""}
    _emit(args, out, flat, lambda: out.write(
        f"lease {resp['ID']:016x} granted with TTL({ttl}s)\n"), pb=False,
        fields=lambda f: (f.hdr(resp.get("header")), f.line("ID", resp["ID"]),
                          f.line("TTL", ttl)))


async def _lease_revoke(c, args, out):
    lease_id = lease_id_arg(args.id)
    try:
        resp = await c.call("lease_revoke", {"ID": lease_id})
    except wire.RaftkvError as exc:
        raise _Failed(f"failed to revoke lease ({exc})") from None
    _emit(args, out, resp, lambda: out.write(f"lease {lease_id:016x} revoked\n"),
          fields=lambda f: f.hdr(resp.get("header")))


def _inline_header(resp):
    """clientv3's lease responses embed the header: its fields inline (zero ones left out)."""
    h = resp.get("header") or {}
    return {k: h[k] for k in HEADER_FIELDS if h.get(k)}


async def _lease_keepalive(c, args, out):
    """etcdctl's: a keep-alive every third of the TTL, each answer printed, until the lease is
    gone (expired or revoked: the member answers TTL 0). Then simple output says so and the
    command exits 0 (json and table print nothing more, as etcdctl's only simple printer
    does); with --once a lease that is gone is etcd's "requested lease not found", exit 2
    (etcdctl's ExitBadConnection, as its client's KeepAliveOnce fails)."""
    lease_id = lease_id_arg(args.id)
    while True:
        resp = await c.call("lease_keepalive", {"ID": lease_id})
        ttl = resp.get("TTL", 0)
        if ttl <= 0:
            if args.once:
                raise _Failed(wire.RaftkvError("LEASE_NOT_FOUND"), exit_code=2)
            if args.write_out == "simple":
                out.write(f"lease {lease_id:016x} expired or revoked.\n")
            return
        # etcdctl's JSON is clientv3's LeaseKeepAliveResponse: the header's fields inline
        flat = {**_inline_header(resp), "ID": resp.get("ID", lease_id), "TTL": ttl}
        _emit(args, out, flat, lambda: out.write(
            f"lease {lease_id:016x} keepalived with TTL({ttl})\n"), pb=False,
            fields=lambda f: (f.hdr(resp.get("header")), f.line("ID", flat["ID"]),
                              f.line("TTL", ttl)))
        out.flush()
        if args.once:
            return
        await asyncio.sleep(max(ttl / 3.0, 0.5))  # etcd refreshes at a third of the TTL


async def _lease_ttl(c, args, out):
    lease_id = lease_id_arg(args.id)
    body = {"ID": lease_id, "keys": True} if args.keys else {"ID": lease_id}
    resp = await c.call("lease_timetolive", body)

    def simple():
        if resp.get("TTL", -1) == -1:
            out.write(f"lease {lease_id:016x} already expired\n")
            return
        line = (f"lease {lease_id:016x} granted with TTL({resp.get('grantedTTL', 0)}s), "
                f"remaining({resp.get('TTL', 0)}s)")
        if args.keys:
            line += ", attached keys([" + " ".join(_s(k) for k in resp.get("keys", [])) + "])"
        out.write(line + "\n")

    def fields(f):
        f.hdr(resp.get("header"))
        for name, key in (("ID", "ID"), ("TTL", "TTL"), ("GrantedTTL", "grantedTTL")):
            f.line(name, resp.get(key, 0))
        for k in resp.get("keys", []):
            f.line("Key", k, quote=True)

    # clientv3's LeaseTimeToLiveResponse: the header inline, its own JSON names
    flat = {**_inline_header(resp), "id": resp.get("ID", lease_id), "ttl": resp.get("TTL", 0),
            "granted-ttl": resp.get("grantedTTL", 0), "keys": resp.get("keys") or None}
    _emit(args, out, flat, simple, fields=fields, pb=False)


async def _lease_list(c, args, out):
    resp = await c.call("lease_leases", {})
    leases = resp.get("leases", [])

    def simple():
        out.write(f"found {len(leases)} leases\n")
        for lease in leases:
            out.write(f"{lease['ID']:016x}\n")

    def fields(f):
        f.hdr(resp.get("header"))
        for lease in leases:
            f.line("ID", lease["ID"])

    # clientv3's LeaseLeasesResponse: the header inline, leases as {"id": ID}
    flat = {**_inline_header(resp), "leases": [{"id": x["ID"]} for x in leases]}
    _emit(args, out, flat, simple, fields=fields, pb=False)


# Cluster.

def as_etcd_members(resp):
    """A membership answer as etcd's protobuf has it: without raftkv's nativeURLs (which
    --cluster uses and etcdctl's output does not show)."""
    def member(m):
        return {k: v for k, v in m.items() if k != "nativeURLs"}
    resp = dict(resp)
    if "member" in resp:
        resp["member"] = member(resp["member"])
    if "members" in resp:
        resp["members"] = [member(m) for m in resp["members"]]
    return resp


async def cmd_member(c, args, out):
    if args.member_cmd != "list":
        return await {"update": cmd_member_update, "add": cmd_member_add,
                      "remove": cmd_member_remove_or_promote,
                      "promote": cmd_member_remove_or_promote}[args.member_cmd](c, args, out)
    resp = as_etcd_members(await c.call("member_list", {}))
    rows = [[f"{m.get('ID', 0):x}", "started" if m.get("name") else "unstarted",
             m.get("name", ""), ",".join(m.get("peerURLs", [])),
             ",".join(m.get("clientURLs", [])), str(m.get("isLearner", False)).lower()]
            for m in resp.get("members", [])]
    headers = ["ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER"]

    def fields(f):
        f.hdr(resp.get("header"))
        for m in resp.get("members", []):
            f.line("ID", m.get("ID", 0))
            f.line("Name", m.get("name", ""), quote=True)
            for u in m.get("peerURLs", []):
                f.line("PeerURL", u, quote=True)
            for u in m.get("clientURLs", []):
                f.line("ClientURL", u, quote=True)
            f.line("IsLearner", bool(m.get("isLearner", False)))
            out.write("\n")

    _emit(args, out, resp, lambda: out.write("".join(", ".join(r) + "\n" for r in rows)),
          lambda: (headers, rows), fields)


async def cmd_member_update(c, args, out):
    """etcdctl member update ID --peer-urls=URL[,URL]: prints what etcdctl prints, with its
    errors in its order (the ID, then the URLs)."""
    mid = _member_id(args.ids)
    if not args.peer_urls:
        raise bad_args("member peer urls not provided")
    urls = args.peer_urls.split(",")
    check_peer_urls(urls)
    resp = as_etcd_members(await c.call("member_update", {"ID": mid, "peerURLs": urls}))
    cluster = resp.get("header", {}).get("cluster_id", 0)
    _emit(args, out, resp,
          lambda: out.write(f"Member {mid:16x} updated in cluster {cluster:16x}\n"),
          fields=UNSUPPORTED)


def parse_hex_id(text, signed=False):
    """An ID as Go's strconv.ParseUint(text, 16, 64) reads it (a member ID), or with signed
    as strconv.ParseInt(text, 16, 64) (a lease ID): (ID, None) or (None, Go's error)."""
    func, digits, lo, hi = (("ParseInt", r"[+-]?[0-9a-fA-F]+", -(1 << 63), 1 << 63) if signed
                            else ("ParseUint", r"[0-9a-fA-F]+", 0, 1 << 64))
    if not re.fullmatch(digits, text):
        return None, f"strconv.{func}: parsing {go_quote(text)}: invalid syntax"
    if not lo <= int(text, 16) < hi:
        return None, f"strconv.{func}: parsing {go_quote(text)}: value out of range"
    return int(text, 16), None


def lease_id_arg(text, what="bad lease ID arg"):
    """A lease ID argument as etcdctl reads it; a bad one is etcdctl's error, exit 128 (put
    --lease says "bad lease ID")."""
    lease_id, err = parse_hex_id(text, signed=True)
    if err:
        raise bad_args(f"{what} ({err}), expecting ID in Hex")
    return lease_id


def _member_id(ids):
    """The one member ID argument of member update|remove|promote, with etcdctl's errors."""
    if len(ids) != 1:
        raise bad_args("member ID is not provided")
    mid, err = parse_hex_id(ids[0])
    if err:
        raise bad_args(f"bad member ID arg ({err}), expecting ID in Hex")
    return mid


def check_peer_urls(urls):
    """clientv3's check of member add's URLs (types.NewURLs): an error exits 1."""
    for u in urls:
        parts = urllib.parse.urlsplit(u.strip())
        if parts.scheme not in ("http", "https", "unix", "unixs"):
            raise _Failed(f"URL scheme must be http, https, unix, or unixs: {u.strip()}")
        if not re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*):[^:]*", parts.netloc):
            raise _Failed(f'URL address does not have the form "host:port": {u.strip()}')
        if parts.path:
            raise _Failed(f"URL must not contain a path: {u.strip()}")


async def cmd_member_add(c, args, out):
    """etcdctl member add NAME --peer-urls=URL[,URL] [--learner]: the new member's ID, and
    in simple output the ETCD_* settings to start it with."""
    if not args.names:
        raise bad_args("member name not provided")
    if len(args.names) > 1:
        hint = "".join(f", did you mean --peer-urls={a}" for a in args.names
                       if a.lower().startswith("http"))
        raise bad_args("too many arguments" + hint)
    if not args.peer_urls:
        raise bad_args("member peer urls not provided")
    urls = args.peer_urls.split(",")
    check_peer_urls(urls)
    resp = as_etcd_members(await c.member_add(urls, learner=args.learner))
    new_id = resp["member"]["ID"]
    cluster = resp.get("header", {}).get("cluster_id", 0)
    _emit(args, out, resp, lambda: out.write(
        f"Member {new_id:16x} added to cluster {cluster:16x}\n"), fields=UNSUPPORTED)
    if args.write_out != "simple":
        return
    members = await c.members()  # as etcdctl: the list after the add, the new one named
    conf = [f"{args.names[0] if m.get('ID') == new_id else m.get('name', '')}={u}"
            for m in members for u in m.get("peerURLs", [])]
    out.write(f"\nETCD_NAME={go_quote(args.names[0])}\n"
              f"ETCD_INITIAL_CLUSTER={go_quote(','.join(conf))}\n"
              f"ETCD_INITIAL_ADVERTISE_PEER_URLS={go_quote(','.join(urls))}\n"
              'ETCD_INITIAL_CLUSTER_STATE="existing"\n')


async def cmd_member_remove_or_promote(c, args, out):
    """member remove ID | member promote ID: etcdctl's line (the IDs as %16x)."""
    mid = _member_id(args.ids)
    if args.member_cmd == "remove":
        resp, done = await c.member_remove(mid), "removed from"
    else:
        resp, done = await c.member_promote(mid), "promoted in"
    resp = as_etcd_members(resp)
    cluster = resp.get("header", {}).get("cluster_id", 0)
    _emit(args, out, resp, lambda: out.write(
        f"Member {mid:16x} {done} cluster {cluster:16x}\n"), fields=UNSUPPORTED)


def _each_endpoint(args):
    return [e for e in args.endpoints.split(",") if e.strip()]


async def _target_endpoints(args):
    """The endpoints endpoint health|status|hashkv and defrag act on: --endpoints, or with
    --cluster every member's native URLs from member list (etcdctl's endpointsFromCluster,
    which takes every member's client URLs: a member not started yet, without any, adds
    none). A started member without native URLs runs an earlier raftkv (a rolling upgrade):
    it is dialed at its entry of --endpoints if one is that member, else it stays a target
    that fails (_NotNative), so the verb reports it and exits 1 rather than skip it. member
    list needs no user, so none is sent."""
    if not getattr(args, "cluster", False):
        return _each_endpoint(args)
    try:
        async with AsyncClient(_each_endpoint(args), timeout=args.command_timeout,
                               **_tls_kwargs(args)) as c:
            members = await c.members()
    except (wire.RaftkvError, OSError) as exc:
        raise _Failed("failed to fetch endpoints from etcd cluster member list: "
                      f"{exc}") from None
    older = [m for m in members if m.get("clientURLs") and not m.get("nativeURLs")]
    given = await _endpoint_members(args) if older else {}
    eps = []
    for m in members:
        if m.get("nativeURLs"):
            eps += m["nativeURLs"]
        elif m.get("clientURLs"):
            eps.append(given.get(m.get("ID")) or _NotNative(m))
    return eps


async def _endpoint_members(args):
    """{member ID: endpoint} of the --endpoints that answer member list (its header names
    the member that answers)."""
    found = {}
    for ep in _each_endpoint(args):
        try:
            async with AsyncClient([ep], timeout=args.command_timeout,
                                   **_tls_kwargs(args)) as c:
                resp = await c.call("member_list", {})
        except (wire.RaftkvError, OSError):
            continue  # not a member to dial, then
        found.setdefault(resp.get("header", {}).get("member_id"), ep)
    return found


class _NotNative(str):
    """A --cluster target raftkvctl cannot dial: a member with client URLs (gRPC) but no
    native URL, none of --endpoints. Named by its client URLs, as etcdctl would name it;
    _one fails it with the reason, so each verb reports it as an endpoint that failed."""

    def __new__(cls, member):
        self = super().__new__(cls, ",".join(member["clientURLs"]))
        self.reason = (f"member {member.get('name', '')} ({member.get('ID', 0):x}) publishes "
                       "no native URL (an earlier raftkv?) and is none of --endpoints: not "
                       "reachable over the native protocol")
        return self


async def _one(ep, args, fn):
    if isinstance(ep, _NotNative):
        raise ConnectionError(ep.reason)
    async with AsyncClient([ep], timeout=args.command_timeout, **_client_kwargs(args)) as c:
        return await fn(c)


async def cmd_endpoint(c, args, out):
    fn = {"health": _endpoint_health, "hashkv": _endpoint_hashkv,
          "status": _endpoint_status}[args.endpoint_cmd]
    return await fn(args, out, await _target_endpoints(args))


async def _endpoint_hashkv(args, out, eps):
    """etcdctl's: each endpoint's HashKV; one that fails is a line on stderr, the others
    are printed, then the last error is an "Error:" line (exit status 1)."""
    results, error = [], None
    for ep in eps:
        try:
            results.append((ep, await _one(ep, args, lambda c: c.hash_kv(args.rev))))
        except (wire.RaftkvError, OSError) as exc:
            error = exc
            sys.stderr.write(f"Failed to get the hash of endpoint {ep} ({exc})\n")

    def fields(f):
        for ep, r in results:
            f.hdr(r.get("header"))
            f.line("Endpoint", ep, quote=True)
            f.line("Hash", r.get("hash", 0))
            out.write("\n")

    _emit(args, out, [{"Endpoint": ep, "HashKV": pb_json(r)} for ep, r in results],
          lambda: out.write("".join(f"{ep}, {r.get('hash', 0)}\n" for ep, r in results)),
          lambda: (["ENDPOINT", "HASH"], [[ep, str(r.get("hash", 0))] for ep, r in results]),
          fields, pb=False)
    if error is not None:
        raise _Failed(str(error))
    return 0


_ALARM_NAMES = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}


async def cmd_alarm(c, args, out):
    """alarm list | alarm disarm (clientv3's: list, then disarm each raised alarm, printing
    those deactivated). The json has no header, as etcd 3.4 sends none for Alarm."""
    resp = await c.call("alarm", {"action": 0})
    alarms = resp.get("alarms", [])
    if args.alarm_cmd == "disarm":
        disarmed = []
        for a in alarms:
            disarmed += await c.disarm(a.get("memberID", 0), a.get("alarm", 0))
        alarms = disarmed

    def fields(f):  # etcdctl 3.4's fields printer crashes on the missing header
        f.hdr(resp.get("header"))
        for a in alarms:
            f.line("MemberID", a.get("memberID", 0))
            f.line("AlarmType", _ALARM_NAMES.get(a.get("alarm", 0), a.get("alarm", 0)))
            out.write("\n")

    _emit(args, out, {"alarms": alarms}, lambda: out.write("".join(
        f"memberID:{a.get('memberID', 0)} alarm:{_ALARM_NAMES.get(a.get('alarm', 0))} \n"
        for a in alarms)), fields=fields)


async def cmd_defrag(c, args, out):
    """etcdctl's: each endpoint defragmented in turn, a line each (every format); one that
    fails is a line on stderr and exit status 1. Each member asked swaps its store for a
    compacted copy while it runs (Member.defragment); `defrag --data-dir` (main) shrinks a
    stopped member's file."""
    failures = 0
    for ep in await _target_endpoints(args):
        try:
            await _one(ep, args, lambda c: c.defragment())
        except (wire.RaftkvError, OSError) as exc:
            failures += 1
            sys.stderr.write(f"Failed to defragment etcd member[{ep}] ({exc})\n")
        else:
            out.write(f"Finished defragmenting etcd member[{ep}]\n")
    return 1 if failures else 0


async def cmd_move_leader(c, args, out):
    """etcdctl move-leader ID: find the leader among the endpoints (its status names
    itself), ask it to hand over to ID. The json has no header, as etcd 3.4 sends none."""
    if len(args.target) != 1:
        raise bad_args("move-leader command needs 1 argument")
    target, err = parse_hex_id(args.target[0])
    if err:
        raise bad_args(err)
    eps = _each_endpoint(args)
    for ep in eps:
        st = await _one(ep, args, lambda c: c.status())
        leader = st.get("leader", 0)
        if leader and st.get("header", {}).get("member_id") == leader:
            break
    else:
        raise bad_args(f"no leader endpoint given at [{' '.join(eps)}]")
    await _one(ep, args, lambda c: c.move_leader(target))
    _emit(args, out, {}, lambda: out.write(
        f"Leadership transferred from {leader:x} to {target:x}\n"), fields=UNSUPPORTED)


def cmd_version(out):
    """raftkvctl's own version and the etcd API version it speaks, in etcdctl's two lines
    (every output format, no server asked, arguments ignored, as etcdctl)."""
    out.write(f"raftkvctl version: {raftkv.__version__}\nAPI version: {API_VERSION}\n")
    return 0


async def _endpoint_health(args, out, eps):
    results, failed = [], 0
    for ep in eps:
        t0 = time.monotonic()
        try:
            await _one(ep, args, lambda c: c.get("health"))
            error = None
        except wire.RaftkvError as exc:
            # etcdctl: a read that was refused by auth still went through Raft: healthy
            error = None if exc.code == "PERMISSION_DENIED" else str(exc)
        except OSError as exc:
            error = str(exc)
        took = f"{(time.monotonic() - t0) * 1000:.3f}ms"
        results.append({"endpoint": ep, "health": error is None, "took": took})
        if error is not None:
            failed += 1
            results[-1]["error"] = error

    def simple():
        for r in results:
            if r["health"]:
                out.write(f"{r['endpoint']} is healthy: successfully committed proposal: "
                          f"took = {r['took']}\n")
            else:
                out.write(f"{r['endpoint']} is unhealthy: failed to commit proposal: "
                          f"{r['error']}\n")

    def fields(f):
        for r in results:
            f.line("Endpoint", r["endpoint"], quote=True)
            f.line("Health", r["health"])
            f.line("Took", r["took"])
            f.line("Error", r.get("error", ""))
            out.write("\n")

    _emit(args, out, results, simple, lambda: (
        ["ENDPOINT", "HEALTH", "TOOK", "ERROR"],
        [[r["endpoint"], str(r["health"]).lower(), r.get("took", ""), r.get("error", "")]
         for r in results]), fields, pb=False)
    if failed:
        sys.stderr.write("Error: unhealthy cluster\n")
        return 1
    return 0


_STATUS_FIELDS = ("header", "version", "dbSize", "leader", "raftIndex", "raftTerm",
                  "raftAppliedIndex", "errors", "dbSizeInUse", "isLearner")  # etcd's order


async def _status_of(ep, args):
    try:
        status = await _one(ep, args, lambda c: c.status())
    except (wire.RaftkvError, OSError) as exc:
        return {"Endpoint": ep, "Error": str(exc)}
    # etcd's StatusResponse, and beside it raftkv's fault tolerance
    return {"Endpoint": ep, "Status": {k: status[k] for k in _STATUS_FIELDS if k in status},
            "FaultTolerance": status.get("fault_tolerance", 0)}


def _status_row(r):
    """etcdctl 3.4's columns, with raftkv's REVISION and FAULT TOLERANCE before ERRORS."""
    st = r["Status"]
    header = st.get("header", {})
    return [r["Endpoint"], f"{header.get('member_id', 0):x}", st.get("version", ""),
            human_bytes(st.get("dbSize", 0)),
            str(st.get("leader", 0) == header.get("member_id", -1)).lower(),
            str(bool(st.get("isLearner", False))).lower(), str(st.get("raftTerm", 0)),
            str(st.get("raftIndex", 0)), str(st.get("raftAppliedIndex", 0)),
            str(header.get("revision", 0)), str(r["FaultTolerance"]),
            ", ".join(st.get("errors", []))]


def _status_fields(f, statuses):
    for r in statuses:
        st = r["Status"]
        f.hdr(st.get("header"))
        f.line("Version", st.get("version", ""), quote=True)
        for name, key in (("DBSize", "dbSize"), ("Leader", "leader")):
            f.line(name, st.get(key, 0))
        f.line("IsLearner", bool(st.get("isLearner", False)))
        for name, key in (("RaftIndex", "raftIndex"), ("RaftTerm", "raftTerm"),
                          ("RaftAppliedIndex", "raftAppliedIndex")):
            f.line(name, st.get(key, 0))
        f.line("Errors", st.get("errors", []))
        f.line("FaultTolerance", r["FaultTolerance"])
        f.line("Endpoint", r["Endpoint"], quote=True)
        f.out.write("\n")


async def _endpoint_status(args, out, eps):
    """etcdctl's: an endpoint that does not answer is a line on stderr and exit status 1;
    the others are printed."""
    results = [await _status_of(ep, args) for ep in eps]
    for r in results:
        if "Error" in r:
            sys.stderr.write(f"Failed to get the status of endpoint {r['Endpoint']} "
                             f"({r['Error']})\n")
    ok = [r for r in results if "Error" not in r]
    rows = [_status_row(r) for r in ok]
    headers = ["ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM",
               "RAFT INDEX", "RAFT APPLIED INDEX", "REVISION", "FAULT TOLERANCE", "ERRORS"]
    _emit(args, out, [{"Endpoint": r["Endpoint"], "Status": pb_json(r["Status"]),
                       "FaultTolerance": r["FaultTolerance"]} for r in ok],
          lambda: out.write("".join(", ".join(r) + "\n" for r in rows)),
          lambda: (headers, rows), lambda f: _status_fields(f, ok), pb=False)
    return 1 if len(ok) < len(results) else 0


async def cmd_compaction(c, args, out):
    await c.compact(args.revision, physical=args.physical)
    # etcdctl prints this line in every output format
    out.write(f"compacted revision {args.revision}\n")


# Bulk load.

class _Items:
    """(key, value) pairs of a JSON-lines or CSV file; unreadable lines are counted in bad."""

    def __init__(self, path, fmt):
        self.path = path
        self.fmt = fmt or ("csv" if path.lower().endswith(".csv") else "jsonl")
        self.bad = 0
        self.errors = []

    def _bad(self, lineno, why):
        self.bad += 1
        if len(self.errors) < 10:
            self.errors.append(f"{self.path}:{lineno}: {why}")

    def __iter__(self):
        with open(self.path, newline="", encoding="utf-8") as f:
            if self.fmt == "csv":
                yield from self._csv(f)
            else:
                yield from self._jsonl(f)

    def _csv(self, f):
        for lineno, row in enumerate(csv.reader(f), 1):
            if lineno == 1 and [c.strip().lower() for c in row] == ["key", "value"]:
                continue  # a header row
            if not row:
                continue
            if len(row) != 2 or not row[0]:
                self._bad(lineno, "expected key,value")
                continue
            yield row[0], row[1]

    def _jsonl(self, f):
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                self._bad(lineno, f"bad JSON line: {exc}")
                continue
            if not isinstance(obj, dict) or "key" not in obj or "value" not in obj:
                got = (f"an object with {sorted(obj)}" if isinstance(obj, dict)
                       else f"a JSON {type(obj).__name__}")
                self._bad(lineno, f'bad JSON line: expected an object with "key" and "value", '
                                  f"got {got}")
                continue
            key, value = obj["key"], obj["value"]
            yield _json_text(key), _json_text(value)


def _json_text(value):
    """A JSON line's key or value as stored: a string as it is, anything else (a number, a
    document) as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _count_lines(path):
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _progress_printer(total, err):
    t0, last = time.monotonic(), [0.0]

    def show(result, final=False):
        now = time.monotonic()
        if not final and now - last[0] < PROGRESS_INTERVAL_S:
            return
        last[0] = now
        done = result.done + result.failed
        rate = done / max(now - t0, 1e-9)
        eta = f", ETA {max(total - done, 0) / rate:.0f}s" if total and rate > 0 else ""
        err.write(f"\r{done}/{total or '?'} keys, {rate:.0f} keys/s{eta}   ")
        err.flush()

    return show


async def cmd_load(c, args, out):
    items = _Items(args.file, args.format)
    err = sys.stderr
    show = _progress_printer(_count_lines(args.file), err) if err.isatty() else None
    result = await c.put_many(items, progress=show, window=args.window, batch_max=args.batch)
    if show is not None:
        show(result, final=True)
        err.write("\n")
    failed = result.failed + items.bad
    rate = result.done / max(result.elapsed_s, 1e-9)
    summary = {"file": args.file, "loaded": result.done, "failed": failed,
               "elapsed_s": round(result.elapsed_s, 3), "keys_per_s": round(rate, 1),
               "errors": items.errors + result.errors}
    _emit(args, out, summary, lambda: out.write(
        f"loaded {result.done} keys in {result.elapsed_s:.2f}s ({rate:.0f} keys/s), "
        f"{failed} failed\n"))
    for line in summary["errors"] if args.write_out != "json" else []:
        err.write(f"error: {line}\n")
    return 1 if failed else 0


# Command line.

def _add_range_flags(p, prev_kv=False):
    p.add_argument("key")
    p.add_argument("range_end", nargs="?")
    p.add_argument("--prefix", action="store_true")
    p.add_argument("--from-key", action="store_true")
    if prev_kv:
        p.add_argument("--prev-kv", action="store_true")


def _kv_parsers(sub):
    p = sub.add_parser("put", help="put a key")
    p.add_argument("key")
    p.add_argument("value", nargs="?")
    p.add_argument("--lease", help="lease ID in hex")
    p.add_argument("--prev-kv", action="store_true")
    p.set_defaults(fn=cmd_put)
    p = sub.add_parser("get", help="get a key or a range")
    _add_range_flags(p)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--rev", type=int, default=0)
    p.add_argument("--sort-by", help="|".join(SORT_TARGETS) + " (any case)")
    p.add_argument("--order", help="ASCEND or DESCEND (any case)")
    p.add_argument("--keys-only", action="store_true")
    p.add_argument("--count-only", action="store_true")
    p.add_argument("--print-value-only", action="store_true")
    p.add_argument("--consistency", choices=["l", "s"], default="l")
    p.set_defaults(fn=cmd_get)
    p = sub.add_parser("del", help="delete a key or a range")
    _add_range_flags(p, prev_kv=True)
    p.set_defaults(fn=cmd_del)
    p = sub.add_parser("txn", help="a transaction read from stdin (etcdctl syntax)")
    p.add_argument("-i", "--interactive", action="store_true")
    p.set_defaults(fn=cmd_txn)
    p = sub.add_parser("watch", help="watch a key or a range")
    _add_range_flags(p, prev_kv=True)
    p.add_argument("--rev", type=int, default=0)
    p.add_argument("--max-events", type=int, default=0, help="stop after N events")
    p.add_argument("--progress-notify", action="store_true",
                   help="print \"progress notify: REV\" when the member reports progress on an "
                        "idle watch (etcdctl 3.5's flag)")
    p.set_defaults(fn=cmd_watch)


def _cluster_parsers(sub):
    p = sub.add_parser("lease", help="lease commands")
    lsub = p.add_subparsers(dest="lease_cmd", required=True)
    lsub.add_parser("grant").add_argument("ttl", type=int)
    lsub.add_parser("revoke").add_argument("id")
    ka = lsub.add_parser("keep-alive")
    ka.add_argument("id")
    ka.add_argument("--once", action="store_true")
    ttl = lsub.add_parser("timetolive")
    ttl.add_argument("id")
    ttl.add_argument("--keys", action="store_true")
    lsub.add_parser("list")
    p.set_defaults(fn=cmd_lease)
    p = sub.add_parser("member", help="member commands")
    msub = p.add_subparsers(dest="member_cmd", required=True)
    msub.add_parser("list")
    mu = msub.add_parser("update", help="update a member's peer URLs")
    mu.add_argument("ids", nargs="*", metavar="ID", help="member ID (hex)")
    mu.add_argument("--peer-urls", default="", help="comma-separated peer URLs")
    ma = msub.add_parser("add", help="add a member (--learner: a non-voting one)")
    ma.add_argument("names", nargs="*", metavar="NAME")
    ma.add_argument("--peer-urls", default="", help="comma-separated peer URLs")
    ma.add_argument("--learner", action="store_true")
    for verb in ("remove", "promote"):
        msub.add_parser(verb, help=f"{verb} a member").add_argument(
            "ids", nargs="*", metavar="ID", help="member ID (hex)")
    p.set_defaults(fn=cmd_member)
    p = sub.add_parser("endpoint", help="endpoint health|status|hashkv")
    _cluster_flag(p, False)
    esub = p.add_subparsers(dest="endpoint_cmd", required=True)
    for verb in ("health", "status", "hashkv"):
        _cluster_flag(esub.add_parser(verb), argparse.SUPPRESS)
    esub.choices["hashkv"].add_argument("--rev", type=int, default=0,
                                        help="hash up to this revision (0: all)")
    p.set_defaults(fn=cmd_endpoint)
    _maintenance_parsers(sub)
    p = sub.add_parser("compaction", help="compact the history up to a revision")
    p.add_argument("revision", type=int)
    p.add_argument("--physical", action="store_true")
    p.set_defaults(fn=cmd_compaction)
    p = sub.add_parser("load", help="bulk load JSON lines {key, value} or CSV key,value")
    p.add_argument("file")
    p.add_argument("--format", choices=["jsonl", "csv"])
    p.add_argument("--window", type=int, default=8, help="batches in flight")
    p.add_argument("--batch", type=int, default=256, help="puts per batch")
    p.set_defaults(fn=cmd_load)


def _cluster_flag(p, default):
    """etcdctl's --cluster (a persistent flag of endpoint: before or after the verb; the
    verb's default is SUPPRESS so that it keeps what endpoint's flag set)."""
    p.add_argument("--cluster", action="store_true", default=default,
                   help="act on every member's native URLs from member list")


def _maintenance_parsers(sub):
    from raftkv.utl.main import add_defrag_args

    p = sub.add_parser("alarm", help="alarm list|disarm")
    asub = p.add_subparsers(dest="alarm_cmd", required=True)
    asub.add_parser("list")
    asub.add_parser("disarm")
    p.set_defaults(fn=cmd_alarm)
    p = sub.add_parser("defrag", help="defragment each endpoint's store (no-op on LMDB), or "
                                      "with --data-dir a stopped member's, offline")
    add_defrag_args(p, required=False)
    _cluster_flag(p, False)
    p.set_defaults(fn=cmd_defrag)
    p = sub.add_parser("move-leader", help="hand the leadership to another member")
    p.add_argument("target", nargs="*", metavar="ID", help="the new leader's member ID (hex)")
    p.set_defaults(fn=cmd_move_leader)
    p = sub.add_parser("version", help="raftkvctl's version and the etcd API version")
    p.add_argument("ignored", nargs="*", help=argparse.SUPPRESS)
    p.set_defaults(fn=None)


def _tls_parser(p):
    # dest: not "key", which the verbs' KEY argument uses.
    p.add_argument("--cacert", dest="tls_cacert", default=os.environ.get("RAFTKVCTL_CACERT"),
                   help="verify the members' certificates with this CA bundle")
    p.add_argument("--cert", dest="tls_cert", default=os.environ.get("RAFTKVCTL_CERT"),
                   help="identify this client with this TLS certificate")
    p.add_argument("--key", dest="tls_key", default=os.environ.get("RAFTKVCTL_KEY"),
                   help="the key of the --cert certificate")
    # None: not given, RAFTKVCTL_INSECURE_SKIP_TLS_VERIFY decides (read in _tls_kwargs, so
    # that a bad value is an "Error:" like any other).
    p.add_argument("--insecure-skip-tls-verify", action="store_true", default=None,
                   help="accept any member certificate (TLS without verification)")


_TRUE = ("1", "t", "true", "y", "yes", "on")
_FALSE = ("", "0", "f", "false", "n", "no", "off")


def _env_bool(name):
    value = os.environ.get(name, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{name}={os.environ[name]!r} is not true or false")
    return value in _TRUE


def _tls_kwargs(args):
    """AsyncClient's TLS arguments from the flags (empty files count as not given)."""
    skip = args.insecure_skip_tls_verify
    if skip is None:
        skip = _env_bool("RAFTKVCTL_INSECURE_SKIP_TLS_VERIFY")
    return {"ca_cert": args.tls_cacert or None, "cert_cert": args.tls_cert or None,
            "cert_key": args.tls_key or None, "insecure_skip_verify": skip}


def _client_kwargs(args):
    """AsyncClient's TLS and authentication arguments from the flags."""
    return {**_tls_kwargs(args), **ctl_auth.identity(args)}


def build_parser():
    p = argparse.ArgumentParser(prog="raftkvctl", description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoints",
                   default=os.environ.get("RAFTKVCTL_ENDPOINTS", DEFAULT_ENDPOINTS),
                   help="comma-separated native endpoints: host:port, https://host:port, "
                        "unix://PATH, unixs://PATH (env RAFTKVCTL_ENDPOINTS)")
    p.add_argument("-w", "--write-out", choices=["simple", "json", "table", "fields"],
                   default="simple")
    p.add_argument("--command-timeout", type=float, default=5.0, help="seconds")
    _tls_parser(p)
    p.add_argument("--user", help="NAME[:PASSWORD] to authenticate as (asks for a password "
                                  "not given; env RAFTKVCTL_USER)")
    p.add_argument("--password", help="the --user's password (env RAFTKVCTL_PASSWORD)")
    sub = p.add_subparsers(dest="command", required=True)
    _kv_parsers(sub)
    _cluster_parsers(sub)
    ctl_auth.add_parsers(sub)
    ctl_snapshot.add_parsers(sub)
    ctl_concurrency.add_parsers(sub)
    ctl_mirror.add_parsers(sub)
    return p


async def _amain(args, out):
    async with AsyncClient(args.endpoints.split(","), timeout=args.command_timeout,
                           prefer_leader=getattr(args, "prefer_leader", True),
                           **_client_kwargs(args)) as c:
        return await args.fn(c, args, out) or 0


def main(argv=None, out=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(hoist_global_flags(argv))
    out = out or sys.stdout
    if args.command == "version":
        return cmd_version(out)
    if args.command == "defrag" and args.data_dir:  # etcdctl's offline defrag
        from raftkv.utl.main import cmd_defrag as offline_defrag

        args.offline = offline_defrag
    if getattr(args, "offline", None) is not None:  # files only, no endpoint is contacted
        from raftkv.utl.main import run_offline

        return run_offline(args, out)
    try:
        return asyncio.run(_amain(args, out))
    except (wire.RaftkvError, ConnectionError, OSError, ValueError, _Failed) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        # etcdctl exits 2 (ExitBadConnection) when it cannot authenticate
        if getattr(exc, "code", None) == "AUTH_FAILED":
            return 2
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
