"""gRPC and HTTP/1.1 on the same client URLs, as etcd 3.4 serves them (its cmux).

The member owns each --listen-client-urls socket. For every connection it accepts it peeks (no
byte consumed) at what the client sent first, and hands the connection on whole:

* plaintext: HTTP/2's client preface (`PRI * HTTP/2.0...`) goes to gRPC; a request line that
  starts with an HTTP/1.x method goes to HTTP; anything else is closed (on an unknown
  protocol no error can be said);
* TLS (https://, unixs://): the ClientHello's ALPN decides. A client that offers `http/1.1`
  (curl, browsers, Go's and Python's HTTP clients), or no ALPN at all, goes to HTTP; one that
  offers only `h2` / `grpc-exp` (grpc-go's etcdctl and clientv3, grpcio) goes to gRPC. TLS stays
  end to end with the side that terminates it: grpc's credentials, or the HTTP server's
  SSLContext, so client certificates are checked as on a dedicated listener.

HTTP connections are given to the member's JSON gateway (raftkv/api/gateway.py: /v3/*, /health,
/version, /metrics) in this process (`loop.connect_accepted_socket`). gRPC connections are
joined to a connection to the member's grpc.aio server on an internal Unix socket, and the
byte relay (raftkv/api/relay.py: a C pthread with its own epoll loop) copies between them, so
the member's event loop does nothing per gRPC request. grpc.aio therefore sees the internal
socket as each call's peer (`context.peer()`); raftkv's gRPC code does not use the peer.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time

from raftkv.tls import cert_checked

log = logging.getLogger("raftkv.mux")

GRPC, HTTP, MORE, GARBAGE = "grpc", "http", "more", "garbage"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Methods an HTTP/1.x request may start with (as cmux's HTTP1Fast matcher: by method).
METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT",
           b"TRACE")
_METHOD_TOKENS = tuple(m + b" " for m in METHODS)
TLS_RECORD_BYTES_MAX = 5 + 16384 + 2048  # a record's header and its largest body (RFC 8446)
PEEK_BYTES = TLS_RECORD_BYTES_MAX
# A client says what it speaks at once (gRPC's preface, an HTTP request, a ClientHello): one
# that has not after this long is closed, as the HTTP server closes an idle request.
CLASSIFY_TIMEOUT_S = 10.0
# While a partial first message trickles in, peek again after this long (MSG_PEEK leaves the
# bytes queued, so waiting for "readable" again would wake at once).
PARTIAL_RETRY_S = 0.005
PENDING_MAX = 1024  # connections accepted and not yet classified; more are closed at once
ACCEPT_BATCH = 64  # connections accepted per wake-up of a listener
ACCEPT_PAUSE_S = 0.1  # a listener rests this long after accept fails for want of fds
BACKEND_CONNECT_TRIES = 50  # the internal socket's backlog full: retries, PARTIAL_RETRY_S apart
UNIX_PATH_BYTES_MAX = 107  # sun_path holds 108 bytes with the NUL


def classify_plain(data):
    """GRPC, HTTP, MORE (a prefix of either: peek again) or GARBAGE for the first bytes of a
    plaintext connection."""
    if data.startswith(PREFACE):
        return GRPC
    if PREFACE.startswith(data):
        return MORE
    for token in _METHOD_TOKENS:
        if data.startswith(token):
            return HTTP
        if token.startswith(data):
            return MORE
    return GARBAGE


def classify_tls(data):
    """GRPC, HTTP, MORE or GARBAGE for the first bytes of a TLS connection (its ClientHello):
    HTTP when the client offers http/1.1 or no ALPN; GRPC when it offers only h2 and/or
    grpc-exp (other protocols it offers besides are ignored)."""
    status, alpn = client_hello_alpn(data)
    if status != HTTP:
        return status
    if not alpn or b"http/1.1" in alpn:
        return HTTP
    return GRPC if {b"h2", b"grpc-exp"} & set(alpn) else HTTP


def client_hello_alpn(data):
    """(HTTP, [protocols offered by ALPN]) for a TLS ClientHello in its first record; (MORE,
    None) while the record is incomplete; (GARBAGE, None) for anything else. A ClientHello
    longer than its first record (rare: TLS allows splitting it) is read as far as the record
    goes; an ALPN extension beyond it is not seen (HTTP)."""
    if len(data) < 5:
        return (MORE, None) if all(a == b for a, b in zip(data, b"\x16\x03")) else (GARBAGE, None)
    if data[0] != 0x16 or data[1] != 3:  # handshake record, TLS 1.x
        return GARBAGE, None
    body_bytes = int.from_bytes(data[3:5], "big")
    if body_bytes == 0 or body_bytes + 5 > TLS_RECORD_BYTES_MAX:
        return GARBAGE, None
    if len(data) < 5 + body_bytes:
        return MORE, None
    body = data[5:5 + body_bytes]
    if len(body) < 4 or body[0] != 1:  # ClientHello
        return GARBAGE, None
    hello = body[4:4 + int.from_bytes(body[1:4], "big")]
    return HTTP, _alpn_of(hello)


def _alpn_of(hello):
    """The ALPN protocols in a ClientHello's body (as far as it goes), [] without the
    extension."""
    at = 2 + 32  # client_version, random
    for length_bytes in (1, 2, 1):  # session_id, cipher_suites, compression_methods
        if at + length_bytes > len(hello):
            return []
        at += length_bytes + int.from_bytes(hello[at:at + length_bytes], "big")
    end = min(len(hello), at + 2 + int.from_bytes(hello[at:at + 2], "big"))
    at += 2
    while at + 4 <= end:
        ext_type = int.from_bytes(hello[at:at + 2], "big")
        ext_bytes = int.from_bytes(hello[at + 2:at + 4], "big")
        ext = hello[at + 4:at + 4 + ext_bytes]
        at += 4 + ext_bytes
        if ext_type == 16:  # application_layer_protocol_negotiation (RFC 7301)
            out, i = [], 2
            while i < len(ext):
                n = ext[i]
                out.append(bytes(ext[i + 1:i + 1 + n]))
                i += 1 + n
            return out
    return []


def backend_addresses(data_dir, tls):
    """(grpc's bind address, the relay's connect address) for the member's internal gRPC
    socket of plain (tls False) or TLS client URLs: a Unix socket in the data dir (private
    to the member's user, as the data dir is), or an abstract Unix socket when that path is
    too long for sun_path."""
    name = "grpc-tls.sock" if tls else "grpc.sock"
    path = os.path.abspath(os.path.join(data_dir, name))
    if len(os.fsencode(path)) <= UNIX_PATH_BYTES_MAX:
        return f"unix:{path}", path
    abstract = f"raftkv-{os.getpid()}-{os.urandom(6).hex()}-{name}"
    return f"unix-abstract:{abstract}", "\0" + abstract


class _Pending:
    """An accepted connection whose protocol is not known yet."""

    __slots__ = ("sock", "tls", "listener", "timer", "reading", "retry")

    def __init__(self, sock, tls, listener):
        self.sock = sock
        self.tls = tls
        self.listener = listener
        self.timer = None  # the CLASSIFY_TIMEOUT_S deadline
        self.reading = False  # an add_reader is registered for sock
        self.retry = None  # a PARTIAL_RETRY_S handle


class ClientMux:
    """The client URLs' listeners: each accepted connection goes to gRPC (relayed to
    grpc_targets[tls], an address for socket.connect on an AF_UNIX socket) or to HTTP
    (http_factory: an asyncio protocol factory, with ssl for TLS ones; cert_check: a
    raftkv.tls.CertCheck for TLS HTTP clients' certificates, as gRPC's interceptor and the
    native listener check them)."""

    def __init__(self, *, relay, grpc_targets, http_factory, ssl=None, cert_check=None):
        self.relay = relay
        self.grpc_targets = grpc_targets
        self.http_factory = http_factory
        self.ssl = ssl
        self.cert_check = cert_check
        self.loop = asyncio.get_running_loop()
        self.listeners = []  # (socket, ListenURL)
        self.pending = {}  # fd -> _Pending
        self.tasks = set()  # hand-offs in progress
        self.counts = {GRPC: 0, HTTP: 0, GARBAGE: 0, "timeout": 0, "refused": 0}
        self.closed = False
        self._fd_warned_at = 0.0

    def listen(self, u):
        """Start accepting on one ListenURL (TCP or a Unix socket, as grpc served it); returns
        its bound port (0 for a Unix socket)."""
        from raftkv.api.native import unix_socket_path_free

        if u.unix:
            unix_socket_path_free(u.path)
            socks = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)]
            socks[0].bind(u.path)
        else:
            socks = _tcp_listeners(u.host, u.port)
        for s in socks:
            s.listen(socket.SOMAXCONN)
            s.setblocking(False)
            self.listeners.append((s, u))
            self.loop.add_reader(s.fileno(), self._on_accept, s, u)
        return 0 if u.unix else socks[0].getsockname()[1]

    def _on_accept(self, lsock, u):
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno == errno.ECONNABORTED:
                    continue
                self._rest(lsock, u, exc)  # EMFILE, ENFILE, ENOBUFS: let some close first
                return
            conn.setblocking(False)
            if len(self.pending) >= PENDING_MAX:
                self.counts["refused"] += 1
                conn.close()
                continue
            p = _Pending(conn, u.tls, u)
            self.pending[conn.fileno()] = p
            p.timer = self.loop.call_later(CLASSIFY_TIMEOUT_S, self._expire, p)
            self._classify(p)

    def _rest(self, lsock, u, exc):
        now = time.monotonic()
        if now - self._fd_warned_at > 60:
            self._fd_warned_at = now
            log.warning("client port %s: accept failed (%s); pausing it %.1fs", u.describe(),
                        exc, ACCEPT_PAUSE_S)
        self.loop.remove_reader(lsock.fileno())

        def resume():
            if not self.closed:
                self.loop.add_reader(lsock.fileno(), self._on_accept, lsock, u)
        self.loop.call_later(ACCEPT_PAUSE_S, resume)

    def _classify(self, p):
        p.retry = None
        try:
            data = p.sock.recv(PEEK_BYTES, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            data = None
        except OSError:
            self._drop(p, None)
            return
        if data == b"":  # closed before saying anything
            self._drop(p, None)
            return
        kind = MORE if data is None else (classify_tls if p.tls else classify_plain)(data)
        if kind == MORE:
            if data is None:
                if not p.reading:
                    p.reading = True
                    self.loop.add_reader(p.sock.fileno(), self._classify, p)
                return
            self._unwatch(p)  # part of a first message: look again in a moment
            p.retry = self.loop.call_later(PARTIAL_RETRY_S, self._classify, p)
            return
        self._forget(p)
        self.counts[kind] += 1
        if kind == GARBAGE:
            log.debug("client port %s: closed a connection that speaks neither HTTP/1.x nor "
                      "HTTP/2 (%r)", p.listener.describe(), data[:16])
            _discard(p.sock, len(data))  # what was read is not reset, the client sees EOF
            p.sock.close()
        elif kind == GRPC:
            self._to_grpc(p.sock, p.tls)
        else:
            self._spawn(self._to_http(p.sock, p.tls))

    def _unwatch(self, p):
        if p.reading:
            p.reading = False
            self.loop.remove_reader(p.sock.fileno())

    def _forget(self, p):
        """p is classified (or given up): no timer, reader or retry left; not pending."""
        self._unwatch(p)
        for handle in (p.timer, p.retry):
            if handle is not None:
                handle.cancel()
        p.timer = p.retry = None
        self.pending.pop(p.sock.fileno(), None)

    def _drop(self, p, counter):
        self._forget(p)
        if counter:
            self.counts[counter] += 1
        p.sock.close()

    def _expire(self, p):
        p.timer = None
        log.debug("client port %s: closed a connection silent for %.0fs", p.listener.describe(),
                  CLASSIFY_TIMEOUT_S)
        self._drop(p, "timeout")

    def _spawn(self, coro):
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _to_grpc(self, conn, tls, tries=0):
        """Join conn to a new connection to the internal gRPC socket, in the relay."""
        target = self.grpc_targets[tls]
        backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        backend.setblocking(False)
        try:
            backend.connect(target)
        except (BlockingIOError, InterruptedError):  # its backlog is full: try again soon
            backend.close()
            if tries < BACKEND_CONNECT_TRIES and not self.closed:
                self.loop.call_later(PARTIAL_RETRY_S, self._to_grpc, conn, tls, tries + 1)
                return
            log.warning("client port: the member's gRPC server accepts no connection; closed "
                        "a client's")
            conn.close()
            return
        except OSError as exc:
            backend.close()
            conn.close()
            log.warning("client port: cannot reach the member's gRPC server: %s", exc)
            return
        try:
            self.relay.add(conn.detach(), backend.detach())
        except OSError as exc:  # the relay closed both
            log.debug("client port: relay refused a connection: %s", exc)

    async def _to_http(self, conn, tls):
        factory = self.http_factory
        if tls:
            factory = cert_checked(factory, self.cert_check, "client port")
        try:
            await self.loop.connect_accepted_socket(factory, conn,
                                                    ssl=self.ssl if tls else None)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:  # a failed TLS handshake...
            log.debug("client port: HTTP connection failed: %r", exc)
            conn.close()

    async def close(self):
        """Stop accepting and close the connections not yet handed on (those handed on are
        closed by their servers and the relay)."""
        self.closed = True
        for s, u in self.listeners:
            self.loop.remove_reader(s.fileno())
            s.close()
        self.listeners = []
        for p in list(self.pending.values()):
            self._drop(p, None)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


def _discard(sock, nbytes):
    try:
        sock.recv(nbytes)
    except OSError:
        pass


def _tcp_listeners(host, port):
    """Bound TCP sockets for host:port, one per address the host has (as asyncio's and grpc's
    servers bind every address of a name); port 0: the OS picks one, the same for all."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks, seen = [], set()
    try:
        for family, kind, proto, _, addr in infos:
            if (family, addr[0]) in seen:
                continue
            seen.add((family, addr[0]))
            s = socket.socket(family, kind, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            s.bind(addr)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks
