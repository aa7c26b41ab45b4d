"""The `raftkv` member process: `python -m raftkv [flags]` (console script `raftkv`).

Serves the etcd v3 gRPC API on --listen-client-urls (so etcdctl works against the same URLs it
would use for etcd), the native msgpack protocol on --listen-native-urls, peers on
--listen-peer-urls and, if set, /health, /version and /metrics on --listen-metrics-urls.
SIGTERM/SIGINT stop it cleanly: the in-flight sync finishes, sockets close.
A data dir that is unsafe to use makes it refuse to start with a message saying why (exit 2).
"""
from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import secrets
import signal
import sys
import time

from raftkv.api.etcd.server import (
    CallGauge,
    GrpcLimits,
    server_credentials,
    start_grpc_server,
)
from raftkv.api.etcd.workers import WorkerPool, reserve_port
from raftkv.api.http import start_http_server
from raftkv.api.native import start_native_server
from raftkv.api.wire import FRAME_OVERHEAD_BYTES
from raftkv.server.config import ConfigError, first_host_port, load_config
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
    member = Member(cfg)
    await member.start()
    tune_gc()
    service = Service(member)
    servers = []
    pool, reserved, native, http, workers_native = None, None, None, None, None
    try:
        chost, cport = first_host_port(cfg.listen_client_urls)
        nhost, nport = first_host_port(cfg.listen_native_urls)
        client_tls, _, _ = cfg.tls_contexts()
        native, member.native_port = await start_native_server(
            service, nhost, nport, max_frame_bytes=cfg.max_request_bytes + FRAME_OVERHEAD_BYTES,
            ssl=client_tls if cfg.native_tls else None)
        if cfg.listen_metrics_urls:
            hhost, hport = first_host_port(cfg.listen_metrics_urls)
            http, member.metrics_port = await start_http_server(
                service, hhost, hport, host_allowed=cfg.host_allowed)
        # The client port opens last: once it accepts connections, every listener is up.
        if cfg.grpc_workers:
            # The workers forward to a native server of their own: loopback, plain, and
            # open only to a hello with this secret (which the workers get in their
            # environment); it trusts them to pass on the CN of a client's certificate.
            secret = secrets.token_hex(16)
            workers_native, workers_port = await start_native_server(
                service, "127.0.0.1", 0,
                max_frame_bytes=cfg.max_request_bytes + FRAME_OVERHEAD_BYTES,
                worker_secret=secret)
            reserved, member.client_port = reserve_port(chost, cport)
            pool = WorkerPool(cfg.grpc_workers, chost, member.client_port, "127.0.0.1",
                              workers_port, max_request_bytes=cfg.max_request_bytes,
                              request_timeout=cfg.request_timeout, log_level=cfg.log_level,
                              secret=secret, tls_files=_worker_tls(cfg),
                              limits=_grpc_limits(cfg),
                              watch_progress_interval=cfg.watch_progress_s)
            await pool.start()
        else:
            member.front_calls = CallGauge()
            grpc_server, member.client_port = await start_grpc_server(
                service, chost, cport, max_request_bytes=cfg.max_request_bytes,
                calls=member.front_calls, credentials=_grpc_credentials(cfg),
                limits=_grpc_limits(cfg), watch_progress_interval=cfg.watch_progress_s)
            servers.append(grpc_server)
        secured = [w for w, on in (("clients", cfg.client_tls), ("peers", cfg.peer_tls)) if on]
        log.info("ready: etcd gRPC on %s:%d%s, native on %s:%d, peers on port %d%s", chost,
                 member.client_port,
                 f" ({cfg.grpc_workers} worker processes)" if pool else "",
                 nhost, member.native_port, member.peer_port,
                 f"; TLS for {' and '.join(secured)}" if secured else "")
        stop_event = stop_event or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_event.set)
        await stop_event.wait()
        log.info("stopping")
    finally:
        if pool is not None:
            await pool.stop()  # before the native server the workers forward to
        if reserved is not None:
            reserved.close()
        if workers_native is not None:
            workers_native.close()
        if native is not None:
            native.close()
        if http is not None:
            http.close()
        for s in servers:
            await s.stop(grace=1.0)
        await member.stop()


def _grpc_credentials(cfg):
    """grpc's server credentials for an https:// client URL (None: plaintext)."""
    if not cfg.grpc_tls:
        return None
    return server_credentials(cfg.cert_file, cfg.key_file, cfg.trusted_ca_file,
                              cfg.client_cert_auth)


def _grpc_limits(cfg):
    """etcd's gRPC server flags (--grpc-keepalive-*, --max-concurrent-streams) for grpc.aio,
    the same for the member's own gRPC server and its workers'."""
    return GrpcLimits.from_seconds(*cfg.grpc_keepalive_s, cfg.max_concurrent_streams)


def _worker_tls(cfg):
    """WorkerPool's tls_files: what the workers' gRPC servers need (None: plaintext)."""
    if not cfg.grpc_tls:
        return None
    return {"cert_file": cfg.cert_file, "key_file": cfg.key_file,
            "trusted_ca_file": cfg.trusted_ca_file, "client_cert_auth": cfg.client_cert_auth}


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
