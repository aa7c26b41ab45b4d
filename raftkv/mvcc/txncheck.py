"""Static checks of requests, as etcd's gRPC layer does before proposing (v3rpc/key.go).

They run again in apply so a request that bypassed the front end still gets etcd's errors.
"""
from __future__ import annotations

from raftkv.errors import RaftkvError

OP_KEYS = ("request_range", "request_put", "request_delete_range", "request_txn")


def check_key(body):
    if not body.get("key"):
        raise RaftkvError("EMPTY_KEY")


def check_put(body):
    check_key(body)
    if body.get("ignore_value") and body.get("value"):
        raise RaftkvError("VALUE_PROVIDED")
    if body.get("ignore_lease") and body.get("lease"):
        raise RaftkvError("LEASE_PROVIDED")


def split_op(op):
    """(kind, body) of a RequestOp dict {"request_put": body} (kind is the dict key)."""
    for kind in OP_KEYS:
        body = op.get(kind)
        if body is not None:
            return kind, body
    raise RaftkvError("BAD_REQUEST", "raftkv: empty RequestOp in txn")


def check_txn(body, max_ops):
    """checkTxnRequest + checkIntervals: op counts, keys and duplicate writes."""
    for name in ("compare", "success", "failure"):
        if len(body.get(name) or ()) > max_ops:
            raise RaftkvError("TOO_MANY_OPS")
    for name in ("success", "failure"):
        for op in body.get(name) or ():
            kind, sub = split_op(op)
            if kind == "request_put":
                check_put(sub)
            elif kind == "request_txn":
                check_txn(sub, max_ops)
            else:
                check_key(sub)
    _intervals(body.get("success") or ())
    _intervals(body.get("failure") or ())


def _interval(body):
    key, end = body.get("key", b""), body.get("range_end", b"")
    if not end:
        return key, key + b"\0"
    return key, (None if end == b"\0" else end)


def _hits(dels, key):
    return any(lo <= key and (hi is None or key < hi) for lo, hi in dels)


def _intervals(ops):
    """etcd's checkIntervals: returns (puts, dels) of these ops; DUPLICATE_KEY on overlap."""
    dels = [_interval(body) for kind, body in map(split_op, ops)
            if kind == "request_delete_range"]
    puts = set()
    for kind, body in map(split_op, ops):
        if kind != "request_txn":
            continue
        puts_then, dels_then = _intervals(body.get("success") or ())
        puts_else, dels_else = _intervals(body.get("failure") or ())
        for key in puts_then:
            if key in puts or _hits(dels, key):
                raise RaftkvError("DUPLICATE_KEY")
            puts.add(key)
        for key in puts_else:
            if (key in puts and key not in puts_then) or _hits(dels, key):
                raise RaftkvError("DUPLICATE_KEY")
            puts.add(key)
        dels.extend(dels_then)
        dels.extend(dels_else)
    for kind, body in map(split_op, ops):
        if kind != "request_put":
            continue
        key = body.get("key", b"")
        if key in puts or _hits(dels, key):
            raise RaftkvError("DUPLICATE_KEY")
        puts.add(key)
    return puts, dels


def has_put(body):
    """True if a txn holds a put anywhere (a NO_SPACE alarm rejects it, as etcd's capped
    applier does)."""
    for name in ("success", "failure"):
        for op in body.get(name) or ():
            kind, sub = split_op(op)
            if kind == "request_put" or (kind == "request_txn" and has_put(sub)):
                return True
    return False
