"""`--grpc-workers N`: the etcd gRPC front end in N child processes (prototype, off by default).

Each worker is `python -m raftkv.api.etcd.workers ...`: a grpc.aio server with every etcd
service (KV, Watch, Lease, Cluster, Maintenance, Auth, Lock, Election, Health) on the member's
client port, which the workers share with SO_REUSEPORT (the kernel spreads incoming
connections over them). Their servicers are the member's own (raftkv/api/etcd/*), given a
RemoteService instead of the Service: the same contract (call / watch / snapshot) carried over
one pipelined native-protocol connection to the member's native port on loopback. Every RPC
therefore behaves as when the member serves gRPC itself (same conversion, same errors, same
headers); it costs one more hop (msgpack encode/decode on both sides and a loopback round
trip).

The member (raftkv/api/serve.py) reserves the client port first with a bound, non-listening
SO_REUSEPORT socket (a port held by another program without SO_REUSEPORT fails the start, as
it would without workers; port 0 picks a free one), starts the workers, waits until each has
said "ready" on its stdout, restarts a worker that dies, and stops them by PID (SIGTERM, then
SIGKILL) when it stops. A worker exits when its parent is gone.

Why: Python's gRPC server costs ~350 us of CPU per unary RPC on the 2-core benchmark machine
(bench/grpc_floor.py), on the member's one event-loop thread; workers move that cost to other
processes so that a member can use more than one core for its gRPC front end. See
bench/README.md for what it does (and does not) buy on 2 cores.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from raftkv.api import wire
from raftkv.client.connection import connect as native_connect
from raftkv.client.errors import ConnectionLost

log = logging.getLogger("raftkv.grpc_worker")

READY_LINE = b"ready\n"
WORKER_READY_TIMEOUT_S = 30.0
WORKER_STOP_GRACE_S = 5.0
RESTART_BACKOFF_S = 1.0
CONNECT_TIMEOUT_S = 5.0
CALL_SLACK_S = 1.0  # beyond the member's own request timeout before the worker gives up
SECRET_ENV = "RAFTKV_GRPC_WORKER_SECRET"  # the member's native port for workers asks for it
STREAMS_PER_CONNECTION = 512  # below the native server's WATCHES_MAX (1024) per connection


class RemoteService:
    """The Service contract (call, watch, snapshot) over a native connection to the member."""

    def __init__(self, host, port, timeout_s, secret=None):
        self.host, self.port = host, port
        self.timeout_s = timeout_s
        self._hello = {"worker_secret": secret} if secret else None
        self._conn = None
        self._lock = asyncio.Lock()
        self._stream_conns = {}  # native connection -> streams open on it (watches, snapshots)

    async def _open(self):
        try:
            return await native_connect(self.host, self.port, CONNECT_TIMEOUT_S,
                                        hello_options=self._hello)
        except (OSError, asyncio.TimeoutError) as exc:
            raise wire.RaftkvError("STOPPED", "etcdserver: server stopped "
                                              f"(grpc worker: {exc})") from None

    async def _connection(self):
        """The connection unary calls share (pipelined)."""
        conn = self._conn
        if conn is not None and conn.is_open:
            return conn
        async with self._lock:
            if self._conn is None or not self._conn.is_open:
                self._conn = await self._open()
            return self._conn

    async def _stream_connection(self):
        """A connection with room for one more stream: the member allows WATCHES_MAX streams
        per native connection, and a worker may carry many more watches than that."""
        async with self._lock:
            for conn, n in list(self._stream_conns.items()):
                if not conn.is_open:
                    del self._stream_conns[conn]
                elif n < STREAMS_PER_CONNECTION:
                    self._stream_conns[conn] = n + 1
                    return conn
            conn = await self._open()
            self._stream_conns[conn] = 1
            return conn

    def _stream_done(self, conn):
        n = self._stream_conns.get(conn)
        if n is None:
            return
        if n <= 1 and len(self._stream_conns) > 1:
            del self._stream_conns[conn]  # keep one idle stream connection, not more
            conn.close()
        else:
            self._stream_conns[conn] = max(0, n - 1)

    async def call(self, op, body):
        conn = await self._connection()
        try:
            # cancel: an RPC ended by its deadline or its client must not leave the member
            # holding its write for a leader (to propose it later), as in-process it would not
            return await conn.request(op, body, None, self.timeout_s + CALL_SLACK_S,
                                      cancel=True)
        except asyncio.TimeoutError:
            raise wire.RaftkvError("TIMEOUT") from None
        except (ConnectionLost, OSError):
            # The write may or may not have been applied: etcd's own answer to that.
            raise wire.RaftkvError("TIMEOUT_DUE_TO_CONNECTION_LOST") from None

    async def _stream(self, op, body):
        conn = await self._stream_connection()
        try:
            request_id, queue = conn.open_stream(op, body)
        except (ConnectionLost, OSError):
            self._stream_done(conn)
            raise wire.RaftkvError("STOPPED") from None
        ended = False
        try:
            while True:
                status, payload = await queue.get()
                if status == wire.STATUS_ITEM:
                    yield payload
                    continue
                ended = True
                if status == wire.STATUS_END and payload is None:
                    return
                if payload:
                    raise wire.RaftkvError.from_wire(payload)
                raise wire.RaftkvError("STOPPED")
        finally:
            conn.close_stream(request_id)
            if not ended and conn.is_open:
                conn.send_nowait("watch_cancel", {"watch_id": request_id})
            self._stream_done(conn)

    def watch(self, body):
        return self._stream("watch", body)

    def snapshot(self, who=None):
        return self._stream("snapshot", dict(who or {}))


def reserve_port(host, port):
    """A bound (not listening) SO_REUSEPORT socket on host:port; returns (socket, port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock, sock.getsockname()[1]


class WorkerPool:
    """The member's side: start, supervise and stop the worker processes."""

    def __init__(self, count, listen, native_host, native_port, *, max_request_bytes,
                 request_timeout, log_level="info", secret=None, tls_files=None,
                 limits=None):
        assert listen, "the workers need a client URL to serve"
        self.count = count
        # The TCP client URLs every worker serves, with the ports the member reserved
        # ("https://127.0.0.1:2379"): https:// ones with tls_files.
        self.listen = list(listen)
        self.native_host, self.native_port = native_host, native_port
        self.max_request_bytes = max_request_bytes
        self.request_timeout = request_timeout
        self.log_level = log_level
        self.secret = secret  # the hello secret of the member's native port for workers
        # {cert_file, key_file, trusted_ca_file, client_cert_auth, crl_file, allowed_hostname}
        self.tls_files = tls_files
        self.limits = limits  # a GrpcLimits (None: etcd's defaults), passed on as JSON
        self.procs = [None] * count
        self._supervisors = []
        self._stopping = False

    def _command(self, index):
        return [sys.executable, "-m", "raftkv.api.etcd.workers",
                "--index", str(index),
                *(arg for url in self.listen for arg in ("--listen", url)),
                "--native", f"{self.native_host}:{self.native_port}",
                "--max-request-bytes", str(self.max_request_bytes),
                "--request-timeout", str(self.request_timeout),
                "--parent-pid", str(os.getpid()), "--log-level", self.log_level,
                *self._tls_args(),
                *(["--grpc-limits", self.limits.to_json()] if self.limits else [])]

    def _tls_args(self):
        t = self.tls_files
        if not t:
            return []
        args = ["--cert-file", t["cert_file"], "--key-file", t["key_file"]]
        if t.get("client_cert_auth"):
            args += ["--trusted-ca-file", t["trusted_ca_file"], "--client-cert-auth"]
        if t.get("crl_file"):
            args += ["--client-crl-file", t["crl_file"]]
        if t.get("allowed_hostname"):
            args += ["--client-cert-allowed-hostname", t["allowed_hostname"]]
        return args

    async def _spawn(self, index):
        env = dict(os.environ)
        if self.secret is not None:
            env[SECRET_ENV] = self.secret  # not in argv: ps shows that to every user
        proc = await asyncio.create_subprocess_exec(
            *self._command(index), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, env=env)
        self.procs[index] = proc
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), WORKER_READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            line = b""
        if line != READY_LINE:
            await self._kill(proc)
            raise OSError(f"grpc worker {index} did not start (said {line!r})")
        log.info("grpc worker %d serving %s (pid %d)", index, ", ".join(self.listen), proc.pid)
        return proc

    async def start(self):
        await asyncio.gather(*(self._spawn(i) for i in range(self.count)))
        self._supervisors = [asyncio.ensure_future(self._supervise(i))
                             for i in range(self.count)]

    async def _supervise(self, index):
        while not self._stopping:
            proc = self.procs[index]
            rc = await proc.wait()
            if self._stopping:
                return
            log.error("grpc worker %d (pid %d) exited with %s; restarting", index, proc.pid, rc)
            await asyncio.sleep(RESTART_BACKOFF_S)
            try:
                await self._spawn(index)
            except OSError as exc:
                log.error("%s", exc)

    @property
    def pids(self):
        return [p.pid for p in self.procs if p is not None and p.returncode is None]

    async def _kill(self, proc):
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), WORKER_STOP_GRACE_S)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()

    async def stop(self):
        self._stopping = True
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*(self._kill(p) for p in self.procs if p is not None))


# The worker process.

async def _worker_main(args):
    from raftkv.api.etcd.server import (
        GrpcLimits,
        grpc_address,
        server_credentials,
        start_grpc_server_on,
    )
    from raftkv.tls import CertCheck

    nhost, _, nport = args.native.rpartition(":")
    service = RemoteService(nhost.strip("[]"), int(nport), args.request_timeout,
                            secret=os.environ.get(SECRET_ENV))
    await service._connection()  # fail now, not on the first RPC, if the member is not there
    credentials = None
    if args.cert_file:
        credentials = server_credentials(args.cert_file, args.key_file, args.trusted_ca_file,
                                         args.client_cert_auth)
    binds = []
    for url in args.listen:
        scheme, _, hostport = url.partition("://")
        host, _, port = hostport.rpartition(":")
        tls = scheme == "https"
        assert not tls or credentials is not None, f"{url} needs --cert-file"
        binds.append((grpc_address(host.strip("[]"), int(port)), credentials if tls else None))
    limits = GrpcLimits.from_json(args.grpc_limits) if args.grpc_limits else None
    check = CertCheck(args.client_crl_file, args.client_cert_allowed_hostname)
    server, _ = await start_grpc_server_on(service, binds,
                                           max_request_bytes=args.max_request_bytes,
                                           reuse_port=True, limits=limits, cert_check=check)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.buffer.write(READY_LINE)
    sys.stdout.flush()
    while not stop.is_set():
        if os.getppid() != args.parent_pid:
            log.warning("grpc worker %d: the member is gone; exiting", args.index)
            break
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
    await server.stop(grace=1.0)


def main(argv=None):
    p = argparse.ArgumentParser(prog="raftkv-grpc-worker")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--listen", action="append", required=True,
                   help="a client URL to serve (http:// or https://HOST:PORT; repeated)")
    p.add_argument("--native", required=True, help="host:port of the member's native server")
    p.add_argument("--max-request-bytes", type=int, required=True)
    p.add_argument("--request-timeout", type=float, default=7.0)
    p.add_argument("--parent-pid", type=int, default=0)
    p.add_argument("--log-level", default="info")
    p.add_argument("--cert-file", default="", help="TLS: the member's --cert-file")
    p.add_argument("--key-file", default="")
    p.add_argument("--trusted-ca-file", default="")
    p.add_argument("--client-cert-auth", action="store_true")
    p.add_argument("--client-crl-file", default="", help="the member's --client-crl-file")
    p.add_argument("--client-cert-allowed-hostname", default="")
    p.add_argument("--grpc-limits", default="",
                   help="the member's GrpcLimits as JSON (empty: etcd's defaults)")
    args = p.parse_args(argv)
    level = {"warn": "WARNING"}.get(args.log_level.lower(), args.log_level.upper())
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s grpc-worker-{args.index} "
                               "%(name)s: %(message)s")
    try:
        import uvloop

        uvloop.run(_worker_main(args))
    except ImportError:
        asyncio.run(_worker_main(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
