"""Static checks of requests, as etcd's gRPC layer does before proposing (v3rpc/key.go).

They run again in apply so a request that bypassed the front end still gets etcd's errors.

check_shape goes further than etcd: every field of a KV or lease request, nested transactions
included, must have its type, fit in an int64 and name a known enum value (a compare's result
and target, a range's sort order and target). The native protocol carries untyped msgpack and
protobuf keeps unknown enum numbers, so without it a well-formed request with target 99 would
pass the front end, commit, and then fail in the apply of every member at once.
"""
from __future__ import annotations

from raftkv.errors import RaftkvError
from raftkv.mvcc import auth

OP_KEYS = ("request_range", "request_put", "request_delete_range", "request_txn")
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
TXN_DEPTH_MAX = 32  # nested transactions; bounds the recursion of every pass over a txn
COMPARE_RESULTS = range(4)  # EQUAL, GREATER, LESS, NOT_EQUAL
COMPARE_TARGETS = ("version", "create_revision", "mod_revision", "value", "lease")
SORT_ORDERS = range(3)  # NONE, ASCEND, DESCEND
SORT_TARGETS = range(5)  # KEY, VERSION, CREATE, MOD, VALUE
WATCH_FILTERS = (0, 1)  # NOPUT, NODELETE
_RANGE_INTS = ("limit", "revision", "min_mod_revision", "max_mod_revision",
               "min_create_revision", "max_create_revision")
_FLAGS = ("serializable", "keys_only", "count_only", "prev_kv", "ignore_value", "ignore_lease",
          "physical", "keys", "isLearner")
ALARM_ACTIONS = range(3)  # GET, ACTIVATE, DEACTIVATE
UINT64_MAX = (1 << 64) - 1


def _bad(what):
    raise RaftkvError("BAD_REQUEST", f"raftkv: {what}")


def _int(body, name, allowed=None, low=INT64_MIN):
    """allowed: a small range of enum numbers; low: the least value (default: int64's)."""
    v = body.get(name, 0)
    if not isinstance(v, int):
        _bad(f"{name} must be an integer, not {type(v).__name__}")
    if not INT64_MIN <= v <= INT64_MAX:
        _bad(f"{name} {v} does not fit in 64 signed bits")
    if v < low:
        _bad(f"{name} {v} is below {low}")
    if allowed is not None and v not in allowed:
        _bad(f"{name} {v} is not one of {allowed.start}..{allowed.stop - 1}")


def _uint64(body, name):
    """A member ID (etcd's uint64 IDs)."""
    v = body.get(name, 0)
    if not isinstance(v, int) or not 0 <= v <= UINT64_MAX:
        _bad(f"{name} must be an unsigned 64-bit integer, not {v!r}")


def _bytes(body, name):
    if not isinstance(body.get(name, b""), bytes):
        _bad(f"{name} must be bytes, not {type(body[name]).__name__}")


def _map(obj, what):
    if not isinstance(obj, dict):
        _bad(f"{what} must be a map, not {type(obj).__name__}")
    for name in _FLAGS:
        if name in obj and not isinstance(obj[name], (bool, int)):
            _bad(f"{name} must be a boolean")
    return obj


def _range(body):
    _bytes(body, "key")
    _bytes(body, "range_end")
    for name in _RANGE_INTS:
        _int(body, name)
    _int(body, "sort_order", SORT_ORDERS)
    _int(body, "sort_target", SORT_TARGETS)


def _put(body):
    _bytes(body, "key")
    _bytes(body, "value")
    _int(body, "lease")


def _compare(cmp):
    _map(cmp, "a compare")
    _int(cmp, "result", COMPARE_RESULTS)
    _int(cmp, "target", range(len(COMPARE_TARGETS)))
    _bytes(cmp, "key")
    _bytes(cmp, "range_end")
    field = COMPARE_TARGETS[cmp.get("target", 0)]
    if field == "value":
        _bytes(cmp, field)
    else:
        _int(cmp, field)


def _txn(body, depth):
    if depth > TXN_DEPTH_MAX:
        _bad(f"transactions nested deeper than {TXN_DEPTH_MAX}")
    for name in ("compare", "success", "failure"):
        if not isinstance(body.get(name) or [], list):
            _bad(f"{name} must be a list")
    for cmp in body.get("compare") or ():
        _compare(cmp)
    for name in ("success", "failure"):
        for op in body.get(name) or ():
            _map(op, "a transaction op")
            if not op:
                continue  # etcd's "empty op": check_txn answers KEY_NOT_FOUND
            if len(op) != 1 or next(iter(op)) not in OP_KEYS:
                _bad(f"a transaction op is one of {', '.join(OP_KEYS)}")
            (kind, sub), = op.items()
            _map(sub, kind)
            if kind == "request_txn":
                _txn(sub, depth + 1)
            else:
                _SHAPES[kind[len("request_"):]](sub)


_SHAPES = {"range": _range, "put": _put, "delete_range": lambda b: (_bytes(b, "key"),
                                                                    _bytes(b, "range_end"))}


def check_shape(op, body):
    """BAD_REQUEST unless body is a well-formed request of a KV, lease, watch, alarm or member
    op (others pass)."""
    _map(body, "the request body")
    if op == "txn":
        _txn(body, 0)
    elif op in _SHAPES:
        _SHAPES[op](body)
    elif op == "compact":
        _int(body, "revision")
    elif op == "watch_check":
        _bytes(body, "key")
        _bytes(body, "range_end")
    elif op == "watch":
        _bytes(body, "key")
        _bytes(body, "range_end")
        _int(body, "start_revision", low=0)
        filters = body.get("filters") or []
        if not isinstance(filters, list) or not all(
                isinstance(f, int) and f in WATCH_FILTERS for f in filters):
            _bad("filters must be a list of 0 (no puts) and 1 (no deletes)")
    elif op == "alarm":
        _int(body, "action", ALARM_ACTIONS)
        _int(body, "alarm", low=0)  # an unknown type: ACTIVATE raises none (the service)
        _uint64(body, "memberID")
    elif op in ("member_remove", "member_promote", "member_update"):
        _uint64(body, "ID")
    elif op == "move_leader":
        _uint64(body, "targetID")
    elif op in auth.ADMIN_OPS or op in auth.FRONT_END_OPS:
        auth.check_shape(op, body)
    elif op.startswith("lease_"):
        _int(body, "ID")
        _int(body, "TTL")
        if not isinstance(body.get("checkpoints") or [], list):
            _bad("checkpoints must be a list")
        for cp in body.get("checkpoints") or ():
            _map(cp, "a lease checkpoint")
            _int(cp, "ID")
            _int(cp, "remaining_TTL")


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
    """etcd 3.4's checks of a Txn before it is proposed (v3rpc/key.go), in its order: first
    checkTxnRequest over the whole txn (see _check_requests), then checkIntervals over the
    success ops and over the failure ops (duplicate writes, nested txns included)."""
    _check_requests(body, max_ops)
    _intervals(body.get("success") or ())
    _intervals(body.get("failure") or ())


def _check_requests(body, max_ops):
    """checkTxnRequest: TOO_MANY_OPS when the longest of compare, success and failure has
    more than max_ops; EMPTY_KEY for a compare without a key; then each op of success and
    of failure in turn: a put's, range's or delete's own checks, KEY_NOT_FOUND for an empty
    op (etcd's "empty op / nil entry"), and a nested txn the same checks with what its
    parent leaves of max_ops (max_ops less the parent's longest list)."""
    ops = max(len(body.get(name) or ()) for name in ("compare", "success", "failure"))
    if ops > max_ops:
        raise RaftkvError("TOO_MANY_OPS")
    for cmp in body.get("compare") or ():
        check_key(cmp)
    for name in ("success", "failure"):
        for op in body.get(name) or ():
            if not op:
                raise RaftkvError("KEY_NOT_FOUND")
            kind, sub = split_op(op)
            if kind == "request_put":
                check_put(sub)
            elif kind == "request_txn":
                _check_requests(sub, max_ops - ops)
            else:
                check_key(sub)


def _interval(body):
    """A delete's [key, range_end) as etcd's checkIntervals takes it: range_end as given, so
    "\0" (from the key on) is an interval that holds no key, and such a delete conflicts
    with no put (though it deletes them in apply)."""
    key, end = body.get("key", b""), body.get("range_end", b"")
    return key, end or key + b"\0"


def _hits(dels, key):
    return any(lo <= key < hi for lo, hi in dels)


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


def read_only(body):
    """True if a txn writes nothing whichever branch runs: no put or delete anywhere, nested
    txns included (etcd's isTxnReadonly, which serves such a txn as a linearizable read)."""
    for name in ("success", "failure"):
        for op in body.get(name) or ():
            kind, sub = split_op(op)
            if kind in ("request_put", "request_delete_range") or \
                    (kind == "request_txn" and not read_only(sub)):
                return False
    return True
