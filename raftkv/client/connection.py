"""One client connection to one member: the native protocol's client side.

`ClientConnection` is the asyncio.Protocol: it moves bytes, resolves one future per unary
request and feeds one queue per stream (watch). It has an explicit state (CONNECTING ->
OPEN -> CLOSED); when it closes, every pending request fails with ConnectionLost and every
stream receives a final ERROR item, so no caller waits forever.

connect_endpoint() dials an Endpoint (raftkv.client.endpoints), TCP or a Unix socket; connect()
is its TCP-only form. TLS (ssl_context=ctx) changes only how the connection is opened. A
failure that a retry would not fix raises TLSHandshakeError: the member's certificate did not
verify, the member does not speak TLS, or it closed the connection between the handshake and
its hello.
The last is how a member refuses a client certificate (or the lack of one): with TLS 1.3 the
client's side of the handshake is over before the member checks the certificate, and Python's
TLS servers (asyncio's and uvloop's) close without sending the alert that would say why.
"""
from __future__ import annotations

import asyncio
import enum
import re
import ssl

from raftkv.api import wire
from raftkv.client.endpoints import Endpoint
from raftkv.client.errors import ConnectionLost, TLSHandshakeError

# SSLErrors that mean the transport went away (a member stopping, a reset), not that TLS refused.
_SSL_TRANSPORT_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)
_SSL_SOURCE_LINE = re.compile(r"\s*\(_ssl\.c:\d+\)$")  # "(_ssl.c:1006)" ends OpenSSL messages


class ClientState(enum.Enum):
    CONNECTING = "connecting"  # TCP up, hello sent, no reply yet
    OPEN = "open"  # hello answered: requests may be sent
    CLOSED = "closed"  # lost or closed: everything pending has been failed


_TRANSITIONS = {
    ClientState.CONNECTING: {ClientState.OPEN, ClientState.CLOSED},
    ClientState.OPEN: {ClientState.CLOSED},
    ClientState.CLOSED: set(),
}


class ClientConnection(asyncio.Protocol):
    def __init__(self, endpoint, tls=False, hello_options=None):
        self.endpoint = endpoint
        self._hello_options = hello_options
        self.tls = tls  # the transport is TLS (for naming why a connection failed)
        self.state = ClientState.CONNECTING
        self.max_frame_bytes = wire.FRAME_BYTES_MAX  # the server's limit, from its hello
        self._decoder = wire.FrameDecoder(wire.RESPONSE_FRAME_BYTES_MAX)
        self._transport = None
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()  # hello answered (or the connection failed)
        self._pending = {}  # request id -> future of the response payload
        self._streams = {}  # request id -> asyncio.Queue of (status, payload)
        self._next_id = 1  # request ids start at 1 (0 is the connection's own id)
        self.close_reason = None  # the exception the connection closed with, if any

    def _set_state(self, new):
        assert new in _TRANSITIONS[self.state], (self.state, new)
        self.state = new

    @property
    def is_open(self):
        return self.state is ClientState.OPEN

    @property
    def idle(self):
        """No request waits for an answer and no stream is open on this connection."""
        return not self._pending and not self._streams

    # asyncio.Protocol callbacks.

    def connection_made(self, transport):
        self._transport = transport
        transport.write(wire.frame(wire.hello(self._hello_options)))

    def connection_lost(self, exc):
        if self.state is ClientState.CONNECTING:
            self._close(_lost_before_hello(self.endpoint, self.tls, exc))
            return
        self._close(ConnectionLost(f"connection to {self.endpoint} lost"
                                   + (f": {exc}" if exc else "")))

    def data_received(self, data):
        try:
            frames = self._decoder.feed(data)
            for obj in frames:
                self._on_frame(obj)
        except wire.RaftkvError as exc:
            self._close(exc)

    def _on_frame(self, obj):
        if self.state is ClientState.CONNECTING:
            if isinstance(obj, list) and len(obj) == 3 and obj[0] == wire.CONNECTION_REQUEST_ID:
                raise wire.RaftkvError.from_wire(obj[2])
            info = wire.check_hello(obj, reply=True)
            self.max_frame_bytes = int(info.get("max_frame_bytes", self.max_frame_bytes))
            self._set_state(ClientState.OPEN)
            self._ready.set_result(None)
            return
        if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[0], int)):
            raise wire.WireError("BAD_REQUEST", "raftkv: malformed response envelope")
        request_id, status, payload = obj
        if request_id == wire.CONNECTION_REQUEST_ID:
            raise wire.RaftkvError.from_wire(payload)
        queue = self._streams.get(request_id)
        if queue is not None:
            if status in (wire.STATUS_END, wire.STATUS_ERROR, wire.STATUS_OK):
                del self._streams[request_id]
            queue.put_nowait((status, payload))
            return
        fut = self._pending.pop(request_id, None)
        if fut is None or fut.done():
            return  # the caller gave up (timeout); the late answer is dropped
        if status == wire.STATUS_OK:
            fut.set_result(payload)
        else:
            fut.set_exception(wire.RaftkvError.from_wire(payload))

    def _close(self, exc):
        if self.state is ClientState.CLOSED:
            return
        self._set_state(ClientState.CLOSED)
        self.close_reason = exc
        if not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: nobody may be waiting any more
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        err = exc.to_wire() if isinstance(exc, wire.RaftkvError) else None
        for queue in self._streams.values():
            queue.put_nowait((wire.STATUS_ERROR, err))
        self._streams.clear()
        if self._transport is not None:
            self._transport.close()

    # Requests.

    async def wait_ready(self):
        await self._ready

    def _send(self, op, body, idem):
        if self.state is not ClientState.OPEN:
            raise self.close_reason or ConnectionLost(f"connection to {self.endpoint} closed")
        request_id = self._next_id
        self._next_id += 1
        data = wire.frame(wire.request(request_id, op, body, idem), self.max_frame_bytes)
        self._transport.write(data)
        return request_id

    async def request(self, op, body, idem=None, timeout=None, cancel=False):
        """The response dict of one unary request; raises RaftkvError, ConnectionLost or
        asyncio.TimeoutError (after `timeout` seconds; a late answer is then dropped).
        cancel: if the caller is cancelled meanwhile, tell the server to give the request up
        too (a "cancel" frame: raftkv/api/wire.py; a server of this version knows it)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        request_id = self._send(op, body, idem)
        self._pending[request_id] = fut
        # A timer on the future, not asyncio.wait_for: wait_for costs a task per request.
        timer = None if timeout is None else loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if cancel and self.state is ClientState.OPEN:
                self._send("cancel", {"cancel_id": request_id}, None)  # its answer dropped
            raise
        finally:
            self._pending.pop(request_id, None)
            if timer is not None:
                timer.cancel()

    def send_nowait(self, op, body):
        """Send a request whose answer nobody waits for (it is dropped when it comes)."""
        if self.state is ClientState.OPEN:
            self._send(op, body, None)

    def open_stream(self, op, body):
        """(request id, queue of (status, payload)) for a streamed request such as a watch."""
        queue = asyncio.Queue()
        request_id = self._send(op, body, None)
        self._streams[request_id] = queue
        return request_id, queue

    def close_stream(self, request_id):
        self._streams.pop(request_id, None)

    def close(self):
        self._close(ConnectionLost(f"connection to {self.endpoint} closed by the client"))


def _expire(fut):
    if not fut.done():
        fut.set_exception(asyncio.TimeoutError())


def _tls_refused(exc):
    """exc is TLS itself failing (a certificate, an alert, not TLS at all), not the transport."""
    return isinstance(exc, ssl.SSLError) and not isinstance(exc, _SSL_TRANSPORT_ERRORS)


def _tls_error(endpoint, exc):
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = f"certificate verify failed: {exc.verify_message}"
    else:
        why = _SSL_SOURCE_LINE.sub("", exc.strerror or str(exc))
        if exc.reason == "WRONG_VERSION_NUMBER":
            why += " (the port does not speak TLS?)"
    return TLSHandshakeError(f"TLS handshake with {endpoint} failed: {why}")


def _lost_before_hello(endpoint, tls, exc):
    """The error for a connection closed before the member answered its hello."""
    if tls and _tls_refused(exc):
        return _tls_error(endpoint, exc)
    if tls and (exc is None or isinstance(exc, (ConnectionResetError, ssl.SSLEOFError))):
        return TLSHandshakeError(
            f"TLS handshake with {endpoint} failed: the member closed the connection right "
            "after the handshake, before its hello; most likely it requires a client "
            "certificate signed by a CA it trusts, and none was given or ours is not")
    hint = "" if tls or exc else " (if it serves TLS only, connect with TLS)"
    return ConnectionLost(f"connection to {endpoint} lost before the hello was answered"
                          + (f": {exc}" if exc else hint))


async def connect(host, port, timeout, ssl_context=None, hello_options=None):
    """An OPEN ClientConnection to host:port; see connect_endpoint."""
    return await connect_endpoint(Endpoint(f"{host}:{port}", "", host, port), timeout,
                                  ssl_context, hello_options)


async def connect_endpoint(ep, timeout, ssl_context=None, hello_options=None, server_name=None):
    """An OPEN ClientConnection to the Endpoint ep (TCP or a Unix socket), or an exception
    (OSError, TimeoutError, ...).

    With ssl_context (a client SSLContext, raftkv.tls.client_context) the connection is TLS
    and the member's certificate must name ep.server_name(server_name): the host dialled, or for
    a Unix socket the name endpoints.py explains. TLSHandshakeError means a retry would not help.
    """
    loop = asyncio.get_running_loop()
    endpoint = ep.name
    tls = ssl_context is not None
    hostname = ep.server_name(server_name) if tls else None

    def factory():
        return ClientConnection(endpoint, tls, hello_options)

    async def _open():
        try:
            if ep.unix:
                _, conn = await loop.create_unix_connection(
                    factory, ep.path, ssl=ssl_context, server_hostname=hostname)
            else:
                _, conn = await loop.create_connection(
                    factory, ep.host, ep.port, ssl=ssl_context, server_hostname=hostname)
        except ssl.SSLError as exc:
            if _tls_refused(exc):
                raise _tls_error(endpoint, exc) from exc
            raise
        try:
            await conn.wait_ready()
        except BaseException:
            conn.close()
            raise
        return conn

    return await asyncio.wait_for(_open(), timeout)
