"""Start the etcd-compatible gRPC server (grpc.aio) over a service object.

`start_grpc_server(service, host, port, max_request_bytes=...)` registers the KV, Watch, Lease,
Cluster, Maintenance and Auth services, binds host:port (port 0: the OS picks one) without TLS,
starts serving and returns (server, bound_port). Stop it with `await server.stop(grace)`.

Options: HTTP/2 pings from clients are accepted without active calls and as often as every
second (etcdctl pings every 10 s; gRPC C-core's defaults would answer GOAWAY too_many_pings and
drop long watch / keep-alive streams); requests up to max_request_bytes plus etcd's 512 KiB of
gRPC overhead are accepted, larger ones fail with RESOURCE_EXHAUSTED; responses are unbounded
(etcd sends up to MaxInt32).
"""
from __future__ import annotations

import grpc

from raftkv import tls

from raftkv.api.etcd.auth import AuthServicer
from raftkv.api.etcd.cluster import ClusterServicer
from raftkv.api.etcd.kv import KVServicer
from raftkv.api.etcd.lease import LeaseServicer
from raftkv.api.etcd.maintenance import MaintenanceServicer
from raftkv.api.etcd.proto import rpc_pb2_grpc
from raftkv.api.etcd.watch import PROGRESS_INTERVAL, WatchServicer

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd adds this much to --max-request-bytes
MAX_SEND_BYTES = (1 << 31) - 1
MAX_REQUEST_BYTES_DEFAULT = 1536 * 1024  # etcd's --max-request-bytes default (1.5 MiB)


def server_options(max_request_bytes, reuse_port=False):
    return [
        ("grpc.max_receive_message_length", max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 1000),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
        ("grpc.http2.max_ping_strikes", 0),  # 0: never GOAWAY a client for pinging
        ("grpc.keepalive_time_ms", 2 * 60 * 60 * 1000),  # etcd's keepalive interval, 2 h
        ("grpc.keepalive_timeout_ms", 20 * 1000),  # etcd's keepalive timeout, 20 s
        # Off: a port already in use must fail the start. On only for the --grpc-workers
        # processes, which share the member's client port (raftkv/api/etcd/workers.py).
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


def add_services(server, service, *, max_request_bytes,
                 watch_progress_interval=PROGRESS_INTERVAL):
    rpc_pb2_grpc.add_KVServicer_to_server(KVServicer(service), server)
    watch = WatchServicer(service, max_response_bytes=max_request_bytes,
                          progress_interval=watch_progress_interval)
    rpc_pb2_grpc.add_WatchServicer_to_server(watch, server)
    rpc_pb2_grpc.add_LeaseServicer_to_server(LeaseServicer(service), server)
    rpc_pb2_grpc.add_ClusterServicer_to_server(ClusterServicer(service), server)
    rpc_pb2_grpc.add_MaintenanceServicer_to_server(MaintenanceServicer(service), server)
    rpc_pb2_grpc.add_AuthServicer_to_server(AuthServicer(service), server)


class CallGauge:
    """Unary calls in flight on a gRPC server (calls=, see start_grpc_server)."""

    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


class _CountCalls(grpc.aio.ServerInterceptor):
    """Keeps a CallGauge of the unary calls in flight. A member reads it (Member.front_calls)
    to keep its event loop free while calls are in flight: grpc.aio accepts one new call per
    loop turn, so a loop that blocks in a WAL sync on every Ready serves concurrent clients
    one call at a time."""

    def __init__(self, gauge):
        self._gauge = gauge

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown method, or a stream (watch, keep-alive, snapshot)
        inner, gauge = handler.unary_unary, self._gauge

        async def counted(request, context):
            gauge.n += 1
            try:
                return await inner(request, context)
            finally:
                gauge.n -= 1
        return handler._replace(unary_unary=counted)


def server_credentials(cert_file, key_file, trusted_ca_file=None, client_cert_auth=False):
    """grpc server credentials for TLS with etcd's flags' files (the member's, and the same
    files in its gRPC workers); client_cert_auth: only clients trusted_ca_file signed."""
    ca = tls.read_pem(trusted_ca_file, "--trusted-ca-file") if client_cert_auth else None
    return grpc.ssl_server_credentials(
        [(tls.read_pem(key_file, "--key-file"), tls.read_pem(cert_file, "--cert-file"))],
        root_certificates=ca, require_client_auth=client_cert_auth)


async def start_grpc_server(service, host, port, *,
                            max_request_bytes=MAX_REQUEST_BYTES_DEFAULT,
                            watch_progress_interval=PROGRESS_INTERVAL, reuse_port=False,
                            calls=None, credentials=None):
    """Serve etcd's v3 gRPC API on host:port; returns (server, bound_port). calls: a
    CallGauge to keep of the unary calls in flight. credentials: grpc server credentials to
    serve TLS only (None: plaintext)."""
    interceptors = [_CountCalls(calls)] if calls is not None else []
    server = grpc.aio.server(options=server_options(max_request_bytes, reuse_port),
                             interceptors=interceptors)
    add_services(server, service, max_request_bytes=max_request_bytes,
                 watch_progress_interval=watch_progress_interval)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound_port = server.add_secure_port(address, credentials) if credentials is not None \
        else server.add_insecure_port(address)
    if bound_port == 0:
        raise OSError(f"cannot bind the gRPC server to {address}")
    await server.start()
    return server, bound_port
