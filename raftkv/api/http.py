"""The member's HTTP endpoint on --listen-metrics-urls: /health, /version and /metrics, as etcd
serves them (etcd also serves them on the client port; so does raftkv, through its JSON gateway
(raftkv/api/mux.py), which answers them with HttpEndpoint.route, as on --listen-client-http-urls).

* `/health`: etcd's JSON `{"health":"true","reason":""}` (200) or `"false"` with a reason (503):
  "ALARM NOSPACE" while the NOSPACE alarm is raised (`?exclude=NOSPACE` ignores it), "RAFT NO
  LEADER" without a leader, "QGET ERROR:..." when a linearizable read barrier fails.
* `/version`: `{"etcdserver":"3.4.23","etcdcluster":"3.4.0"}`.
* `/metrics`: Prometheus text format (prometheus_client), etcd's metric names where raftkv has
  the same quantity (see MemberCollector), plus the process_* and python_* collectors.

A tiny asyncio HTTP/1.1 server: GET/HEAD only, one request per connection (Connection: close).
"""
from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST, GCCollector, PlatformCollector
from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from raftkv.errors import RaftkvError
from raftkv.tls import cert_checked

log = logging.getLogger("raftkv.http")

ETCD_VERSION = "3.4.23"
ETCD_CLUSTER_VERSION = "3.4.0"
HEALTH_READ_TIMEOUT_S = 5.0
HEADER_BYTES_MAX = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
# etcd: prometheus.ExponentialBuckets(0.001, 2, 14) for both disk histograms
DISK_BUCKETS = tuple(0.001 * 2 ** i for i in range(14))
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            421: "Misdirected Request", 503: "Service Unavailable"}


class SyncFeed:
    """Feeds the histograms from a source's sync_seconds (a bounded deque of per-sync
    durations: GroupCommitter's LMDB commits, counted by .txns, or the WAL's fdatasyncs,
    counted by .syncs) at scrape time: observes only the syncs made since the last scrape
    (those still in the deque; older ones beyond its bound are lost)."""

    def __init__(self, source, histograms, count="txns"):
        self.source = source
        self.histograms = histograms
        self.count = count
        self.seen = getattr(source, count) if source is not None else 0
        self.lost = 0

    def update(self):
        c = self.source
        if c is None:
            return
        total = getattr(c, self.count)
        new = total - self.seen
        if new <= 0:
            return
        durations = _copy_deque(c.sync_seconds)
        recent = durations[-new:] if new <= len(durations) else durations
        self.lost += new - len(recent)
        for seconds in recent:
            for h in self.histograms:
                h.observe(seconds)
        self.seen = total


def _copy_deque(d):
    """A list copy of a deque another thread appends to (copying can race an append)."""
    for _ in range(10):
        try:
            return list(d)
        except RuntimeError:
            continue
    return []


def _pending_failures_counter(registry):
    """Count the proposals the raft loop's Registry fails (timeouts, leader changes): wraps
    registry.fail on this instance, since Registry has no counter of its own."""
    box = {"failed": 0}
    original = registry.fail

    def fail(seq, exc):
        item = registry._pending.get(seq)  # noqa: SLF001 -- counted only if still pending
        if item is not None and not item[0].done():
            box["failed"] += 1
        original(seq, exc)
    registry.fail = fail
    return box


class MemberCollector:
    """etcd_server_* and etcd_mvcc_* values read from the member at scrape time."""

    def __init__(self, member, failures):
        self.member = member
        self.failures = failures

    def describe(self):
        return []

    def collect(self):
        m = self.member
        loop = m.loop
        status = loop.node.status() if loop is not None else {"commit": 0}
        yield _gauge("etcd_server_has_leader",
                     "Whether or not a leader exists. 1 is existence, 0 is not.",
                     1 if loop is not None and loop.leader_id else 0)
        yield _gauge("etcd_server_is_leader",
                     "Whether or not this member is a leader. 1 if is, 0 otherwise.",
                     1 if loop is not None and loop.leader_id == m.id else 0)
        yield _counter("etcd_server_leader_changes_seen",
                       "The number of leader changes seen.",
                       loop.leader_changes if loop is not None else 0)
        yield _gauge("etcd_server_proposals_committed_total",
                     "The total number of consensus proposals committed.", status["commit"])
        yield _gauge("etcd_server_proposals_applied_total",
                     "The total number of consensus proposals applied.",
                     loop.applied_index if loop is not None else 0)
        yield _gauge("etcd_server_proposals_pending",
                     "The current number of pending proposals to commit.",
                     len(loop.registry) if loop is not None else 0)
        yield _counter("etcd_server_proposals_failed", "The total number of failed proposals seen.",
                       self.failures["failed"])
        yield _gauge("etcd_mvcc_db_total_size_in_bytes",
                     "Total size of the underlying database physically allocated in bytes.",
                     m.kv.backend_bytes() if m.kv is not None else 0)
        yield _gauge("etcd_server_quota_backend_bytes",
                     "Current backend storage quota size in bytes.",
                     m.cfg.quota_backend_bytes)
        yield _gauge("etcd_debugging_mvcc_current_revision",
                     "The current revision of store.",
                     m.kv.current_revision if m.kv is not None else 0)
        committer = getattr(m, "committer", None)
        stats = committer.stats() if committer is not None else {}
        yield _counter("raftkv_apply_rounds", "LMDB write transactions committed by the "
                       "store's group commit (each holds many applies).", stats.get("txns", 0))
        yield _counter("raftkv_apply_functions", "Functions (mostly Ready applies) committed "
                       "in those transactions.", stats.get("fns", 0))
        yield _counter("raftkv_apply_lent", "Of those, the ones the Ready loop ran itself in "
                       "a lingering round's lent transaction (no thread hand-off).",
                       stats.get("lent_fns", 0))
        info = GaugeMetricFamily("etcd_server_version", "Which version is running. 1 for "
                                 "'server_version' label with current version.",
                                 labels=["server_version"])
        info.add_metric([ETCD_VERSION], 1)
        yield info


def _gauge(name, doc, value):
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name, doc, value):
    return CounterMetricFamily(name, doc, value=value)


class Metrics:
    """The member's Prometheus registry."""

    def __init__(self, member):
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        wal = Histogram("etcd_disk_wal_fsync_duration_seconds",
                        "The latency distributions of fsync called by WAL.",
                        buckets=DISK_BUCKETS, registry=self.registry)
        backend = Histogram("etcd_disk_backend_commit_duration_seconds",
                            "The latency distributions of commit called by backend.",
                            buckets=DISK_BUCKETS, registry=self.registry)
        # The WAL's fdatasyncs and the store's LMDB commits, as etcd's WAL and bbolt.
        self.feeds = (SyncFeed(getattr(member, "wal", None), (wal,), count="syncs"),
                      SyncFeed(getattr(member, "committer", None), (backend,)))
        loop = getattr(member, "loop", None)
        failures = _pending_failures_counter(loop.registry) if loop is not None \
            else {"failed": 0}
        self.registry.register(MemberCollector(member, failures))

    def render(self):
        for feed in self.feeds:
            feed.update()
        return generate_latest(self.registry)


async def health(service, exclude=()):
    """(HTTP status, etcd's health JSON) for this member."""
    m = service.m
    if m.kv is not None and m.kv.alarm and "NOSPACE" not in exclude:
        return 503, {"health": "false", "reason": "ALARM NOSPACE"}
    if m.loop is None or m.loop.leader_id == 0:
        return 503, {"health": "false", "reason": "RAFT NO LEADER"}
    try:
        await asyncio.wait_for(service.read_barrier(), HEALTH_READ_TIMEOUT_S)
    except (RaftkvError, asyncio.TimeoutError) as exc:
        return 503, {"health": "false", "reason": f"QGET ERROR:{exc or 'timeout'}"}
    return 200, {"health": "true", "reason": ""}


class HttpEndpoint:
    """GET /health, /version, /metrics for one member."""

    def __init__(self, service, host_allowed=None):
        self.service = service
        self.metrics = Metrics(service.m)
        # --host-whitelist (ServerConfig.host_allowed): a request whose Host header names
        # another host gets etcd's 421, which defeats DNS rebinding from a browser.
        self.host_allowed = host_allowed

    async def route(self, path, query):
        if path == "/health":
            exclude = set(query.get("exclude", []))
            status, doc = await health(self.service, exclude)
            return status, "application/json", json.dumps(doc, separators=(",", ":")).encode()
        if path == "/version":
            doc = {"etcdserver": ETCD_VERSION, "etcdcluster": ETCD_CLUSTER_VERSION}
            return 200, "application/json", json.dumps(doc, separators=(",", ":")).encode()
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, self.metrics.render()
        return 404, "text/plain; charset=utf-8", b"404 page not found\n"

    async def handle(self, reader, writer):
        try:
            await asyncio.wait_for(self._serve_one(reader, writer), REQUEST_TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as exc:
            log.debug("http: dropped a connection: %s", exc)
        finally:
            writer.close()

    async def _serve_one(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > HEADER_BYTES_MAX:
            raise ValueError("request header too large")
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await _respond(writer, 400, "text/plain", b"bad request\n")
            return
        method, target = parts[0], urllib.parse.urlsplit(parts[1])
        if method not in ("GET", "HEAD"):
            await _respond(writer, 405, "text/plain", b"method not allowed\n")
            return
        if self.host_allowed is not None and not self.host_allowed(_header(head, b"host")):
            log.warning("http: refused a request for host %r (--host-whitelist)",
                        _header(head, b"host"))
            await _respond(writer, 421, "text/plain; charset=utf-8", b"Misdirected Request\n")
            return
        status, ctype, body = await self.route(target.path,
                                               urllib.parse.parse_qs(target.query))
        await _respond(writer, status, ctype, b"" if method == "HEAD" else body,
                       length=len(body))


async def _respond(writer, status, ctype, body, length=None):
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body) if length is None else length}"
            "\r\nConnection: close\r\n\r\n")
    writer.write(head.encode("latin-1") + body)
    await writer.drain()


def _header(head, name):
    """A header's value in a raw request head ("" when absent); name in lower case."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


async def start_http_server(service, host, port, *, ssl=None, endpoint=None, host_allowed=None,
                            cert_check=None):
    """Serve /health, /version, /metrics on host:port (ssl: a server SSLContext for https://);
    returns (asyncio server, bound port). endpoint: an HttpEndpoint to share between the
    listeners of one member (its metrics are built once). host_allowed(host header) -> bool:
    --host-whitelist (None: any host; used when no endpoint is given). cert_check: the
    CertCheck of TLS clients' certificates (--client-crl-file...)."""
    endpoint = endpoint or HttpEndpoint(service, host_allowed)

    def streams():  # what asyncio.start_server builds per connection
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=HEADER_BYTES_MAX),
                                            endpoint.handle)
    factory = cert_checked(streams, cert_check, "http") if ssl else streams
    server = await asyncio.get_running_loop().create_server(factory, host, port, ssl=ssl)
    bound = server.sockets[0].getsockname()[1]
    log.info("http: /health, /version, /metrics on %s:%d%s", host, bound,
             " (TLS)" if ssl else "")
    return server, bound
