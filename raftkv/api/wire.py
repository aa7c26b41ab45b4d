"""The native protocol, in one place: framing, envelopes, op table, field types, limits.

Framing. Every frame is a u32 big-endian length followed by that many bytes of msgpack
(binary and str types kept apart: keys and values are bytes, field names and op names str).

Handshake. The client's first frame is HELLO: ["raftkv", PROTOCOL_VERSION]. The server answers
["raftkv", PROTOCOL_VERSION, {"max_frame_bytes": n}] or, for another version, an error frame
(request id 0) and closes the connection.

Envelopes (after the hello):

    request   [request_id, op, body]                    request_id: int >= 1, unique in flight
              [request_id, op, body, idempotency_id]    idempotency_id: [client_id, seq] (u64s)
    response  [request_id, status, payload]

    status  payload
    0 OK    the response dict (docs/INTERNAL_API.md §4, §5; etcd protobuf field names)
    1 ERROR RaftkvError.to_wire(): {"code", "message"}; request id 0 = the connection failed
    2 ITEM  one item of a stream (a watch response {"events", "header", ...})
    3 END   the stream is over (payload None, or an error dict if it ended on an error)

The idempotency id lets a member drop a retried write it already applied: the client draws a
random 64-bit client id once and numbers its writes; a retry (after a timeout, a lost
connection or a leader change) reuses the id. The server passes it to the service as the body
field "request_id"; services that do not dedupe ignore it.

Ops: everything in the service contract (OPS), plus six handled by the front end itself:
- "watch" (streamed: ITEM frames on the watch's request id until cancelled or ended);
- "watch_cancel" {"watch_id": request id of the watch} -> {"canceled": bool}; the watch then
  gets an END frame;
- "cancel" {"cancel_id": request id of a unary request in flight} -> {"canceled": bool}: its
  client gave up on it; the request is never answered, and a write the member still held for
  a leader is never proposed (one already proposed may still be applied, as after a lost
  connection). raftkv's gRPC workers send it when their caller's RPC ends first (a deadline);
- "snapshot" {} (streamed: ITEM frames of bytes, the member's database image as
  service.snapshot() yields it, then END; used by the gRPC worker processes' Maintenance
  .Snapshot, see raftkv/api/etcd/workers.py);
- "batch" {"requests": [{"request_put": body} | {"request_delete_range": body}, ...]}
  -> {"responses": [{"response_put": resp} | {"response_delete_range": resp}
  | {"error": {"code", "message"}}, ...]}: each item is one service.call, all in flight at once
  (the member may turn many into few Raft entries); items succeed or fail one by one.
- "put_many" {"kvs": [key0, value0, key1, value1, ...]} (bytes) -> {"done": n, "errors":
  [[pair index, {"code", "message"}], ...]}: plain puts (no lease, prev_kv or ignore flags),
  each at its own revision as if sent alone, without a response each (bulk loads: the
  member proposes them as few "puts" entries); pairs succeed or fail one by one.
"""
from __future__ import annotations

import struct

import msgpack

from raftkv.errors import ERRORS, RaftkvError

__all__ = ["ERRORS", "RaftkvError"]  # re-exported: the client imports errors through here.

PROTOCOL_MAGIC = "raftkv"
PROTOCOL_VERSION = 1

STATUS_OK = 0
STATUS_ERROR = 1
STATUS_ITEM = 2
STATUS_END = 3

CONNECTION_REQUEST_ID = 0  # error frames about the whole connection use this id

FRAME_HEADER = struct.Struct(">I")
# etcd's default --max-request-bytes is 1.5 MiB; the overhead covers the envelope and field
# names around a value of that size.
VALUE_BYTES_MAX = 1536 * 1024
FRAME_OVERHEAD_BYTES = 64 * 1024
FRAME_BYTES_MAX = VALUE_BYTES_MAX + FRAME_OVERHEAD_BYTES
# Responses (a large range) may be far bigger than requests; a client accepts up to this.
RESPONSE_FRAME_BYTES_MAX = 256 * 1024 * 1024
BATCH_REQUESTS_MAX = 10_000  # items in one "batch" request; bounds one request's fan-out

UNARY_OPS = frozenset({
    "range", "put", "delete_range", "txn", "compact",
    "lease_grant", "lease_revoke", "lease_keepalive", "lease_timetolive",
    "lease_leases",
    "member_list", "member_add", "member_remove", "member_update", "member_promote",
    "status", "alarm", "defragment", "hash", "hash_kv", "move_leader", "header",
    "watch_check",  # {key, range_end} -> {} or the error a gRPC watch create would cancel with
    "auth_enable", "auth_disable", "auth_status", "authenticate",
    "user_add", "user_get", "user_list", "user_delete", "user_change_password",
    "user_grant_role", "user_revoke_role",
    "role_add", "role_get", "role_list", "role_delete", "role_grant_permission",
    "role_revoke_permission",
})
WRITE_OPS = frozenset({
    "put", "delete_range", "txn", "compact", "lease_grant", "lease_revoke", "batch",
})
STREAM_OPS = frozenset({"watch", "snapshot"})
FRONT_END_OPS = frozenset({"watch", "watch_cancel", "cancel", "batch", "put_many",
                           "snapshot"})
OPS = UNARY_OPS | FRONT_END_OPS


def prefix_range_end(prefix):
    """etcd's range end for every key starting with prefix (clientv3.GetPrefixRangeEnd): the
    prefix with its last byte below 0xff incremented (the 0xff bytes after it dropped); b"\\0",
    every key from the prefix on, for an empty or all-0xff prefix. The one copy for the
    clients, the CLIs and the gRPC front end's lock and election recipes."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


# Types of the request fields the front end checks before calling the service (wrong type:
# BAD_REQUEST). bool is an int in Python, so int fields accept it too; that is harmless.
_B, _I, _T, _L, _D = (bytes,), (int,), (bool,), (list,), (dict,)
FIELD_TYPES = {
    "key": _B, "range_end": _B, "value": _B,
    "limit": _I, "revision": _I, "sort_order": _I, "sort_target": _I,
    "min_mod_revision": _I, "max_mod_revision": _I,
    "min_create_revision": _I, "max_create_revision": _I,
    "lease": _I, "ID": _I, "TTL": _I, "start_revision": _I, "watch_id": _I, "cancel_id": _I,
    "serializable": _T, "keys_only": _T, "count_only": _T, "prev_kv": _T,
    "ignore_value": _T, "ignore_lease": _T, "physical": _T, "keys": _T,
    "compare": _L, "success": _L, "failure": _L, "requests": _L, "filters": _L,
    "checkpoints": _L, "kvs": _L, "token": (str,),
}
BATCH_ITEM_OPS = {"request_put": "put", "request_delete_range": "delete_range"}


class WireError(RaftkvError):
    """A frame that cannot be decoded: the connection it came on is unusable."""


def encode(obj):
    """msgpack bytes of one frame body, without the length header."""
    return msgpack.packb(obj, use_bin_type=True)


def frame(obj, max_frame_bytes=RESPONSE_FRAME_BYTES_MAX):
    """One whole frame: header + body. Raises REQUEST_TOO_LARGE beyond max_frame_bytes."""
    body = encode(obj)
    if len(body) > max_frame_bytes:
        raise RaftkvError(
            "REQUEST_TOO_LARGE",
            f"etcdserver: request is too large ({len(body)} > {max_frame_bytes} bytes)")
    return FRAME_HEADER.pack(len(body)) + body


def hello(options=None):
    """A client's hello; options (a map) only for what a server asks of some connections
    (the member's gRPC workers present their secret this way)."""
    if options:
        return [PROTOCOL_MAGIC, PROTOCOL_VERSION, options]
    return [PROTOCOL_MAGIC, PROTOCOL_VERSION]


def check_hello(obj, *, reply):
    """Raises BAD_REQUEST unless obj is a hello (reply: the server's answer) of our version.
    Returns the map that follows the version: the server's limits (reply), or the client's
    options ({} when it sent none)."""
    sizes = (3,) if reply else (2, 3)
    if not (isinstance(obj, list) and len(obj) in sizes and obj[0] == PROTOCOL_MAGIC) or \
            (len(obj) == 3 and not isinstance(obj[2], dict)):
        raise WireError("BAD_REQUEST", f"raftkv: expected a hello frame, got {obj!r:.80}")
    if obj[1] != PROTOCOL_VERSION:
        raise WireError("BAD_REQUEST", f"raftkv: protocol version {obj[1]!r} not supported "
                                       f"(this side speaks {PROTOCOL_VERSION})")
    return obj[2] if len(obj) == 3 else {}


def request(request_id, op, body, idempotency_id=None):
    if idempotency_id is None:
        return [request_id, op, body]
    return [request_id, op, body, list(idempotency_id)]


def parse_request(obj):
    """(request_id, op, body, idempotency_id) of a request envelope.

    A broken envelope raises WireError (the connection is closed: we cannot even say which
    request failed); an unknown op or a badly typed body raises a plain RaftkvError naming the
    request, so only that request fails.
    """
    if not isinstance(obj, list) or len(obj) not in (3, 4):
        raise WireError("BAD_REQUEST", "raftkv: malformed request envelope")
    request_id, op, body = obj[0], obj[1], obj[2]
    if not isinstance(request_id, int) or isinstance(request_id, bool) or request_id < 1:
        raise WireError("BAD_REQUEST", f"raftkv: bad request id {request_id!r:.40}")
    idem = obj[3] if len(obj) == 4 else None
    return request_id, op, body, idem


def check_body(op, body, idem=None):
    """Raises UNKNOWN_OP or BAD_REQUEST for a request the front end must not pass on."""
    if not isinstance(op, str) or op not in OPS:
        raise RaftkvError("UNKNOWN_OP", f"raftkv: unknown operation {op!r:.40}")
    if not isinstance(body, dict):
        raise RaftkvError("BAD_REQUEST", "raftkv: request body must be a map")
    for name, value in body.items():
        types = FIELD_TYPES.get(name)
        if types is not None and not isinstance(value, types):
            raise RaftkvError("BAD_REQUEST", f"raftkv: field {name!r} must be "
                                             f"{types[0].__name__}, got {type(value).__name__}")
    if idem is not None:
        ok = isinstance(idem, list) and len(idem) == 2 and all(
            isinstance(x, int) and 0 <= x < 2 ** 64 for x in idem)
        if not ok:
            raise RaftkvError("BAD_REQUEST", "raftkv: idempotency id must be [client_id, seq]")


def batch_items(body):
    """[(op, item_body)] of a batch request; BAD_REQUEST if any item is not a put or delete."""
    reqs = body.get("requests", [])
    if len(reqs) > BATCH_REQUESTS_MAX:
        raise RaftkvError("TOO_MANY_OPS", f"raftkv: batch of {len(reqs)} requests "
                                          f"(max {BATCH_REQUESTS_MAX})")
    items = []
    for item in reqs:
        if not isinstance(item, dict) or len(item) != 1:
            raise RaftkvError("BAD_REQUEST", "raftkv: a batch item is {request_put: body} or "
                                             "{request_delete_range: body}")
        (kind, item_body), = item.items()
        op = BATCH_ITEM_OPS.get(kind)
        if op is None:
            raise RaftkvError("BAD_REQUEST", f"raftkv: {kind!r:.40} not allowed in a batch")
        check_body(op, item_body)
        items.append((op, item_body))
    return items


def put_many_kvs(body):
    """The [key, value, ...] list of a put_many request; BAD_REQUEST unless it is bytes pairs.
    (Empty keys pass: each fails alone, as EMPTY_KEY.)"""
    kvs = body.get("kvs", [])
    if len(kvs) % 2:
        raise RaftkvError("BAD_REQUEST", "raftkv: put_many kvs must be [key, value, ...]")
    if len(kvs) > 2 * BATCH_REQUESTS_MAX:
        raise RaftkvError("TOO_MANY_OPS", f"raftkv: put_many of {len(kvs) // 2} pairs "
                                          f"(max {BATCH_REQUESTS_MAX})")
    for item in kvs:
        if type(item) is not bytes:
            raise RaftkvError("BAD_REQUEST", "raftkv: put_many keys and values must be bytes")
    return kvs


class FrameDecoder:
    """Incremental decoder: feed() bytes as they arrive, get back the whole frames' objects.

    A length above max_frame_bytes raises WireError(REQUEST_TOO_LARGE) as soon as the header
    is seen (the body is never buffered); a body that is not exactly one msgpack object raises
    WireError(BAD_REQUEST). After an error the decoder is unusable (the stream lost framing).
    """

    def __init__(self, max_frame_bytes=FRAME_BYTES_MAX):
        assert max_frame_bytes > 0
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._need = None  # body length of the frame being read, or None while in the header
        self._broken = False

    def feed(self, data):
        assert not self._broken, "decoder used after a framing error"
        self._buf += data
        out = []
        while True:
            if self._need is None:
                if len(self._buf) < FRAME_HEADER.size:
                    return out
                (self._need,) = FRAME_HEADER.unpack_from(self._buf)
                del self._buf[:FRAME_HEADER.size]
                if self._need > self.max_frame_bytes:
                    self._broken = True
                    raise WireError("REQUEST_TOO_LARGE",
                                    f"etcdserver: request is too large ({self._need} > "
                                    f"{self.max_frame_bytes} bytes)")
            if len(self._buf) < self._need:
                return out
            body = bytes(self._buf[:self._need])
            del self._buf[:self._need]
            self._need = None
            out.append(self._unpack(body))

    def _unpack(self, body):
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            self._broken = True
            raise WireError("BAD_REQUEST", f"raftkv: undecodable frame: {exc}") from None

    @property
    def pending(self):
        """True while part of a frame has been fed but not the whole of it."""
        return self._need is not None or len(self._buf) > 0
