"""gRPC and HTTP/1.1 on the same client URL, as etcd 3.4 serves them (raftkv/api/mux.py): the
real etcdctl (put, get, watch, lease keep-alive, snapshot save, check datascale) and plain HTTP
clients (/health, /version, /metrics, the JSON gateway) on one port, plaintext and TLS; bad
clients (garbage, resets, silence cut short) leave the member serving and leave no fd
behind."""
from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import struct
import time
import urllib.request

import pytest

from raftkv.cli.local_cluster import LocalCluster, free_ports
from tests.etcdctl.conftest import (FAST_ARGS, TARGET, Background, Ctl, running, stop_proc,
                                    wait_for, wait_healthy)
from tests.tlscerts import make_pki

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180),
              pytest.mark.skipif(TARGET != "raftkv", reason="raftkv's own member")]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture(scope="module")
def member(tmp_path_factory):
    cluster = LocalCluster(str(tmp_path_factory.mktemp("mux")), 1, extra_args=FAST_ARGS)
    with running(cluster):
        cluster.wait_listening()
        wait_healthy(Ctl(cluster.endpoints))
        yield cluster.members[0]


def test_the_internal_grpc_socket_is_in_the_data_dir(member):
    assert os.path.exists(os.path.join(member.data_dir, "grpc.sock"))


def _get(url, context=None):
    """(status, body) of a GET; non-2xx answers are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post(url, doc):
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _b64(text):
    return base64.b64encode(text.encode()).decode()


def test_http_and_the_gateway_on_the_grpc_port(member):
    url = member.client_url
    assert _get(url + "/health") == (200, b'{"health":"true","reason":""}')
    assert json.loads(_get(url + "/version")[1]) == {"etcdserver": "3.4.23",
                                                     "etcdcluster": "3.4.0"}
    status, metrics = _get(url + "/metrics")
    assert status == 200 and b"etcd_server_has_leader 1.0" in metrics
    assert _get(url + "/nope")[0] == 404
    put = _post(url + "/v3/kv/put", {"key": _b64("/gw/k"), "value": _b64("from-http")})
    assert int(put["header"]["revision"]) > 1
    got = _post(url + "/v3/kv/range", {"key": _b64("/gw/k")})
    assert base64.b64decode(got["kvs"][0]["value"]) == b"from-http"
    # ... and gRPC on the same port sees it.
    ctl = Ctl([member.grpc_endpoint])
    assert ctl.out("get", "/gw/k", "--print-value-only").strip() == "from-http"


def test_etcdctl_put_get_watch_lease_and_snapshot_through_the_muxed_port(member, tmp_path):
    ctl = Ctl([member.grpc_endpoint])
    ctl.run("put", "/mux/a", "1")
    watch = Background(ctl.popen("watch", "/mux/", "--prefix", "--rev", "1"))
    try:
        watch.wait_output(lambda t: "/mux/a\n1" in t, what="the replayed put")
        ctl.run("put", "/mux/b", "2")
        watch.wait_output(lambda t: "/mux/b\n2" in t, what="a live put")
    finally:
        stop_proc(watch.proc)
    lease = ctl.out("lease", "grant", "60").split()[1]
    keep = Background(ctl.popen("lease", "keep-alive", lease))
    try:
        keep.wait_output(lambda t: t.count("keepalived with TTL(60)") >= 1,
                         what="a keep-alive answer")
    finally:
        stop_proc(keep.proc)
    ctl.run("put", "/mux/leased", "x", "--lease", lease)
    assert ctl.out("get", "/mux/leased", "--print-value-only").strip() == "x"
    path = str(tmp_path / "snap.db")
    ctl.run("snapshot", "save", path, timeout=60)
    assert os.path.getsize(path) % 512 == 32  # the image and its SHA-256


def test_check_datascale_reads_metrics_on_the_client_url(member):
    """etcdctl check datascale GETs /metrics on its endpoint, puts 10,000 keys through gRPC,
    and GETs /metrics again (it failed while the client port was gRPC only)."""
    proc = Ctl([member.grpc_endpoint]).run("check", "datascale", "--load", "s", timeout=150)
    assert "PASS: Approximate system memory used" in proc.stdout


def _fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _closed(sock):
    """The member closed sock: EOF, or a reset if it had not read all that was sent."""
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def _bad_clients(port, rounds):
    """Connections that give up or speak nonsense, in every way the mux must survive."""
    for i in range(rounds):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        kind = i % 6
        if kind == 0:  # garbage: closed by the member
            s.sendall(b"\x00\x01garbage that is no protocol\r\n\r\n")
            assert _closed(s)
        elif kind == 1:  # a reset before a byte
            _reset(s)
            continue
        elif kind == 2:  # half an HTTP/2 preface, then a reset
            s.sendall(PREFACE[:10])
            _reset(s)
            continue
        elif kind == 3:  # the preface, then a reset mid-gRPC
            s.sendall(PREFACE)
            _reset(s)
            continue
        elif kind == 4:  # an HTTP request, then a reset before the answer
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            _reset(s)
            continue
        else:  # a whole HTTP request
            s.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()


def test_bad_clients_leave_the_member_serving_and_no_fd_behind(member):
    port = member.client_port
    ctl = Ctl([member.grpc_endpoint])
    _bad_clients(port, 12)  # warm up (lazily opened files, grpc's threads)
    wait_for(lambda: _get(member.client_url + "/health")[0] == 200, 10.0)
    time.sleep(0.5)
    before = _fds(member.pid)
    _bad_clients(port, 300)
    for _ in range(5):
        ctl.run("put", "/mux/fd", "v")
    assert member.alive()
    assert _get(member.client_url + "/health")[0] == 200
    # Every connection was closed, relayed ones too (grpc notices a reset on its side).
    wait_for(lambda: _fds(member.pid) <= before, 15.0, 0.2,
             f"the member's fds back to {before} (now {_fds(member.pid)})")


def test_a_silent_connection_does_not_block_others(member):
    silent = [socket.create_connection(("127.0.0.1", member.client_port)) for _ in range(20)]
    try:
        assert _get(member.client_url + "/health")[0] == 200
        ctl = Ctl([member.grpc_endpoint])
        ctl.run("put", "/mux/silent", "1")
        assert ctl.out("get", "/mux/silent", "--print-value-only") == "1\n"
    finally:
        for s in silent:
            s.close()


def test_tls_client_url_serves_etcdctl_and_https(tmp_path):
    os.mkdir(tmp_path / "pki")
    pki = make_pki(tmp_path / "pki")
    cluster = LocalCluster(str(tmp_path / "c"), 1, extra_args=[*FAST_ARGS, "--client-cert-auth"],
                           tls=(str(pki.ca), str(pki.server_cert), str(pki.server_key)))
    with running(cluster):
        m = cluster.members[0]
        ctl = Ctl([f"https://{m.grpc_endpoint}"])
        cert = ["--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--key",
                str(pki.client_key)]
        wait_for(lambda: ctl.run(*cert, "endpoint", "health", check=False).returncode == 0,
                 60.0, 0.2, "etcdctl over TLS")
        ctl.run(*cert, "put", "/tls/mux", "v")
        assert ctl.out(*cert, "get", "/tls/mux", "--print-value-only").strip() == "v"
        https = m.client_url.replace("http://", "https://")
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        assert _get(https + "/health", context) == (200, b'{"health":"true","reason":""}')
        # curl offers h2 and http/1.1: the HTTP side, HTTP/1.1.
        context.set_alpn_protocols(["h2", "http/1.1"])
        assert _get(https + "/version", context)[0] == 200
        # --client-cert-auth holds for HTTP too: no certificate, no answer.
        bare = ssl.create_default_context(cafile=str(pki.ca))
        with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            _get(https + "/health", bare)
        # Plaintext on a TLS URL is garbage to it; the member goes on.
        with socket.create_connection(("127.0.0.1", m.client_port), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
            assert _closed(s)
        assert ctl.out(*cert, "get", "/tls/mux", "--print-value-only").strip() == "v"


def _crl_cluster(tmp_path, *extra):
    """(pki, a 1-member TLS cluster with --client-cert-auth and --client-crl-file, plus
    extra flags), not started."""
    os.mkdir(tmp_path / "pki")
    pki = make_pki(tmp_path / "pki")
    cluster = LocalCluster(str(tmp_path / "c"), 1, extra_args=[
        *FAST_ARGS, "--client-cert-auth", "--client-crl-file", str(pki.crl), *extra],
        tls=(str(pki.ca), str(pki.server_cert), str(pki.server_key)))
    return pki, cluster


def _assert_revoked_refused(pki, m, url, where):
    """At https url, the revoked certificate's connection is closed before any answer (the
    member logs "WHERE: refused"), a good certificate is served."""
    def context(cert, key):
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        ctx.load_cert_chain(cert, key)
        return ctx
    good = context(str(pki.client_cert), str(pki.client_key))
    wait_for(lambda: _get(url + "/health", good)[0] == 200, 60.0, 0.2, f"{where} /health")
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError,
                        http.client.HTTPException)):
        _get(url + "/version", context(str(pki.revoked_cert), str(pki.revoked_key)))
    assert f"{where}: refused" in open(m.log_path).read()
    assert _get(url + "/version", good)[0] == 200


def test_client_crl_file_refuses_a_revoked_certificate_over_https_too(tmp_path):
    """--client-crl-file on the client port's HTTP side: the handshake completes (the CA
    signed the certificate) and the member closes the connection before any answer, as the
    native listener does; gRPC's refusal is test_tls.py's."""
    pki, cluster = _crl_cluster(tmp_path)
    with running(cluster):
        m = cluster.members[0]
        cluster.wait_listening()
        _assert_revoked_refused(pki, m, m.client_url.replace("http://", "https://"),
                                "client port")


def test_client_crl_file_refuses_a_revoked_certificate_on_the_gateway_and_metrics_urls(tmp_path):
    """--client-crl-file on the separate HTTPS listeners too (--listen-client-http-urls,
    --listen-metrics-urls), as etcd applies its client TLS settings, CRL included, to them."""
    gateway_port, metrics_port = free_ports(2)
    pki, cluster = _crl_cluster(
        tmp_path, "--listen-client-http-urls", f"https://127.0.0.1:{gateway_port}",
        "--listen-metrics-urls", f"https://127.0.0.1:{metrics_port}")
    with running(cluster):
        m = cluster.members[0]
        cluster.wait_listening()
        for where, port in (("gateway", gateway_port), ("http", metrics_port)):
            _assert_revoked_refused(pki, m, f"https://127.0.0.1:{port}", where)


@pytest.mark.parametrize("split", ["client-urls-http-false", "listen-client-http-urls"])
def test_the_client_url_serves_grpc_alone_without_the_relay(tmp_path, split):
    """raftkv's --client-urls-http false, and etcd 3.5's --listen-client-http-urls ("Enabling
    this flag removes http services from --listen-client-urls"): the client URL then serves
    gRPC alone, straight from grpc.aio (no relay hop, no internal socket); with the latter the
    gateway and /health answer on the flag's URL."""
    [gateway_port] = free_ports(1)
    flag = ["--client-urls-http", "false"] if split == "client-urls-http-false" else \
        ["--listen-client-http-urls", f"http://127.0.0.1:{gateway_port}"]
    cluster = LocalCluster(str(tmp_path), 1, extra_args=[*FAST_ARGS, *flag])
    with running(cluster):
        m = cluster.members[0]
        ctl = Ctl([m.grpc_endpoint])
        wait_healthy(ctl)
        ctl.run("put", "/direct/k", "v")
        assert ctl.out("get", "/direct/k", "--print-value-only").strip() == "v"
        if split == "listen-client-http-urls":
            assert _get(f"http://127.0.0.1:{gateway_port}/health")[0] == 200
        with pytest.raises((urllib.error.URLError, ConnectionError, http.client.HTTPException)):
            _get(m.client_url + "/health")
        assert "ready: etcd gRPC on" in open(m.log_path).read()
        assert not os.path.exists(os.path.join(m.data_dir, "grpc.sock"))
