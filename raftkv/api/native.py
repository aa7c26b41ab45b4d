"""The native front end: the wire protocol (raftkv/api/wire.py) over asyncio TCP.

Per connection, requests are pipelined and multiplexed: each is its own task, and responses go
out in completion order, matched by request id. At most `inflight_max` unary requests run per
connection; beyond that the connection stops reading (TCP back-pressure reaches the client).
It also stops reading while the transport's write buffer is above its high-water mark.

A frame that cannot be decoded (garbage, truncated into the next frame, oversized) gets one
error frame on request id 0 and closes that connection only. A request with an unknown op or
badly typed fields fails alone (UNKNOWN_OP / BAD_REQUEST). A service's RaftkvError becomes an
error frame; any other exception is logged and sent as INTERNAL, and the server stays up.
No business logic lives here: every op is one service.call (a batch is several; a member
service takes a batch or a put_many whole, as service.batch / service.put_many).
"""
from __future__ import annotations

import asyncio
import collections
import enum
import hmac
import logging
import os
import stat

from raftkv.api import wire
from raftkv.mvcc import auth
from raftkv.server import leaderless
from raftkv.tls import common_name, der_of

log = logging.getLogger(__name__)

# Unary requests running at once on one connection. Enough to keep a pipelined client's window
# full (loadgen runs 64+ clients per connection) while bounding the memory one peer can pin.
INFLIGHT_MAX = 1024
WATCHES_MAX = 1024  # open watches per connection; each holds a task and a service iterator


class ConnState(enum.Enum):
    HELLO = "hello"  # waiting for the client's hello frame
    OPEN = "open"  # serving requests
    CLOSED = "closed"  # closing or closed: nothing more is read or written


_TRANSITIONS = {
    ConnState.HELLO: {ConnState.OPEN, ConnState.CLOSED},
    ConnState.OPEN: {ConnState.CLOSED},
    ConnState.CLOSED: set(),
}


_ANSWERED = object()  # _start_fast: the request was refused and answered at once
_IDENTITY_FIELDS = ("token", auth.CERT_USER_FIELD)


def _identity(body):
    """The fields of a request that say who sends it (the service decides the user)."""
    return {k: body[k] for k in _IDENTITY_FIELDS if k in body}


class _FastCall:
    """Stands in _tasks for a request started without a task (NativeConnection._start_fast):
    cancel() forgets the reply and undoes the bookkeeping, as a cancelled task's done
    callback would."""
    __slots__ = ("reply", "on_cancel")

    def __init__(self, reply, on_cancel):
        self.reply = reply
        self.on_cancel = on_cancel

    def cancel(self):
        if not self.reply.done():
            self.reply.cancel()
            self.on_cancel()


class NativeConnection(asyncio.Protocol):
    """One client connection. Moves bytes and runs one task per request."""

    def __init__(self, service, registry, *, max_frame_bytes, inflight_max, watches_max,
                 worker_secret=None, cert_check=None):
        self.service = service
        # A raftkv.tls.CertCheck (--client-crl-file, --client-cert-allowed-hostname): a TLS
        # client whose certificate it refuses is disconnected at once.
        self._cert_check = cert_check
        # The member's own port for its gRPC workers: a hello must carry this secret, and the
        # connection is then trusted to say which certificate a request came with.
        self._worker_secret = worker_secret
        self._trusted = False
        self._fail_fast = False  # the client asked to be refused, not held, without a leader
        self._registry = registry  # the server's set of open connections
        self._decoder = wire.FrameDecoder(max_frame_bytes)
        self._inflight_max = inflight_max
        self._watches_max = watches_max
        self._state = ConnState.HELLO
        self._transport = None
        self._tasks = {}  # request id -> task; Invariant: only requests not yet answered
        self._watches = set()  # request ids of running watches (a subset of _tasks)
        self._canceling = set()  # watch ids cancelled by watch_cancel (they get an END frame)
        self._inflight = 0  # unary requests running; Invariant: 0 <= _inflight <= len(_tasks)
        self._write_paused = False
        self._reading_paused = False
        self._eof = False  # the peer half-closed: close once the last answer is out
        self._backlog = collections.deque()  # decoded frames waiting for an in-flight slot
        self._writable = asyncio.Event()
        self._writable.set()

    def _set_state(self, new):
        assert new in _TRANSITIONS[self._state], (self._state, new)
        self._state = new

    # asyncio.Protocol callbacks.

    def connection_made(self, transport):
        self._transport = transport
        self._registry.add(self)
        # The CN of the client's certificate, when TLS verified one (--client-cert-auth).
        self._cert_user = common_name(transport.get_extra_info("peercert"))
        if self._cert_check:
            reason = self._cert_check.refusal(der_of(transport.get_extra_info("ssl_object")))
            if reason:
                log.warning("native: refused %s: %s", transport.get_extra_info("peername"),
                            reason)
                transport.close()

    def connection_lost(self, exc):
        if self._state is not ConnState.CLOSED:
            self._set_state(ConnState.CLOSED)
        self._registry.discard(self)
        for task in list(self._tasks.values()):
            task.cancel()
        self._writable.set()

    def pause_writing(self):
        self._write_paused = True
        self._writable.clear()
        self._update_reading()

    def resume_writing(self):
        self._write_paused = False
        self._writable.set()
        self._update_reading()

    def data_received(self, data):
        if self._state is ConnState.CLOSED:
            return
        try:
            frames = self._decoder.feed(data)
        except wire.WireError as exc:
            self.fail(exc)
            return
        self._backlog.extend(frames)
        self._drain_backlog()
        self._update_reading()

    def _drain_backlog(self):
        # Frames decoded from one read may exceed the in-flight bound: the rest wait here
        # (reading is paused meanwhile, so the backlog holds at most one read's frames).
        while self._backlog and self._state is not ConnState.CLOSED:
            if self._state is ConnState.OPEN and self._inflight >= self._inflight_max:
                return
            obj = self._backlog.popleft()
            if self._state is ConnState.HELLO:
                self._on_hello(obj)
            else:
                self._on_request(obj)

    def eof_received(self):
        # A client that half-closes still gets its outstanding answers, then the connection
        # closes. Bytes of an unfinished frame at EOF are a truncated frame.
        if self._state is ConnState.CLOSED:
            return False
        if self._decoder.pending:
            self.fail(wire.WireError("BAD_REQUEST", "raftkv: truncated frame at end of stream"))
            return True
        self._eof = True
        # A watch can only end by watch_cancel, which a half-closed peer can no longer send:
        # end them now so the connection does not stay open forever.
        for request_id in list(self._watches):
            self._tasks[request_id].cancel()
        if not self._tasks and not self._backlog:
            return False  # asyncio closes the transport
        return True

    # Requests.

    def _on_hello(self, obj):
        try:
            options = wire.check_hello(obj, reply=False)
            if self._worker_secret is not None:
                secret = options.get("worker_secret")
                if not isinstance(secret, str) or \
                        not hmac.compare_digest(secret, self._worker_secret):
                    raise wire.WireError("BAD_REQUEST", "raftkv: this port serves only the "
                                                        "member's own gRPC workers")
                self._trusted = True
            leaderless = options.get("leaderless", "wait")
            if leaderless not in ("wait", "fail"):
                raise wire.WireError("BAD_REQUEST", f"raftkv: hello option leaderless must be "
                                                    f"'wait' or 'fail', not {leaderless!r:.40}")
            self._fail_fast = leaderless == "fail"
        except wire.WireError as exc:
            self.fail(exc)
            return
        self._set_state(ConnState.OPEN)
        reply = [wire.PROTOCOL_MAGIC, wire.PROTOCOL_VERSION,
                 {"max_frame_bytes": self._decoder.max_frame_bytes}]
        self._transport.write(wire.frame(reply))

    def _on_request(self, obj):
        try:
            request_id, op, body, idem = wire.parse_request(obj)
            if request_id in self._tasks:
                raise wire.WireError("BAD_REQUEST", f"raftkv: request id {request_id} is "
                                                    "already in flight")
        except wire.WireError as exc:
            self.fail(exc)
            return
        try:
            wire.check_body(op, body, idem)
            if op == "watch_cancel":
                self._send_ok(request_id, self._cancel_watch(body.get("watch_id", 0)))
                return
            if op == "cancel":
                self._send_ok(request_id, self._cancel_request(body.get("cancel_id", 0)))
                return
            if op in wire.STREAM_OPS and len(self._watches) >= self._watches_max:
                raise wire.RaftkvError("TOO_MANY_REQUESTS", "raftkv: too many watches on "
                                                            "this connection")
        except wire.RaftkvError as exc:
            self._send_error(request_id, exc)
            return
        if idem is not None:
            body = dict(body, request_id=idem)
        if not self._trusted and (auth.CERT_USER_FIELD in body or self._cert_user):
            # only we (or the member's own gRPC worker) may say who signed
            body = {k: v for k, v in body.items() if k != auth.CERT_USER_FIELD}
            if self._cert_user:
                body[auth.CERT_USER_FIELD] = self._cert_user
        handle = self._start_fast(request_id, op, body)
        if handle is _ANSWERED:
            return
        if handle is None:
            handle = asyncio.get_running_loop().create_task(self._run(request_id, op, body))
            handle.add_done_callback(lambda t: self._on_done(request_id, op, t))
        self._tasks[request_id] = handle
        if op in wire.STREAM_OPS:
            self._watches.add(request_id)
        else:
            self._inflight += 1
            self._update_reading()

    def _start_fast(self, request_id, op, body):
        """A plain write through the service's start_write (when it has one): no task, and
        the response leaves as soon as the write is applied. Returns its _FastCall, None
        (take the task path) or _ANSWERED (refused at once)."""
        start = getattr(self.service, "start_write", None)
        if start is None:
            return None
        try:
            reply = start(op, body, lambda resp, exc: self._fast_done(request_id, op, resp, exc),
                          self._fail_fast)
        except Exception as exc:  # noqa: BLE001 -- answered as _run answers it
            self._send_failure(request_id, op, exc)
            return _ANSWERED
        if reply is None:
            return None
        return _FastCall(reply, lambda: self._on_done(request_id, op, None))

    def _fast_done(self, request_id, op, resp, exc):
        if exc is None:
            self._send_ok(request_id, resp)
        else:
            self._send_failure(request_id, op, exc)
        self._on_done(request_id, op, None)

    async def _run(self, request_id, op, body):
        if self._fail_fast:  # this task's own context (server/leaderless.py)
            leaderless.FAIL_FAST.set(True)
        try:
            if op == "watch":
                await self._stream(request_id, self.service.watch(body))
                return
            if op == "snapshot":
                await self._stream(request_id, self.service.snapshot(who=_identity(body)),
                                   bytes)
                return
            if op == "batch":
                result = await self._batch(body)
            elif op == "put_many":
                result = await self._put_many(body)
            else:
                result = await self.service.call(op, body)
            self._send_ok(request_id, result)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- a service bug must not take the server down
            self._send_failure(request_id, op, exc)

    def _on_done(self, request_id, op, task):
        # A done callback, not a finally: a task cancelled before its first step never runs
        # its body, yet its bookkeeping must still be undone.
        self._tasks.pop(request_id, None)
        if op in wire.STREAM_OPS:
            self._watches.discard(request_id)
            if request_id in self._canceling:
                self._canceling.discard(request_id)
                self._send(request_id, wire.STATUS_END, None)
        else:
            self._inflight -= 1
            assert self._inflight >= 0
            self._drain_backlog()
            self._update_reading()
        if (self._eof and not self._tasks and not self._backlog
                and self._state is not ConnState.CLOSED):
            self._transport.close()

    async def _batch(self, body):
        items = wire.batch_items(body)
        if hasattr(self.service, "batch"):  # the member: few Raft proposals for many writes
            results = await self.service.batch(items, rid=body.get("request_id"),
                                               who=_identity(body))
            return {"responses": [{"error": r.to_wire()} if isinstance(r, wire.RaftkvError)
                                  else {"response_" + op: r}
                                  for (op, _), r in zip(items, results)]}
        who = _identity(body)
        results = await asyncio.gather(
            *(self.service.call(op, dict(item, **who)) for op, item in items),
            return_exceptions=True)
        responses = []
        for (op, _), res in zip(items, results):
            if isinstance(res, wire.RaftkvError):
                responses.append({"error": res.to_wire()})
            elif isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                log.error("native: batch %s failed", op, exc_info=res)
                responses.append({"error": wire.RaftkvError("INTERNAL").to_wire()})
            else:
                responses.append({"response_" + op: res})
        return {"responses": responses}

    async def _put_many(self, body):
        kvs = wire.put_many_kvs(body)
        if hasattr(self.service, "put_many"):  # the member: few "puts" entries, one count
            done, errors = await self.service.put_many(kvs, rid=body.get("request_id"),
                                                       who=_identity(body))
        else:
            who = _identity(body)
            results = await asyncio.gather(
                *(self.service.call("put", {"key": kvs[i], "value": kvs[i + 1], **who})
                  for i in range(0, len(kvs), 2)), return_exceptions=True)
            done, errors = 0, []
            for i, res in enumerate(results):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                if not isinstance(res, BaseException):
                    done += 1
                    continue
                if not isinstance(res, wire.RaftkvError):
                    log.error("native: put_many put failed", exc_info=res)
                    res = wire.RaftkvError("INTERNAL")
                errors.append((i, res))
        return {"done": done, "errors": [[i, exc.to_wire()] for i, exc in errors]}

    async def _stream(self, request_id, stream, convert=None):
        """ITEM frames of a service stream (a watch, a snapshot's chunks), then END."""
        try:
            async for item in stream:
                self._send(request_id, wire.STATUS_ITEM, item if convert is None
                           else convert(item))
                if self._write_paused:
                    await self._writable.wait()
            self._send(request_id, wire.STATUS_END, None)
        except asyncio.CancelledError:
            if request_id not in self._canceling:
                raise
            # Cancelled by watch_cancel: _on_done sends the END frame.
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    def _cancel_watch(self, watch_id):
        task = self._tasks.get(watch_id)
        if task is None or watch_id not in self._watches:
            return {"canceled": False}
        self._canceling.add(watch_id)
        task.cancel()
        return {"canceled": True}

    def _cancel_request(self, target):
        """The client gave up on its unary request `target`: the request's task (or
        task-free write) is cancelled and never answered. A write its member still holds
        for a leader is then never proposed (RaftLoop.propose)."""
        handle = self._tasks.get(target)
        if handle is None or target in self._watches:
            return {"canceled": False}
        handle.cancel()
        return {"canceled": True}

    # Output.

    def _send(self, request_id, status, payload):
        if self._state is ConnState.CLOSED:
            return
        try:
            data = wire.frame([request_id, status, payload])
        except wire.RaftkvError as exc:
            data = wire.frame([request_id, wire.STATUS_ERROR, exc.to_wire()])
        except (TypeError, ValueError, OverflowError):
            log.exception("native: cannot encode the response to request %d", request_id)
            err = wire.RaftkvError("INTERNAL", "raftkv: response not encodable")
            data = wire.frame([request_id, wire.STATUS_ERROR, err.to_wire()])
        self._transport.write(data)

    def _send_ok(self, request_id, result):
        self._send(request_id, wire.STATUS_OK, result)

    def _send_error(self, request_id, exc):
        self._send(request_id, wire.STATUS_ERROR, exc.to_wire())

    def _send_failure(self, request_id, op, exc):
        """A request's error answer: its own code for a RaftkvError; anything else is a bug in
        the service, logged and answered INTERNAL."""
        if isinstance(exc, wire.RaftkvError):
            self._send_error(request_id, exc)
            return
        log.error("native: %s failed with an unexpected exception", op, exc_info=exc)
        self._send_error(request_id, wire.RaftkvError("INTERNAL"))

    def fail(self, exc):
        """Send one connection error frame and close this connection (and only this one)."""
        self._send(wire.CONNECTION_REQUEST_ID, wire.STATUS_ERROR, exc.to_wire())
        if self._state is not ConnState.CLOSED:
            self._set_state(ConnState.CLOSED)
        self._transport.close()  # flushes the error frame first
        for task in list(self._tasks.values()):
            task.cancel()

    def _update_reading(self):
        if self._state is ConnState.CLOSED:
            return
        want_pause = (self._write_paused or self._inflight >= self._inflight_max
                      or bool(self._backlog))
        if want_pause and not self._reading_paused:
            self._transport.pause_reading()
            self._reading_paused = True
        elif not want_pause and self._reading_paused:
            self._transport.resume_reading()
            self._reading_paused = False


class NativeServer:
    """The listening server plus its open connections; close() ends both."""

    def __init__(self, server, connections, unix_path=None):
        self._server = server
        self.connections = connections  # set of NativeConnection
        self.unix_path = unix_path  # a Unix socket's file, removed on close

    @property
    def sockets(self):
        return self._server.sockets

    def close(self):
        self._server.close()
        for conn in list(self.connections):
            conn._transport.close()
        if self.unix_path:
            unlink_unix_socket(self.unix_path)

    async def wait_closed(self):
        await self._server.wait_closed()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        await self.wait_closed()


async def start_native_server(service, host, port, *, max_frame_bytes=wire.FRAME_BYTES_MAX,
                              inflight_max=INFLIGHT_MAX, watches_max=WATCHES_MAX, ssl=None,
                              worker_secret=None, unix_path=None, cert_check=None):
    """Listen on host:port (0: any free port), or on the Unix socket unix_path instead;
    returns (server, bound_port) (0 for a Unix socket). ssl: a server SSLContext
    (raftkv.tls.server_context) to serve TLS only. worker_secret: the port is the member's
    own, for its gRPC workers (each hello must carry the secret). cert_check: a
    raftkv.tls.CertCheck for the client certificates of TLS connections."""
    assert max_frame_bytes > 0
    assert inflight_max > 0
    connections = set()
    loop = asyncio.get_running_loop()

    def factory():
        return NativeConnection(service, connections, max_frame_bytes=max_frame_bytes,
                                inflight_max=inflight_max, watches_max=watches_max,
                                worker_secret=worker_secret, cert_check=cert_check)
    if unix_path:
        unix_socket_path_free(unix_path)
        server = await loop.create_unix_server(factory, unix_path, ssl=ssl)
        log.info("native: listening on unix:%s%s", unix_path, " (TLS)" if ssl else "")
        return NativeServer(server, connections, unix_path), 0
    server = await loop.create_server(factory, host, port, ssl=ssl)
    bound_port = server.sockets[0].getsockname()[1]
    log.info("native: listening on %s:%d%s", host, bound_port, " (TLS)" if ssl else "")
    return NativeServer(server, connections), bound_port


def unlink_unix_socket(path):
    """Remove a Unix socket listener's file when it stops (gone already: fine)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def unix_socket_path_free(path):
    """Make room for a Unix socket listener at path: a socket file left by an earlier run is
    removed (as etcd does); anything else there stops the start (OSError), since it is not
    ours to delete."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"cannot listen on unix:{path}: the file exists and is not a socket")
    os.unlink(path)
