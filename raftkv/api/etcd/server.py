"""Start the etcd-compatible gRPC server (grpc.aio) over a service object.

`start_grpc_server(service, host, port, max_request_bytes=...)` registers the KV, Watch, Lease,
Cluster, Maintenance and Auth services, etcd's v3lockpb.Lock and v3electionpb.Election and
grpc.health.v1.Health, binds host:port (port 0: the OS picks one) without TLS,
starts serving and returns (server, bound_port). Stop it with `await server.stop(grace)`.

Options: etcd's gRPC server flags (GrpcLimits): a client may ping as often as
--grpc-keepalive-min-time (5 s; etcdctl pings every 10 s), also without active calls, and one
that pings more often is sent GOAWAY too_many_pings at its third early ping, as grpc-go does
for etcd (gRPC C-core's own default, 5 min, would drop etcdctl's long watch and keep-alive
streams); the server pings a connection every --grpc-keepalive-interval and closes it if no
answer comes within --grpc-keepalive-timeout; a connection may have --max-concurrent-streams
streams open. Requests up to max_request_bytes plus etcd's 512 KiB of gRPC overhead are
accepted, larger ones fail with RESOURCE_EXHAUSTED; responses are unbounded (etcd sends up to
MaxInt32).
"""
from __future__ import annotations

import dataclasses
import json
import ssl

import grpc
from grpc_health.v1 import health_pb2_grpc

from raftkv import tls

from raftkv.api.etcd.auth import AuthServicer
from raftkv.api.etcd.cluster import ClusterServicer
from raftkv.api.etcd.election import ElectionServicer
from raftkv.api.etcd.health import HealthServicer
from raftkv.api.etcd.kv import KVServicer
from raftkv.api.etcd.lease import LeaseServicer
from raftkv.api.etcd.lock import LockServicer
from raftkv.api.etcd.maintenance import MaintenanceServicer
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc, v3election_pb2, v3election_pb2_grpc
from raftkv.api.etcd.proto import v3lock_pb2, v3lock_pb2_grpc
from raftkv.api.etcd.watch import WatchServicer

GRPC_OVERHEAD_BYTES = 512 * 1024  # etcd adds this much to --max-request-bytes
MAX_SEND_BYTES = (1 << 31) - 1
MAX_REQUEST_BYTES_DEFAULT = 1536 * 1024  # etcd's --max-request-bytes default (1.5 MiB)
C_INT_MAX = (1 << 31) - 1  # gRPC C-core's channel arguments are C ints
# grpc-go's maxPingStrikes (etcd's server): a client's third ping within
# --grpc-keepalive-min-time of the one before, with no data sent in between, gets GOAWAY
# too_many_pings.
PING_STRIKES_MAX = 2
# Unary calls that wait for other clients (a lock or leadership held by another) for as long as
# that lasts: not counted as calls in flight (CallGauge).
WAITING_METHODS = frozenset({"/v3lockpb.Lock/Lock", "/v3electionpb.Election/Campaign"})


@dataclasses.dataclass(frozen=True)
class GrpcLimits:
    """etcd's gRPC server flags in milliseconds (the member's config parses them), passed to
    grpc.aio by the member and by each of its --grpc-workers (as JSON in argv)."""

    keepalive_min_time_ms: int = 5_000  # --grpc-keepalive-min-time: clients' ping spacing
    keepalive_interval_ms: int = 2 * 3600 * 1000  # --grpc-keepalive-interval; 0: no pings
    keepalive_timeout_ms: int = 20_000  # --grpc-keepalive-timeout; 0: no pings
    max_concurrent_streams: int = (1 << 32) - 1  # per connection; etcd's math.MaxUint32

    @classmethod
    def from_seconds(cls, min_time_s, interval_s, timeout_s, max_concurrent_streams):
        """Durations beyond C-core's int of milliseconds (24.8 days) become that: never."""
        assert min(min_time_s, interval_s, timeout_s) >= 0
        assert max_concurrent_streams >= 1
        ms = [min(C_INT_MAX, round(t * 1000)) for t in (min_time_s, interval_s, timeout_s)]
        return cls(max(1, ms[0]), ms[1], ms[2], max_concurrent_streams)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))

    def options(self):
        # Either duration 0: the server never pings (etcd's "0 to disable"); C-core takes
        # INT_MAX ms as never.
        pings = self.keepalive_interval_ms > 0 and self.keepalive_timeout_ms > 0
        return [
            ("grpc.keepalive_time_ms", self.keepalive_interval_ms if pings else C_INT_MAX),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_ms if pings else 20_000),
            # C-core's GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, despite the name:
            # the shortest spacing of a client's pings while the server sends no data.
            ("grpc.http2.min_ping_interval_without_data_ms", self.keepalive_min_time_ms),
            ("grpc.http2.max_ping_strikes", PING_STRIKES_MAX),
            # HTTP/2 allows up to 2^32-1; C-core's int stops at 2^31-1, unlimited all the same.
            ("grpc.max_concurrent_streams", min(self.max_concurrent_streams, C_INT_MAX)),
        ]


def server_options(max_request_bytes, reuse_port=False, limits=None):
    return [
        ("grpc.max_receive_message_length", max_request_bytes + GRPC_OVERHEAD_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        # Clients may ping without active calls too (at most every keepalive_min_time_ms),
        # and the server's own keep-alive pings go to idle connections as well (as grpc-go's).
        ("grpc.keepalive_permit_without_calls", 1),
        *(limits or GrpcLimits()).options(),
        # Off: a port already in use must fail the start. On only for the --grpc-workers
        # processes, which share the member's client port (raftkv/api/etcd/workers.py).
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


# The .proto module that defines each service of servicers().
PROTOS = {**dict.fromkeys(("KV", "Watch", "Lease", "Cluster", "Maintenance", "Auth"), rpc_pb2),
          "Lock": v3lock_pb2, "Election": v3election_pb2}
_ADD = {**{name: getattr(rpc_pb2_grpc, f"add_{name}Servicer_to_server")
           for name, proto in PROTOS.items() if proto is rpc_pb2},
        "Lock": v3lock_pb2_grpc.add_LockServicer_to_server,
        "Election": v3election_pb2_grpc.add_ElectionServicer_to_server}


def servicers(service, *, max_request_bytes):
    """etcd's services over `service`: {service name (PROTOS): servicer}. The gRPC server
    registers them; the HTTP gateway (raftkv/api/gateway.py) calls the same ones."""
    return {
        "KV": KVServicer(service),
        # etcd 3.4's watch server cuts fragments at --max-request-bytes plus the gRPC
        # overhead (NewWatchServer), not at the request limit itself.
        "Watch": WatchServicer(service,
                               max_response_bytes=max_request_bytes + GRPC_OVERHEAD_BYTES),
        "Lease": LeaseServicer(service),
        "Cluster": ClusterServicer(service),
        "Maintenance": MaintenanceServicer(service),
        "Auth": AuthServicer(service),
        "Lock": LockServicer(service),
        "Election": ElectionServicer(service),
    }


def add_services(server, service, *, max_request_bytes):
    for name, servicer in servicers(service, max_request_bytes=max_request_bytes).items():
        _ADD[name](servicer, server)
    # Not in servicers(): etcd's gateway has no path for gRPC health checks.
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)


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
        if handler_call_details.method in WAITING_METHODS:
            return handler
        inner, gauge = handler.unary_unary, self._gauge

        async def counted(request, context):
            gauge.n += 1
            try:
                return await inner(request, context)
            finally:
                gauge.n -= 1
        return handler._replace(unary_unary=counted)


class _CheckCertificates(grpc.aio.ServerInterceptor):
    """A raftkv.tls.CertCheck (--client-crl-file, --client-cert-allowed-hostname) on every call
    over TLS. grpc's server credentials take no CRL and no host name rule, and its Python API
    gives no hook into the handshake, so the check runs per call on the certificate the
    connection verified (the auth context's x509_pem_cert; the verdict per certificate is
    cached): a refused client gets UNAUTHENTICATED on every call, where etcd closes the
    connection after the handshake."""

    def __init__(self, check):
        self._check = check

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        check = self._check

        async def refuse_if_needed(context):
            pems = (context.auth_context() or {}).get("x509_pem_cert")
            if not pems:
                return  # a plain connection, or a listener that asks for no certificate
            reason = check.refusal(ssl.PEM_cert_to_DER_cert(pems[0].decode()))
            if reason:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"raftkv: {reason}")

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request, context):
                await refuse_if_needed(context)
                return await inner(request, context)
            return handler._replace(unary_unary=unary)
        kind = "unary_stream" if handler.unary_stream is not None else \
            "stream_unary" if handler.stream_unary is not None else "stream_stream"
        inner = getattr(handler, kind)

        async def stream(request, context):
            await refuse_if_needed(context)
            result = inner(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:
                await result
        if kind == "stream_unary":
            async def stream_unary(request, context):
                await refuse_if_needed(context)
                return await inner(request, context)
            return handler._replace(stream_unary=stream_unary)
        return handler._replace(**{kind: stream})


def server_credentials(cert_file, key_file, trusted_ca_file=None, client_cert_auth=False):
    """grpc server credentials for TLS with etcd's flags' files (the member's, and the same
    files in its gRPC workers); client_cert_auth: only clients trusted_ca_file signed."""
    ca = tls.read_pem(trusted_ca_file, "--trusted-ca-file") if client_cert_auth else None
    return grpc.ssl_server_credentials(
        [(tls.read_pem(key_file, "--key-file"), tls.read_pem(cert_file, "--cert-file"))],
        root_certificates=ca, require_client_auth=client_cert_auth)


def grpc_address(host, port=0, unix_path=None):
    """grpc's bind address: "host:port", "[v6]:port", or "unix:PATH" for a Unix socket."""
    if unix_path:
        return f"unix:{unix_path}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start_grpc_server(service, host, port, *,
                            max_request_bytes=MAX_REQUEST_BYTES_DEFAULT, reuse_port=False,
                            calls=None, credentials=None, limits=None):
    """Serve etcd's v3 gRPC API on host:port; returns (server, bound_port). calls: a
    CallGauge to keep of the unary calls in flight. credentials: grpc server credentials to
    serve TLS only (None: plaintext). limits: a GrpcLimits (None: etcd's defaults)."""
    server, ports = await start_grpc_server_on(
        service, [(grpc_address(host, port), credentials)],
        max_request_bytes=max_request_bytes, reuse_port=reuse_port, calls=calls,
        limits=limits)
    return server, ports[0]


async def start_grpc_server_on(service, binds, *, max_request_bytes=MAX_REQUEST_BYTES_DEFAULT,
                               reuse_port=False, calls=None, limits=None, cert_check=None):
    """One gRPC server on every (address, credentials) of binds (grpc_address; credentials
    None: plaintext there), each URL of --listen-client-urls; returns (server, bound ports)
    (port 0 in an address: the OS picks one; a Unix socket's bound port means nothing).
    cert_check: a raftkv.tls.CertCheck for client certificates (see _CheckCertificates).
    Other arguments as start_grpc_server."""
    assert binds, "a gRPC server needs an address"
    interceptors = [_CountCalls(calls)] if calls is not None else []
    if cert_check:
        interceptors.append(_CheckCertificates(cert_check))
    server = grpc.aio.server(options=server_options(max_request_bytes, reuse_port, limits),
                             interceptors=interceptors)
    add_services(server, service, max_request_bytes=max_request_bytes)
    ports = []
    for address, credentials in binds:
        bound_port = server.add_secure_port(address, credentials) if credentials is not None \
            else server.add_insecure_port(address)
        if bound_port == 0:
            raise OSError(f"cannot bind the gRPC server to {address}")
        ports.append(bound_port)
    await server.start()
    return server, ports
