"""The `raftkv` member process: `python -m raftkv [flags]` (console script `raftkv`).

Serves the etcd v3 gRPC API on --listen-client-urls (so etcdctl works against the same URLs it
would use for etcd) and, on the same ports, HTTP/1.1 (the JSON gateway, /health, /version,
/metrics; raftkv/api/mux.py), the native msgpack protocol on --listen-native-urls, peers on
--listen-peer-urls and, if set, /health, /version and /metrics on --listen-metrics-urls.
SIGTERM/SIGINT stop it cleanly: the in-flight sync finishes, sockets close.
A data dir that is unsafe to use makes it refuse to start with a message saying why (exit 2).
"""
from __future__ import annotations

import asyncio
import dataclasses
import faulthandler
import gc
import json
import logging
import os
import secrets
import signal
import sys
import time

from raftkv.api.etcd.workers import WorkerPool, reserve_port
from raftkv.api.http import HttpEndpoint, start_http_server
from raftkv.api.native import start_native_server, unix_socket_path_free, unlink_unix_socket
from raftkv.api.wire import FRAME_OVERHEAD_BYTES
from raftkv.server.config import ConfigError, load_config
from raftkv.server.member import Member
from raftkv.server.service import Service
from raftkv.storage.errors import StorageError

log = logging.getLogger("raftkv")

# The cyclic GC. A member allocates several objects per applied put, and on the pure-Python
# twins it keeps two tracked objects per key (the key index's KeyIndex and its history list;
# the C KeyIndex is not tracked). With the default gen-0 threshold (700) the collector ran
# every ~150 puts and its full passes walked the whole index: ~1.2 us of a bulk put's ~3.4 us
# apply. Few of a member's objects form cycles, so it runs less often.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc():
    """Collect less often; move what startup loaded (the key index) out of the collector's
    generations, so full passes walk only what was allocated since."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class _JsonFormatter(logging.Formatter):
    def format(self, record):
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
               "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out)


def setup_logging(cfg):
    """The root logger writes to every --log-outputs target (stderr, stdout, or a file opened
    for appending; OSError if one cannot be opened) in --log-format, at --log-level."""
    if cfg.log_format == "json":
        formatter = _JsonFormatter()
    else:
        formatter = logging.Formatter(
            f"%(asctime)s %(levelname)s {cfg.name} %(name)s: %(message)s")
    handlers = []
    for target in cfg.log_targets:
        if target in ("stderr", "stdout"):
            handler = logging.StreamHandler(getattr(sys, target))
        else:
            handler = logging.FileHandler(target, mode="a", encoding="utf-8")
        handler.setFormatter(formatter)
        handlers.append(handler)
    level = {"warn": "WARNING"}.get(cfg.log_level.lower(), cfg.log_level.upper())
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, logging.FileHandler):
            old.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for note_level, text in cfg.notes:  # flags accepted without effect, said once
        log.log(note_level, "%s", text)


async def serve(cfg, stop_event=None):
    grpc_ciphers(cfg)
    member = Member(cfg)
    await member.start()
    tune_gc()
    service = Service(member)
    opened = _Listeners()
    try:
        await _open_native_and_metrics(cfg, service, member, opened)
        # The client URLs open last: once they accept connections, every listener is up.
        grpc_where = await _open_grpc(cfg, service, member, opened)
        secured = [w for w, on in (("clients", cfg.client_tls), ("peers", cfg.peer_tls)) if on]
        log.info("ready: etcd gRPC%s on %s%s, native on %s, peers on port %d%s",
                 "" if opened.mux is None else " and HTTP", ", ".join(grpc_where),
                 f" ({cfg.grpc_workers} worker processes)" if opened.pool else "",
                 ", ".join(opened.native_where), member.peer_port,
                 f"; TLS for {' and '.join(secured)}" if secured else "")
        stop_event = stop_event or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_event.set)
        await stop_event.wait()
        log.info("stopping")
    finally:
        await opened.close(cfg)
        await member.stop()


class _Listeners:
    """What serve() opened, to close when it stops."""

    def __init__(self):
        self.grpc_servers = []  # stopped with a grace period
        self.closers = []  # native and HTTP servers, the reserved worker ports
        self.pool = None  # the --grpc-workers WorkerPool
        self.workers_native = None  # the native server only the workers may use
        self.native_where = []  # the native listeners, for the ready line
        self.gateway = None  # the gateway's aiohttp runner (client port, --listen-client-http-urls)
        self.mux = None  # the client URLs' ClientMux (gRPC and HTTP on one port)
        self.relay = None  # the mux's byte relay to the internal gRPC socket
        self.internal_sockets = []  # the internal gRPC sockets' files

    async def close(self, cfg):
        if self.mux is not None:
            await self.mux.close()  # accept no more connections
        if self.pool is not None:
            await self.pool.stop()  # before the native server the workers forward to
        if self.workers_native is not None:
            self.workers_native.close()
        for c in self.closers:
            c.close()
        if self.gateway is not None:
            await self.gateway.cleanup()
            for u in cfg.client_http_listeners:
                if u.unix:
                    unlink_unix_socket(u.path)
        for s in self.grpc_servers:
            await s.stop(grace=1.0)  # its goodbyes go through the relay, still running
        if self.relay is not None:
            self.relay.stop()
        for path in self.internal_sockets:
            unlink_unix_socket(path)
        if self.grpc_servers:
            for u in cfg.client_listeners:
                if u.unix:
                    unlink_unix_socket(u.path)


async def _open_native_and_metrics(cfg, service, member, opened):
    """A native listener on every --listen-native-urls URL, an HTTP one on every
    --listen-metrics-urls URL (sharing one HttpEndpoint)."""
    client_tls, _, _ = cfg.tls_contexts()
    for u in cfg.native_listeners:
        native, port = await start_native_server(
            service, u.host, u.port, max_frame_bytes=cfg.max_request_bytes + FRAME_OVERHEAD_BYTES,
            ssl=client_tls if u.tls else None, unix_path=u.path or None,
            cert_check=cfg.cert_checks()[0])
        opened.closers.append(native)
        opened.native_where.append(_where(u, port))
        if not u.unix and member.native_port is None:
            member.native_port = port
    muxed = cfg.client_urls_muxed  # HTTP on the client URLs too
    endpoint = HttpEndpoint(service, cfg.host_allowed) \
        if cfg.metrics_listeners or cfg.client_http_listeners or muxed else None
    for u in cfg.metrics_listeners:
        http, port = await start_http_server(service, u.host, u.port,
                                             ssl=client_tls if u.tls else None,
                                             endpoint=endpoint,
                                             cert_check=cfg.cert_checks()[0])
        opened.closers.append(http)
        if member.metrics_port is None:
            member.metrics_port = port
    if cfg.client_http_listeners or muxed:
        await _open_gateway(cfg, service, endpoint, opened, client_tls)


async def _open_gateway(cfg, service, endpoint, opened, client_tls):
    """etcd's JSON gateway on every --listen-client-http-urls URL, and for the client URLs'
    HTTP connections (aiohttp, imported only then)."""
    from raftkv.api.gateway import Gateway, start_gateway

    listeners = cfg.client_http_listeners
    for u in listeners:
        if u.unix:
            unix_socket_path_free(u.path)
    gateway = Gateway(service, max_request_bytes=cfg.max_request_bytes, endpoint=endpoint,
                      host_allowed=cfg.host_allowed)
    runner, ports = await start_gateway(gateway, listeners, ssl=client_tls,
                                        cert_check=cfg.cert_checks()[0])
    opened.gateway = runner
    if listeners:
        log.info("etcd's HTTP gateway on %s",
                 ", ".join(_where(u, p) for u, p in zip(listeners, ports)))


async def _open_grpc(cfg, service, member, opened):
    """gRPC on every --listen-client-urls URL: the --grpc-workers serve the TCP ones if there
    are workers, the member the rest (Unix sockets have no SO_REUSEPORT to share). Returns
    the listeners, for the ready line."""
    from raftkv.api.etcd.server import CallGauge, grpc_address, start_grpc_server_on

    tcp = [u for u in cfg.client_listeners if not u.unix]
    unix = [u for u in cfg.client_listeners if u.unix]
    where = []
    if cfg.grpc_workers and tcp:
        where += await _start_workers(cfg, service, member, opened, tcp)
    own = unix if opened.pool is not None else tcp + unix
    if not own:
        return where
    member.front_calls = CallGauge()
    credentials = _grpc_credentials(cfg)
    if cfg.client_urls_muxed:  # never with --grpc-workers
        return where + await _open_mux(cfg, service, member, opened, credentials)
    for u in unix:
        unix_socket_path_free(u.path)
    grpc_server, ports = await start_grpc_server_on(
        service, [(grpc_address(u.host, u.port, u.path), credentials if u.tls else None)
                  for u in own],
        max_request_bytes=cfg.max_request_bytes, calls=member.front_calls,
        limits=_grpc_limits(cfg), cert_check=cfg.cert_checks()[0])
    opened.grpc_servers.append(grpc_server)
    for u, port in zip(own, ports):
        where.append(_where(u, port))
        if not u.unix and member.client_port is None:
            member.client_port = port
    return where


async def _open_mux(cfg, service, member, opened, credentials):
    """gRPC and HTTP on every client URL, as etcd 3.4 (raftkv/api/mux.py): the member's
    grpc.aio server listens on an internal Unix socket per kind of client URL (plain, TLS),
    and a ClientMux on the client URLs sends each connection to it (through the C relay) or
    to the gateway's HTTP server."""
    from raftkv.api.etcd.server import start_grpc_server_on
    from raftkv.api.mux import ClientMux, backend_addresses
    from raftkv.api.relay import Relay

    binds, targets = [], {}
    for tls in sorted({u.tls for u in cfg.client_listeners}):
        bind, target = backend_addresses(cfg.data_dir, tls)
        if bind.startswith("unix:"):
            unix_socket_path_free(target)
            opened.internal_sockets.append(target)
        binds.append((bind, credentials if tls else None))
        targets[tls] = target
    grpc_server, _ = await start_grpc_server_on(
        service, binds, max_request_bytes=cfg.max_request_bytes, calls=member.front_calls,
        limits=_grpc_limits(cfg), cert_check=cfg.cert_checks()[0])
    opened.grpc_servers.append(grpc_server)
    opened.relay = Relay()
    client_tls = cfg.tls_contexts()[0]
    opened.mux = ClientMux(relay=opened.relay, grpc_targets=targets,
                           http_factory=opened.gateway.server, ssl=client_tls,
                           cert_check=cfg.cert_checks()[0])
    where = []
    for u in cfg.client_listeners:
        port = opened.mux.listen(u)
        where.append(_where(u, port))
        if not u.unix and member.client_port is None:
            member.client_port = port
    return where


async def _start_workers(cfg, service, member, opened, tcp):
    # The workers forward to a native server of their own: loopback, plain, and open only to
    # a hello with this secret (which the workers get in their environment); it trusts them
    # to pass on the CN of a client's certificate.
    secret = secrets.token_hex(16)
    opened.workers_native, workers_port = await start_native_server(
        service, "127.0.0.1", 0, max_frame_bytes=cfg.max_request_bytes + FRAME_OVERHEAD_BYTES,
        worker_secret=secret)
    listen, where = [], []
    for u in tcp:  # each worker serves every TCP client URL (SO_REUSEPORT)
        reserved, port = reserve_port(u.host, u.port)
        opened.closers.append(reserved)
        listen.append(f"{'https' if u.tls else 'http'}://{_where(u, port)}")
        where.append(_where(u, port))
        if member.client_port is None:
            member.client_port = port
    opened.pool = WorkerPool(cfg.grpc_workers, listen, "127.0.0.1", workers_port,
                             max_request_bytes=cfg.max_request_bytes,
                             request_timeout=cfg.request_timeout, log_level=cfg.log_level,
                             secret=secret, tls_files=_worker_tls(cfg),
                             limits=_grpc_limits(cfg))
    await opened.pool.start()
    return where


def _where(u, port):
    """A listener for logs: host:port with the bound port, or unix:path."""
    return u.describe() if u.unix else dataclasses.replace(u, port=port).describe()


def grpc_ciphers(cfg):
    """--cipher-suites for gRPC: grpc's C core reads GRPC_SSL_CIPHER_SUITES once, when grpc is
    imported, and its Python API has no other way in. So the variable is set here, before
    raftkv.api.etcd.server (which imports grpc) is, and the --grpc-workers inherit it. A
    process that imported grpc before (a test serving in-process) cannot apply it: ConfigError
    rather than serving other ciphers than asked."""
    if not cfg.cipher_suites or not cfg.grpc_tls:
        return
    want = cfg.ciphers
    if os.environ.get("GRPC_SSL_CIPHER_SUITES") == want:
        return
    if "grpc" in sys.modules:
        raise ConfigError("--cipher-suites: grpc is already initialised in this process; set "
                          f"GRPC_SSL_CIPHER_SUITES={want} before it starts")
    os.environ["GRPC_SSL_CIPHER_SUITES"] = want


def _grpc_credentials(cfg):
    """grpc's server credentials for https:// client URLs (None: every one is plain)."""
    if not cfg.grpc_tls:
        return None
    from raftkv.api.etcd.server import server_credentials

    return server_credentials(*cfg.client_cert_paths(), cfg.trusted_ca_file,
                              cfg.client_cert_auth)


def _grpc_limits(cfg):
    """etcd's gRPC server flags (--grpc-keepalive-*, --max-concurrent-streams) for grpc.aio,
    the same for the member's own gRPC server and its workers'."""
    from raftkv.api.etcd.server import GrpcLimits

    return GrpcLimits.from_seconds(*cfg.grpc_keepalive_s, cfg.max_concurrent_streams)


def _worker_tls(cfg):
    """WorkerPool's tls_files: what the workers' gRPC servers need for their https:// URLs
    (None: every client URL is plain)."""
    if not cfg.grpc_tls:
        return None
    cert, key = cfg.client_cert_paths()
    return {"cert_file": cert, "key_file": key, "trusted_ca_file": cfg.trusted_ca_file,
            "client_cert_auth": cfg.client_cert_auth, "crl_file": cfg.client_crl_file,
            "allowed_hostname": cfg.client_cert_allowed_hostname}


def main(argv=None):
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        sys.stderr.write(f"raftkv: {exc}\n")
        return 2
    try:
        setup_logging(cfg)
    except OSError as exc:
        sys.stderr.write(f"raftkv: --log-outputs: {exc}\n")
        return 2
    try:
        grpc_ciphers(cfg)
    except ConfigError as exc:
        sys.stderr.write(f"raftkv: {exc}\n")
        return 2
    # LMDB maps the store: a damaged page that points past the file's end is a SIGBUS, which
    # no Python code can catch. Say where it happened (the thread's stack) before dying.
    faulthandler.enable()
    # The loop thread, the storage thread and the WAL writer hand work to each other: a thread
    # woken by a hand-off should not wait the default 5 ms for a busy holder to give up the GIL.
    sys.setswitchinterval(float(os.environ.get("RAFTKV_SWITCH_INTERVAL_S", "0.0005")))
    try:
        import uvloop

        uvloop.run(serve(cfg))
    except StorageError as exc:
        log.critical("refusing to start: %s", exc)
        return 2
    except OSError as exc:
        log.critical("cannot start: %s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
