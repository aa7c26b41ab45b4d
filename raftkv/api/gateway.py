"""etcd's gRPC gateway: the v3 API as JSON over HTTP/1.1, served on --listen-client-http-urls.

    curl -L http://127.0.0.1:2382/v3/kv/put -X POST -d '{"key": "Zm9v", "value": "YmFy"}'

etcd 3.4 serves its grpc-gateway on the client port beside gRPC (cmux); so does raftkv (its
ClientMux, raftkv/api/mux.py, hands the client URLs' HTTP connections to this server), and on
listeners of its own, the flag etcd 3.5 gave them. What a
client sees is etcd 3.4.23's gateway (checked with curl against the real one):

* `POST /v3/<path>` (and `/v3beta/<path>`) for every RPC of KV, Watch, Lease, Cluster,
  Maintenance, Auth, Lock and Election (PATHS). The body is one JSON object, the request
  message in protobuf's JSON mapping (bytes in standard base64, 64-bit integers as strings or
  numbers, enums by name or number, field names as in the .proto or in lowerCamelCase; unknown
  fields are ignored); an empty body is the empty request. `OPTIONS` answers with the CORS
  headers every response carries.
* A response is the message as JSON with the .proto's field names, zero values left out.
* An error is `{"error": message, "message": message, "code": gRPC code}` with the HTTP status
  grpc-gateway maps that code to (HTTP_STATUS).
* Watch and LeaseKeepAlive read a stream of JSON requests from the body (one after another, as
  they arrive) and answer with chunked lines `{"result": response}`; Snapshot streams its
  chunks, and Election's Observe its leaders, the same way. A stream that fails after its
  first line ends with `{"error": {"grpc_code", "http_code", "message", "http_status"}}`. The
  stream runs until the client closes the connection, also after the request body ends (as
  etcd's watch server treats a half-close).
* The token: the `Authorization` header (etcd's gateway passes it as gRPC metadata
  "authorization", which etcd reads when there is no "token"), or a `Grpc-Metadata-Token`
  header. A client certificate's CN is never a user here, as in etcd's gateway.
* `/health`, `/version` and `/metrics` (GET), as on --listen-metrics-urls (etcd 3.5 serves them
  on its client HTTP URLs too).

Requests go to the same servicers the gRPC server runs (raftkv/api/etcd/server.py servicers),
in this process: no loopback hop, and the same checks, errors and auth as over gRPC.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import collections
import http
import json
import logging

from aiohttp import web
from google.protobuf import json_format

from raftkv.api.etcd.server import GRPC_OVERHEAD_BYTES, PROTOS, servicers
from raftkv.tls import cert_checked

log = logging.getLogger("raftkv.gateway")

# gRPC code -> HTTP status, as grpc-gateway v1 (etcd 3.4) maps them.
HTTP_STATUS = {0: 200, 1: 408, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 412,
               10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
UNKNOWN, INVALID_ARGUMENT = 2, 3
CORS = {"Access-Control-Allow-Headers": "accept, content-type, authorization",
        "Access-Control-Allow-Methods": "POST, GET, OPTIONS, PUT, DELETE",
        "Access-Control-Allow-Origin": "*"}
JSON_TYPE = "application/json"
GRPC_TYPE = {"Grpc-Metadata-Content-Type": "application/grpc"}
PREFIXES = ("/v3/", "/v3beta/")

# path under a prefix -> (service, RPC), etcd 3.4's google.api.http bindings. HashKV: 3.4 binds
# it to maintenance/hash too, where Hash wins; raftkv also serves 3.5's maintenance/hashkv.
PATHS = {
    "kv/range": ("KV", "Range"), "kv/put": ("KV", "Put"),
    "kv/deleterange": ("KV", "DeleteRange"), "kv/txn": ("KV", "Txn"),
    "kv/compaction": ("KV", "Compact"),
    "watch": ("Watch", "Watch"),
    "lease/grant": ("Lease", "LeaseGrant"), "lease/revoke": ("Lease", "LeaseRevoke"),
    "kv/lease/revoke": ("Lease", "LeaseRevoke"), "lease/keepalive": ("Lease", "LeaseKeepAlive"),
    "lease/timetolive": ("Lease", "LeaseTimeToLive"),
    "kv/lease/timetolive": ("Lease", "LeaseTimeToLive"),
    "lease/leases": ("Lease", "LeaseLeases"), "kv/lease/leases": ("Lease", "LeaseLeases"),
    "cluster/member/add": ("Cluster", "MemberAdd"),
    "cluster/member/remove": ("Cluster", "MemberRemove"),
    "cluster/member/update": ("Cluster", "MemberUpdate"),
    "cluster/member/list": ("Cluster", "MemberList"),
    "cluster/member/promote": ("Cluster", "MemberPromote"),
    "maintenance/alarm": ("Maintenance", "Alarm"), "maintenance/status": ("Maintenance", "Status"),
    "maintenance/defragment": ("Maintenance", "Defragment"),
    "maintenance/hash": ("Maintenance", "Hash"), "maintenance/hashkv": ("Maintenance", "HashKV"),
    "maintenance/snapshot": ("Maintenance", "Snapshot"),
    "maintenance/transfer-leadership": ("Maintenance", "MoveLeader"),
    "auth/enable": ("Auth", "AuthEnable"), "auth/disable": ("Auth", "AuthDisable"),
    "auth/authenticate": ("Auth", "Authenticate"),
    "auth/user/add": ("Auth", "UserAdd"), "auth/user/get": ("Auth", "UserGet"),
    "auth/user/list": ("Auth", "UserList"), "auth/user/delete": ("Auth", "UserDelete"),
    "auth/user/changepw": ("Auth", "UserChangePassword"),
    "auth/user/grant": ("Auth", "UserGrantRole"), "auth/user/revoke": ("Auth", "UserRevokeRole"),
    "auth/role/add": ("Auth", "RoleAdd"), "auth/role/get": ("Auth", "RoleGet"),
    "auth/role/list": ("Auth", "RoleList"), "auth/role/delete": ("Auth", "RoleDelete"),
    "auth/role/grant": ("Auth", "RoleGrantPermission"),
    "auth/role/revoke": ("Auth", "RoleRevokePermission"),
    "lock/lock": ("Lock", "Lock"), "lock/unlock": ("Lock", "Unlock"),
    "election/campaign": ("Election", "Campaign"), "election/proclaim": ("Election", "Proclaim"),
    "election/leader": ("Election", "Leader"), "election/observe": ("Election", "Observe"),
    "election/resign": ("Election", "Resign"),
}
HTTP_PATHS = ("/health", "/version", "/metrics")

Metadatum = collections.namedtuple("Metadatum", "key value")  # as grpc.aio's metadata items


class GatewayError(Exception):
    """A request that ends with a gRPC status: code (int) and message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class _Context:
    """What the servicers use of a grpc.aio ServicerContext, for one gateway request."""

    __slots__ = ("_metadata",)

    def __init__(self, metadata):
        self._metadata = metadata

    def invocation_metadata(self):
        return self._metadata

    def auth_context(self):
        return {}  # no client-certificate CN through the gateway (as etcd's)

    async def abort(self, code, details=""):
        raise GatewayError(code.value[0], details)


class _Route:
    __slots__ = ("handler", "request_cls", "client_stream", "server_stream")

    def __init__(self, servicer, service_name, method):
        proto = PROTOS[service_name]
        m = proto.DESCRIPTOR.services_by_name[service_name].methods_by_name[method]
        self.handler = getattr(servicer, method)
        self.request_cls = getattr(proto, m.input_type.name)
        self.client_stream = m.client_streaming
        self.server_stream = m.server_streaming


def metadata(headers):
    """gRPC metadata from HTTP headers, as grpc-gateway forwards them: Authorization as
    "authorization", Grpc-Metadata-<Name> as <name>."""
    out = []
    for name, value in headers.items():
        lower = name.lower()
        if lower == "authorization":
            out.append(Metadatum("authorization", value))
        elif lower.startswith("grpc-metadata-") and len(lower) > 14:
            out.append(Metadatum(lower[14:], value))
    return tuple(out)


def to_message(value, cls):
    """A decoded JSON value -> request message (null is the empty request)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise GatewayError(INVALID_ARGUMENT, f"raftkv: the request body must be a JSON object, "
                                             f"not {type(value).__name__}")
    msg = cls()
    try:
        # Unknown fields are dropped first: json_format's own ignore_unknown_fields would
        # also let an unknown enum name through, which grpc-gateway refuses.
        return json_format.ParseDict(known_fields(value, msg.DESCRIPTOR), msg)
    except json_format.ParseError as exc:
        raise GatewayError(INVALID_ARGUMENT, str(exc)) from None


def known_fields(value, descriptor):
    """A decoded JSON object without the names that are no field of descriptor (its .proto or
    lowerCamelCase name), recursively in message fields and lists of messages."""
    if not isinstance(value, dict):
        return value
    out = {}
    for name, item in value.items():
        field = descriptor.fields_by_name.get(name) or descriptor.fields_by_camelcase_name.get(
            name)
        if field is None:
            continue
        sub = field.message_type
        if sub is not None and not sub.GetOptions().map_entry:
            item = [known_fields(x, sub) for x in item] if isinstance(item, list) else \
                known_fields(item, sub)
        elif field.type == field.TYPE_BYTES:
            for x in item if isinstance(item, list) else (item,):
                _check_base64(x, name)
        out[name] = item
    return out


def _check_base64(value, name):
    """Bytes in JSON are standard base64 with its padding, as Go's decoder reads them (line
    breaks skipped); json_format alone would also take URL-safe or unpadded text, and skip
    characters outside the alphabet."""
    if not isinstance(value, str):
        return  # json_format refuses it with its own message
    try:
        base64.b64decode(value.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GatewayError(INVALID_ARGUMENT,
                           f"raftkv: illegal base64 data in {name}: {exc}") from None


def to_json(msg):
    return json.dumps(json_format.MessageToDict(msg, preserving_proto_field_name=True),
                      separators=(",", ":")).encode()


def first_value(body):
    """The first JSON value of a request body (what follows it is ignored, as grpc-gateway's
    decoder does); None for an empty body."""
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise GatewayError(INVALID_ARGUMENT, f"raftkv: the request body is not UTF-8: {exc}")
    text = text.lstrip()
    if not text:
        return None
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except json.JSONDecodeError as exc:
        raise GatewayError(INVALID_ARGUMENT, f"raftkv: invalid JSON: {exc}") from None


async def json_values(content, max_chars):
    """The JSON values of a streamed request body (an aiohttp StreamReader), each as soon as
    it is complete. Raises GatewayError for a value that is not JSON once the body ends, or
    that grows past max_chars."""
    decoder, text = codecs.getincrementaldecoder("utf-8")(), ""
    parse = json.JSONDecoder().raw_decode
    eof = False
    while True:
        text = text.lstrip()
        if text:
            try:
                value, end = parse(text)
            except json.JSONDecodeError as exc:
                if eof:
                    raise GatewayError(INVALID_ARGUMENT, f"raftkv: invalid JSON: {exc}") \
                        from None
                if len(text) > max_chars:
                    raise GatewayError(INVALID_ARGUMENT, f"raftkv: a request of the stream "
                                                         f"exceeds {max_chars} bytes") from None
            else:  # a number at the end of what came may go on in the next chunk
                if end < len(text) or eof or not isinstance(value, (int, float)):
                    text = text[end:]
                    yield value
                    continue
        if eof:
            return
        chunk = await content.readany()
        try:
            text += decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise GatewayError(INVALID_ARGUMENT,
                               f"raftkv: the request body is not UTF-8: {exc}") from None
        eof = not chunk


def error_body(code, message):
    return json.dumps({"error": message, "message": message, "code": code},
                      separators=(",", ":")).encode()


def stream_error_body(code, message):
    status = HTTP_STATUS.get(code, 500)
    return json.dumps({"error": {"grpc_code": code, "http_code": status, "message": message,
                                 "http_status": http.HTTPStatus(status).phrase}},
                      separators=(",", ":")).encode()


async def _start(request, status):
    out = web.StreamResponse(status=status, headers={**CORS, **GRPC_TYPE})
    out.content_type = JSON_TYPE
    out.enable_chunked_encoding()
    await out.prepare(request)
    return out


def _error(code, message):
    return web.Response(status=HTTP_STATUS.get(code, 500), body=error_body(code, message),
                        content_type=JSON_TYPE, headers=CORS)


class Gateway:
    """The gateway's aiohttp application over one Service (and the member's HttpEndpoint for
    /health, /version, /metrics)."""

    def __init__(self, service, *, max_request_bytes, endpoint, host_allowed=None):
        own = servicers(service, max_request_bytes=max_request_bytes)
        self.routes = {path: _Route(own[svc], svc, rpc) for path, (svc, rpc) in PATHS.items()}
        self.endpoint = endpoint
        self.host_allowed = host_allowed
        # A body of up to --max-request-bytes of protobuf, plus gRPC's overhead, in base64
        # JSON (4/3) with room for field names.
        self.max_body_bytes = 2 * (max_request_bytes + GRPC_OVERHEAD_BYTES)
        self.app = web.Application(client_max_size=self.max_body_bytes)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request):
        if self.host_allowed is not None and not self.host_allowed(request.host):
            return web.Response(status=421, text="Misdirected Request\n")
        path = request.path
        if path in HTTP_PATHS:
            if request.method not in ("GET", "HEAD"):
                return web.Response(status=405, text="Method Not Allowed\n", headers=CORS)
            query = {k: request.query.getall(k) for k in set(request.query.keys())}
            status, ctype, body = await self.endpoint.route(path, query)
            return web.Response(status=status, body=b"" if request.method == "HEAD" else body,
                                headers={"Content-Type": ctype})
        prefix = next((p for p in PREFIXES if path.startswith(p)), None)
        if prefix is None:  # Go's http.NotFound, from etcd's mux
            return web.Response(status=404, text="404 page not found\n", headers=CORS)
        route = self.routes.get(path[len(prefix):])
        if route is None:  # grpc-gateway's own
            return web.Response(status=404, text="Not Found\n", headers=CORS)
        if request.method == "OPTIONS":
            return web.Response(status=200, headers=CORS)
        if request.method != "POST":
            return web.Response(status=405, text="Method Not Allowed\n", headers=CORS)
        context = _Context(metadata(request.headers))
        try:
            if route.client_stream:
                return await self._bidi(request, route, context)
            msg = to_message(first_value(await request.read()), route.request_cls)
            if route.server_stream:
                return await self._stream(request, route.handler(msg, context))
            return web.Response(body=to_json(await route.handler(msg, context)),
                                content_type=JSON_TYPE, headers={**CORS, **GRPC_TYPE})
        except GatewayError as exc:
            return _error(exc.code, exc.message)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("gateway request %s failed", path)
            return _error(UNKNOWN, "raftkv: internal error")

    async def _bidi(self, request, route, context):
        values = json_values(request.content, self.max_body_bytes)
        try:
            first = await anext(values, None)
            messages = [] if first is None else [to_message(first, route.request_cls)]
        except GatewayError as exc:  # as grpc-gateway: the first request's error is Unknown
            return _error(UNKNOWN, exc.message)

        async def requests():
            for m in messages:
                yield m
            try:
                async for value in values:
                    yield to_message(value, route.request_cls)
            except GatewayError as exc:  # the stream stays open, as a half-close leaves it
                log.info("gateway stream %s: %s", request.path, exc.message)

        return await self._stream(request, route.handler(requests(), context))

    async def _stream(self, request, responses):
        """Chunked {"result": response} lines until responses end or the client goes; an
        error ends the stream with a stream error line (its HTTP status if nothing was sent
        yet), as grpc-gateway's ForwardResponseStream."""
        out, failure = None, None
        try:
            async for resp in responses:
                if out is None:
                    out = await _start(request, 200)
                await out.write(b'{"result":' + to_json(resp) + b"}\n")
        except GatewayError as exc:
            failure = exc
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went
        except Exception:
            log.exception("gateway stream %s failed", request.path)
            failure = GatewayError(UNKNOWN, "raftkv: internal error")
        finally:
            await responses.aclose()
        if out is None:
            out = await _start(request, 200 if failure is None
                               else HTTP_STATUS.get(failure.code, 500))
        if failure is not None:
            await out.write(stream_error_body(failure.code, failure.message))
        await out.write_eof()
        return out


class _CertCheckedSite(web.BaseSite):
    """A TLS listener (TCP, or a unixs:// socket) of the gateway whose clients' certificates a
    CertCheck (--client-crl-file, --client-cert-allowed-hostname) passes or refuses
    (raftkv.tls.cert_checked): aiohttp's own sites take no protocol wrapper."""

    def __init__(self, runner, listener, ssl_context, check):
        super().__init__(runner, ssl_context=ssl_context)
        self._listener = listener
        self._check = check

    @property
    def name(self):
        u = self._listener
        return f"unixs://{u.path}" if u.unix else f"https://{u.host}:{u.port}"

    @property
    def port(self):
        return None if self._listener.unix else self._server.sockets[0].getsockname()[1]

    async def start(self):
        await super().start()
        loop = asyncio.get_running_loop()
        factory = cert_checked(self._runner.server, self._check, "gateway")
        u = self._listener
        if u.unix:
            self._server = await loop.create_unix_server(factory, u.path, ssl=self._ssl_context)
        else:
            self._server = await loop.create_server(factory, u.host, u.port,
                                                    ssl=self._ssl_context, reuse_address=True)


async def start_gateway(gateway, listeners, ssl=None, cert_check=None):
    """Serve the gateway on each listener (config.ListenURL: TCP host:port, TLS when .tls, or a
    Unix socket); cert_check: the CertCheck of the TLS ones' client certificates. Returns
    (runner, [bound port or None for a socket]); stop with `await runner.cleanup()`."""
    # handler_cancellation: a client that goes cancels its handler, which ends its streams.
    runner = web.AppRunner(gateway.app, handler_cancellation=True, access_log=None)
    await runner.setup()
    ports = []
    try:
        for u in listeners:
            if u.tls and cert_check:
                site = _CertCheckedSite(runner, u, ssl, cert_check)
                await site.start()
                ports.append(site.port)
                continue
            if u.unix:
                site = web.UnixSite(runner, u.path, ssl_context=ssl if u.tls else None)
                await site.start()
                ports.append(None)
                continue
            site = web.TCPSite(runner, u.host, u.port, ssl_context=ssl if u.tls else None,
                               reuse_address=True)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, ports
