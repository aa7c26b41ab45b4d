"""Acceptance 6: bad input on the native client port and on the peer port.

Each case connects with a raw socket, sends something wrong, and reads what comes back. The
member must stay up (status answers, writes still commit), previously written data must stay
readable, and on the client port the answer is an error frame where the protocol allows one
(raftkv/api/wire.py): request id 0 (the connection failed, then it closes) for a frame that
cannot be decoded, the request's own id (the connection stays usable) for an unknown op or a
badly typed body.
"""
from __future__ import annotations

import socket
import struct
import time

import msgpack
import pytest

from raftkv.api import wire
from raftkv.raft.types import MsgType
from raftkv.server.config import member_id

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

IO_TIMEOUT_S = 5.0
TOKEN = "raftkv-local"  # LocalCluster's default --initial-cluster-token


def _frame(obj):
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


class Raw:
    """A raw TCP connection that reads back whole frames."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
        self.decoder = wire.FrameDecoder(wire.RESPONSE_FRAME_BYTES_MAX)
        self.frames = []

    def send(self, data):
        self.sock.sendall(data)

    def read_frame(self):
        """The next frame, or None at EOF."""
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    def read_until_eof(self):
        """Every frame until the server closes (fails if it does not within the timeout)."""
        out = []
        while True:
            f = self.read_frame()
            if f is None:
                return out
            out.append(f)

    def hello(self):
        self.send(_frame(wire.hello()))
        reply = self.read_frame()
        assert reply[:2] == [wire.PROTOCOL_MAGIC, wire.PROTOCOL_VERSION], reply

    def close(self):
        self.sock.close()


def _assert_connection_error(frames, code):
    """Exactly one error frame on request id 0 with `code`, then the connection closed."""
    assert len(frames) == 1, frames
    request_id, status, payload = frames[0]
    assert (request_id, status) == (wire.CONNECTION_REQUEST_ID, wire.STATUS_ERROR), frames
    assert payload["code"] == code, payload
    assert payload["message"], "the error frame must say what was wrong"


@pytest.fixture(scope="module")
def seeded(shared_cluster3):
    h = shared_cluster3
    c = h.client(timeout=10.0)
    for i in range(20):
        c.put(f"/seed/{i:02d}", f"value-{i}")
    return h, c


def _assert_healthy(h, c):
    """Every member answers status, the data is intact, and a write still commits."""
    for m in h.members:
        assert m.alive(), f"{m.name} died ({m.proc.returncode})"
        st = h.status(m, timeout=5.0)
        assert st["leader"] != 0
    got = [(meta.key, v) for v, meta in c.get_prefix("/seed/")]
    assert got == [(f"/seed/{i:02d}".encode(), f"value-{i}".encode()) for i in range(20)]
    c.put("/seed-check", str(time.monotonic()))
    for m in h.members:
        assert h.client([m]).get("/seed-check")[0] is not None


# ---------------------------------------------------------------- native client port

NATIVE_CONNECTION_CASES = {
    # name: (bytes sent, then EOF?, expected code on request id 0)
    "http_request": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False, "REQUEST_TOO_LARGE"),
    "length_ffffffff": (b"\xff\xff\xff\xff" + b"x" * 100, False, "REQUEST_TOO_LARGE"),
    "length_just_over_limit": (struct.pack(">I", wire.FRAME_BYTES_MAX + 1), False,
                               "REQUEST_TOO_LARGE"),
    "undecodable_msgpack": (struct.pack(">I", 3) + b"\xc1\xc1\xc1", False, "BAD_REQUEST"),
    "two_objects_in_one_frame": (struct.pack(">I", 2) + b"\x01\x02", False, "BAD_REQUEST"),
    "truncated_body_then_eof": (struct.pack(">I", 100) + b"\x93\x01", True, "BAD_REQUEST"),
    "truncated_header_then_eof": (b"\x00\x00", True, "BAD_REQUEST"),
    "map_claiming_2**32_items": (struct.pack(">I", 5) + b"\xdf\xff\xff\xff\xff", False,
                                 "BAD_REQUEST"),
    "wrong_magic": (_frame(["etcd", 1]), False, "BAD_REQUEST"),
    "wrong_version": (_frame([wire.PROTOCOL_MAGIC, 99]), False, "BAD_REQUEST"),
    "hello_not_a_list": (_frame({"raftkv": 1}), False, "BAD_REQUEST"),
    "empty_frame": (struct.pack(">I", 0), False, "BAD_REQUEST"),
}


@pytest.mark.parametrize("case", sorted(NATIVE_CONNECTION_CASES))
def test_native_undecodable_input_gets_connection_error(seeded, case):
    h, c = seeded
    data, eof, code = NATIVE_CONNECTION_CASES[case]
    target = h.members[hash(case) % len(h.members)]
    raw = Raw(target.native_port)
    try:
        raw.send(data)
        if eof:
            raw.sock.shutdown(socket.SHUT_WR)
        _assert_connection_error(raw.read_until_eof(), code)
    finally:
        raw.close()
    _assert_healthy(h, c)


BAD_ENVELOPES = {
    "not_a_list": {"op": "put"},
    "too_short": [1, "put"],
    "too_long": [1, "put", {}, [1, 2], "extra"],
    "request_id_zero": [0, "status", {}],
    "request_id_negative": [-5, "status", {}],
    "request_id_str": ["1", "status", {}],
    "request_id_bool": [True, "status", {}],
    "request_id_float": [1.5, "status", {}],
}


@pytest.mark.parametrize("case", sorted(BAD_ENVELOPES))
def test_native_bad_envelope_after_hello(seeded, case):
    h, c = seeded
    raw = Raw(h.members[0].native_port)
    try:
        raw.hello()
        raw.send(_frame(BAD_ENVELOPES[case]))
        _assert_connection_error(raw.read_until_eof(), "BAD_REQUEST")
    finally:
        raw.close()
    _assert_healthy(h, c)


BAD_REQUESTS = {
    # name: (op, body, idempotency id or None, expected code)
    "unknown_op": ("drop_database", {}, None, "UNKNOWN_OP"),
    "op_not_a_string": (7, {}, None, "UNKNOWN_OP"),
    "op_bytes": (b"put", {"key": b"k", "value": b"v"}, None, "UNKNOWN_OP"),
    "private_service_method": ("_write", {}, None, "UNKNOWN_OP"),
    "body_not_a_map": ("put", [b"k", b"v"], None, "BAD_REQUEST"),
    "body_nil": ("range", None, None, "BAD_REQUEST"),
    "key_is_int": ("put", {"key": 5, "value": b"v"}, None, "BAD_REQUEST"),
    "key_is_str": ("range", {"key": "k"}, None, "BAD_REQUEST"),
    "value_is_list": ("put", {"key": b"k", "value": [1]}, None, "BAD_REQUEST"),
    "limit_is_str": ("range", {"key": b"k", "limit": "10"}, None, "BAD_REQUEST"),
    "lease_is_bytes": ("put", {"key": b"k", "value": b"v", "lease": b"1"}, None,
                       "BAD_REQUEST"),
    "compare_is_map": ("txn", {"compare": {}}, None, "BAD_REQUEST"),
    "idempotency_id_short": ("put", {"key": b"/bad/k", "value": b"v"}, [1], "BAD_REQUEST"),
    "idempotency_id_negative": ("put", {"key": b"/bad/k", "value": b"v"}, [1, -1],
                                "BAD_REQUEST"),
    "idempotency_id_strs": ("put", {"key": b"/bad/k", "value": b"v"}, ["a", "b"],
                            "BAD_REQUEST"),
    "idempotency_id_map": ("put", {"key": b"/bad/k", "value": b"v"}, {"c": 1},
                           "BAD_REQUEST"),
    "batch_item_range": ("batch", {"requests": [{"request_range": {"key": b"k"}}]}, None,
                         "BAD_REQUEST"),
    "batch_item_not_map": ("batch", {"requests": [b"x"]}, None, "BAD_REQUEST"),
    "batch_item_bad_key": ("batch", {"requests": [{"request_put": {"key": 1}}]}, None,
                           "BAD_REQUEST"),
    "watch_cancel_bad_id": ("watch_cancel", {"watch_id": "x"}, None, "BAD_REQUEST"),
    "put_many_odd": ("put_many", {"kvs": [b"/bad/k"]}, None, "BAD_REQUEST"),
    "put_many_not_list": ("put_many", {"kvs": b"/bad/k"}, None, "BAD_REQUEST"),
    "put_many_int_value": ("put_many", {"kvs": [b"/bad/k", 1]}, None, "BAD_REQUEST"),
    "put_many_str_key": ("put_many", {"kvs": ["/bad/k", b"v"]}, None, "BAD_REQUEST"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_native_bad_request_fails_alone(seeded, case):
    """The request gets an error frame on its own id; the connection keeps working."""
    h, c = seeded
    op, body, idem, code = BAD_REQUESTS[case]
    raw = Raw(h.members[1].native_port)
    try:
        raw.hello()
        envelope = [7, op, body] if idem is None else [7, op, body, idem]
        raw.send(_frame(envelope))
        request_id, status, payload = raw.read_frame()
        assert (request_id, status) == (7, wire.STATUS_ERROR), (request_id, status, payload)
        assert payload["code"] == code, payload
        assert payload["message"]
        # The same connection still serves a good request.
        raw.send(_frame([8, "range", {"key": b"/seed/00"}]))
        request_id, status, payload = raw.read_frame()
        assert (request_id, status) == (8, wire.STATUS_OK), payload
        assert payload["kvs"][0]["value"] == b"value-0"
    finally:
        raw.close()
    assert c.get("/bad/k") == (None, None), "a rejected write must not be applied"
    _assert_healthy(h, c)


def test_native_semantic_errors_are_clean(seeded):
    """Well-typed but invalid requests get the etcd error, not INTERNAL."""
    h, c = seeded
    raw = Raw(h.members[2].native_port)
    try:
        raw.hello()
        cases = [
            ("put", {"key": b"", "value": b"v"}, "EMPTY_KEY"),
            ("range", {"key": b"/seed/00", "revision": 10 ** 9}, "FUTURE_REV"),
            ("lease_revoke", {"ID": 123456789}, "LEASE_NOT_FOUND"),
            ("put", {"key": b"/bad/big", "value": b"x" * (wire.VALUE_BYTES_MAX + 1)},
             "REQUEST_TOO_LARGE"),
        ]
        for rid, (op, body, code) in enumerate(cases, start=1):
            raw.send(_frame([rid, op, body]))
            got = raw.read_frame()
            assert got[:2] == [rid, wire.STATUS_ERROR], (op, got)
            assert got[2]["code"] == code, (op, got)
    finally:
        raw.close()
    assert c.get("/bad/big") == (None, None)
    _assert_healthy(h, c)


def test_native_writes_in_flight_when_the_client_vanishes(seeded):
    """Puts pipelined on one connection that closes before their answers: each is applied
    once (the answers have nowhere to go) and the member stays up. A request id reused while
    its put is in flight fails the connection (wire.py), and the second put is not applied."""
    h, c = seeded
    for m in h.members:
        raw = Raw(m.native_port)
        try:
            raw.hello()
            raw.send(b"".join(_frame([rid, "put", {"key": b"/vanish/%s/%d" % (m.name.encode(),
                                                                              rid),
                                                   "value": b"v"}]) for rid in range(1, 21)))
        finally:
            raw.close()  # at once: most answers are not out yet
    raw = Raw(h.members[0].native_port)
    try:
        raw.hello()
        raw.send(_frame([1, "put", {"key": b"/dup/first", "value": b"1"}]) +
                 _frame([1, "put", {"key": b"/dup/second", "value": b"2"}]))
        frames = raw.read_until_eof()
        assert [f[2]["code"] for f in frames if f[0] == wire.CONNECTION_REQUEST_ID] == \
            ["BAD_REQUEST"], frames
    finally:
        raw.close()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        got = c.get_prefix("/vanish/")
        if len(got) == 3 * 20:
            break
        time.sleep(0.1)
    assert len(got) == 3 * 20, [meta.key for _, meta in got]
    assert all(meta.version == 1 for _, meta in got)  # each applied once
    assert c.get("/dup/second") == (None, None)
    _assert_healthy(h, c)


def test_native_many_garbage_connections_at_once(seeded):
    """A burst of broken connections (some left open half-way) does not wedge the member."""
    h, c = seeded
    target = h.members[0]
    raws = []
    try:
        for i in range(50):
            raw = Raw(target.native_port)
            raws.append(raw)
            raw.send([b"\x00\x00\x00", struct.pack(">I", 1000) + b"\x01", b"\xff" * 8][i % 3])
        _assert_healthy(h, c)
    finally:
        for raw in raws:
            raw.close()
    _assert_healthy(h, c)


# ---------------------------------------------------------------- peer port

def _peer_ids(h):
    return {m.name: member_id([m.peer_url], TOKEN) for m in h.members}


def _peer_hello(h, target, sender):
    ids = _peer_ids(h)
    return _frame({"token": TOKEN, "from": ids[sender.name], "to": ids[target.name]})


def _send_and_expect_close(port, data):
    """Send data; the member must close the connection (never answer with garbage)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    finally:
        sock.close()


def _message(mtype, to, frm, term=0, **kw):
    m = [int(mtype), to, frm, term, 0, 0, [], 0, None, False, 0, b""]
    for k, v in kw.items():
        m[["type", "to", "frm", "term", "log_term", "index", "entries", "commit", "snap",
           "reject", "hint", "ctx"].index(k)] = v
    return m


PEER_RAW_CASES = {
    "garbage": b"\x00\x01garbage\xff" * 10,
    "http_request": b"GET / HTTP/1.1\r\n\r\n",
    "length_ffffffff": b"\xff\xff\xff\xff" + b"x" * 64,
    "truncated_frame": struct.pack(">I", 1000) + b"\x82",
    "undecodable_body": struct.pack(">I", 2) + b"\xc1\xc1",
    "hello_not_a_map": _frame(["token", "x"]),
    "hello_wrong_token": _frame({"token": "someone-else", "from": 1, "to": 2}),
    "hello_unknown_member": _frame({"token": TOKEN, "from": 12345, "to": 67890}),
    "hello_token_wrong_type": _frame({"token": [1, 2], "from": {}, "to": None}),
}


@pytest.mark.parametrize("case", sorted(PEER_RAW_CASES))
def test_peer_port_rejects_bad_connections(seeded, case):
    h, c = seeded
    for m in h.members:
        _send_and_expect_close(m.peer_port, PEER_RAW_CASES[case])
    _assert_healthy(h, c)


def _peer_frames_after_hello(h, target, sender):
    ids = _peer_ids(h)
    to, frm = ids[target.name], ids[sender.name]
    hb = MsgType.HEARTBEAT
    return {
        "not_a_list": _frame({"m": 1}),
        "empty_list": _frame([]),
        "unknown_kind": _frame(["zz", 1, 2]),
        "message_too_short": _frame(["m", [1, 2, 3]]),
        "message_not_a_list": _frame(["m", "hello"]),
        "message_unknown_type": _frame(["m", _message(99, to, frm)]),
        "message_local_type": _frame(["m", _message(MsgType.HUP, to, frm)]),
        "message_forged_sender": _frame(["m", _message(hb, to, frm ^ 1)]),
        "message_bad_entries": _frame(["m", _message(MsgType.APP, to, frm, entries=[[1]])]),
        "message_entry_type_unknown": _frame(
            ["m", _message(MsgType.APP, to, frm, entries=[[0, 1, 77, b""]])]),
        "message_ctx_wrong_type": _frame(["m", _message(hb, to, frm, ctx="text")]),
        "message_term_str": _frame(["m", _message(hb, to, frm, term="high")]),
        "message_term_none": _frame(["m", _message(hb, to, frm, term=None)]),
        "message_commit_str": _frame(["m", _message(hb, to, frm, commit="x")]),
        "message_index_list": _frame(["m", _message(MsgType.APP, to, frm, index=[1])]),
        "snapshot_begin_bad": _frame(["sb", [1]]),
        "snapshot_bad_chunk": _frame(["sb", _message(MsgType.SNAP, to, frm, snap=[1, 1, [], []])])
        + _frame(["sc", 5]),
        "forward_unknown_op": _frame(["f", 1, "drop_database", {}]),
        "forward_bad_body": _frame(["f", 2, "put", "not-a-map"]),
        "forward_short": _frame(["f", 3]),
        "oversized_after_hello": b"\xff\xff\xff\xff",
        "truncated_after_hello": struct.pack(">I", 50) + b"\x92",
    }



def _peer_case_names():
    class _M:
        def __init__(self, name):
            self.name = name
            self.peer_url = f"http://127.0.0.1:{len(name)}"

    fake = type("H", (), {"members": [_M("m1"), _M("m2")]})()
    return sorted(_peer_frames_after_hello(fake, fake.members[0], fake.members[1]))


@pytest.mark.parametrize("case", _peer_case_names())
def test_peer_port_survives_bad_frames_from_an_authenticated_peer(seeded, case):
    """A peer that passed the hello (right token, known member id) then sends garbage: the
    connection is dropped; the member keeps serving and the cluster keeps its leader."""
    h, c = seeded
    for target in h.members:
        sender = next(m for m in h.members if m is not target)
        data = _peer_hello(h, target, sender) + _peer_frames_after_hello(h, target,
                                                                         sender)[case]
        _send_and_expect_close(target.peer_port, data)
    _assert_healthy(h, c)


def test_grpc_txn_with_an_unknown_compare_target_is_refused(seeded):
    """protobuf keeps an unknown enum number, so an etcd client can send a compare with
    target 99. It is refused (INVALID_ARGUMENT) before anything is proposed; it used to commit
    and then stop every member in its apply."""
    import grpc

    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc

    h, c = seeded
    with grpc.insecure_channel(h.members[0].grpc_endpoint) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        req = rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"/seed/00", target=99,
                                                          result=0, version=1)],
                                 success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(
                                     key=b"/bad/k", value=b"v"))])
        with pytest.raises(grpc.RpcError) as exc:
            kv.Txn(req, timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "target 99" in exc.value.details()
        req = rpc_pb2.RangeRequest(key=b"/seed/", range_end=b"/seed0", sort_order=1,
                                   sort_target=42)
        with pytest.raises(grpc.RpcError) as exc:
            kv.Range(req, timeout=10)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert c.get("/bad/k") == (None, None)
    _assert_healthy(h, c)


@pytest.mark.parametrize("urls", [["x"], ["http://"], [5], "http://127.0.0.1:1", [], None])
def test_native_member_add_and_update_with_bad_peer_urls(seeded, urls):
    """Peer URLs no member could dial are refused before anything is proposed (a conf change
    is applied by every member; a URL that fails there would fail everywhere)."""
    h, c = seeded
    before = h.status(h.members[0])["header"]["member_id"], len(c.members())
    raw = Raw(h.members[0].native_port)
    try:
        raw.hello()
        body = {} if urls is None else {"peerURLs": urls}
        for rid, op in enumerate(("member_add", "member_update"), start=1):
            raw.send(_frame([rid, op, dict(body, ID=before[0])]))
            got = raw.read_frame()
            assert got[:2] == [rid, wire.STATUS_ERROR], (op, got)
            assert got[2]["code"] == "MEMBER_BAD_URLS", (op, got)
    finally:
        raw.close()
    assert len(c.members()) == before[1]
    _assert_healthy(h, c)
