"""TLS with etcd's flags, checked with the real etcdctl: a 3-member cluster whose clients and
peers speak TLS (peers must present a certificate the cluster's CA signed), client certificate
authentication, and a member whose peer certificate another CA signed, which never joins."""
from __future__ import annotations

import json
import os
import socket
import ssl

import pytest

from raftkv.cli.local_cluster import LocalCluster
from raftkv.client import Client
from raftkv.errors import RaftkvError
from tests.etcdctl.conftest import FAST_ARGS, Ctl, running, wait_for, wait_healthy
from tests.tlscerts import CLIENT_CN, make_pki

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_cluster(root, pki, members=3, extra=()):
    return LocalCluster(str(root), members, extra_args=[*FAST_ARGS, *extra],
                        tls=(str(pki.ca), str(pki.server_cert), str(pki.server_key)))


def _https(cluster):
    return [f"https://{e}" for e in cluster.endpoints]


def test_clients_and_peers_over_tls(tmp_path, pki):
    with running(_tls_cluster(tmp_path, pki)) as cluster:
        ctl = Ctl(_https(cluster))
        ca = ["--cacert", str(pki.ca)]
        wait_healthy(_WithArgs(ctl, ca))
        ctl.run(*ca, "put", "/tls/k", "v1")
        for ep in _https(cluster):  # replicated over the TLS peer links to every member
            assert ctl.out(*ca, "get", "/tls/k", "--print-value-only",
                           endpoints=[ep]).strip() == "v1"
        status = json.loads(ctl.out(*ca, "endpoint", "status", "-w", "json"))
        leaders = {st["Status"]["leader"] for st in status}
        ids = {st["Status"]["header"]["member_id"] for st in status}
        assert len(status) == 3 and len(leaders) == 1 and leaders <= ids
        # Without the CA, or with another CA, etcdctl cannot verify the member.
        for bad in ([], ["--cacert", str(pki.other_ca)]):
            proc = ctl.run(*bad, "get", "/tls/k", check=False, endpoints=_https(cluster)[:1])
            assert proc.returncode != 0
            assert "v1" not in proc.stdout
        # A plaintext client gets nowhere either, and the member keeps serving TLS clients.
        plain = Ctl(cluster.endpoints[:1]).run("get", "/tls/k", check=False)
        assert plain.returncode != 0
        assert ctl.out(*ca, "get", "/tls/k", "--print-value-only").strip() == "v1"
        # The native protocol on the same members: TLS with the same certificates.
        native = Client(cluster.native_endpoints, ca_cert=str(pki.ca), timeout=5.0)
        try:
            assert native.get("/tls/k")[0] == b"v1"
            native.put("/tls/native", "n")
        finally:
            native.close()
        assert ctl.out(*ca, "get", "/tls/native", "--print-value-only").strip() == "n"
        logs = [open(m.log_path).read() for m in cluster.members]
        assert all("TLS for clients and peers" in text for text in logs)


def test_client_certificate_authentication(tmp_path, pki):
    with running(_tls_cluster(tmp_path, pki, members=1, extra=["--client-cert-auth"])) as c:
        ctl = Ctl(_https(c))
        good = ["--cacert", str(pki.ca), "--cert", str(pki.client_cert),
                "--key", str(pki.client_key)]
        wait_healthy(_WithArgs(ctl, good))
        ctl.run(*good, "put", "/mtls/k", "v")
        assert ctl.out(*good, "get", "/mtls/k", "--print-value-only").strip() == "v"
        no_cert = ctl.run("--cacert", str(pki.ca), "get", "/mtls/k", check=False)
        assert no_cert.returncode != 0 and "v" not in no_cert.stdout.split()
        foreign = ctl.run("--cacert", str(pki.ca), "--cert", str(pki.other_cert), "--key",
                          str(pki.other_key), "get", "/mtls/k", check=False)
        assert foreign.returncode != 0 and "v" not in foreign.stdout.split()


def test_a_peer_with_a_certificate_from_another_ca_is_shut_out(tmp_path, pki):
    cluster = _tls_cluster(tmp_path, pki)
    intruder = cluster.members[2]
    # m3 presents (and trusts) a certificate of another CA: m1 and m2 refuse it.
    cluster.member_args = {intruder.name: ["--peer-cert-file", str(pki.other_cert),
                                           "--peer-key-file", str(pki.other_key)]}
    with running(cluster):
        ctl = Ctl(_https(cluster)[:2])
        ca = ["--cacert", str(pki.ca)]
        wait_healthy(_WithArgs(ctl, ca))
        ctl.run(*ca, "put", "/shut/k", "v")  # m1 and m2 are a quorum on their own
        wait_for(lambda: "certificate" in open(cluster.members[0].log_path).read()
                 or "certificate" in open(intruder.log_path).read(), 10.0,
                 what="a logged certificate failure")
        lone = ctl.run(*ca, "get", "/shut/k", check=False, endpoints=_https(cluster)[2:])
        assert lone.returncode != 0 and "v" not in lone.stdout.split()


class _WithArgs:
    """A Ctl whose every run starts with the given TLS arguments (for wait_healthy)."""

    def __init__(self, ctl, args):
        self.ctl = ctl
        self.args = list(args)

    def run(self, *args, **kw):
        return self.ctl.run(*self.args, *args, **kw)


def test_certificate_common_name_is_the_user_without_a_token(tmp_path, pki):
    """etcd's CN-based auth: with --client-cert-auth and auth on, a request without a token
    runs as the user named by its certificate's CN (a token wins when both are sent)."""
    with running(_tls_cluster(tmp_path, pki, members=1, extra=["--client-cert-auth"])) as c:
        cert = ["--cacert", str(pki.ca), "--cert", str(pki.client_cert),
                "--key", str(pki.client_key)]
        ctl = _WithArgs(Ctl(_https(c)), cert)
        wait_healthy(ctl)
        root = ("--user", "root:rootpw")
        for args in [("user", "add", "root:rootpw"), ("user", "grant-role", "root", "root"),
                     ("user", "add", CLIENT_CN, "--no-password"), ("role", "add", "cn"),
                     ("role", "grant-permission", "cn", "readwrite", "/cn/", "--prefix"),
                     ("user", "grant-role", CLIENT_CN, "cn"), ("auth", "enable")]:
            ctl.run(*args)
        ctl.run("put", "/cn/x", "1")  # no --user: the certificate's CN is the user
        denied = ctl.run("put", "/other", "1", check=False)
        assert denied.returncode != 0 and "permission denied" in denied.stderr
        ctl.run("put", "/other", "1", *root)  # a token wins over the certificate
        native = Client(c.native_endpoints, ca_cert=str(pki.ca), cert_cert=str(pki.client_cert),
                        cert_key=str(pki.client_key), timeout=5.0)
        try:
            assert native.get("/cn/x")[0] == b"1"
            with pytest.raises(RaftkvError) as info:
                native.get("/other")
            assert info.value.code == "PERMISSION_DENIED"
        finally:
            native.close()
        ctl.run("auth", "disable", *root)


def test_grpc_workers_serve_tls_and_pass_on_the_certificate_name(tmp_path, pki):
    """--grpc-workers with TLS: the workers serve etcdctl over TLS with the member's files,
    require client certificates with --client-cert-auth, and the CN-based user reaches the
    member (through its private port for workers), so auth applies as without workers."""
    extra = ["--client-cert-auth", "--grpc-workers", "2"]
    with running(_tls_cluster(tmp_path, pki, members=1, extra=extra)) as c:
        cert = ["--cacert", str(pki.ca), "--cert", str(pki.client_cert),
                "--key", str(pki.client_key)]
        ctl = _WithArgs(Ctl(_https(c)), cert)
        wait_healthy(ctl)
        ctl.run("put", "/w/x", "1")
        assert ctl.run("get", "/w/x", "--print-value-only").stdout.strip() == "1"
        no_cert = Ctl(_https(c)).run("--cacert", str(pki.ca), "get", "/w/x", check=False)
        assert no_cert.returncode != 0
        root = ("--user", "root:rootpw")
        for args in [("user", "add", "root:rootpw"), ("user", "grant-role", "root", "root"),
                     ("user", "add", CLIENT_CN, "--no-password"), ("role", "add", "w"),
                     ("role", "grant-permission", "w", "readwrite", "/w/", "--prefix"),
                     ("user", "grant-role", CLIENT_CN, "w"), ("auth", "enable")]:
            ctl.run(*args)
        ctl.run("put", "/w/y", "2")  # the certificate's CN, through a worker
        denied = ctl.run("put", "/other", "1", check=False)
        assert denied.returncode != 0 and "permission denied" in denied.stderr
        ctl.run("put", "/other", "1", *root)
        ctl.run("auth", "disable", *root)
        log = open(c.members[0].log_path).read()
        assert "2 worker processes" in log and "TLS for clients" in log


@pytest.mark.parametrize("flag,allowed,forms", [
    ("--peer-cert-allowed-cn", "raftkv-test-member", True),
    ("--peer-cert-allowed-cn", "someone-else", False),
    ("--peer-cert-allowed-hostname", "localhost", True),
    ("--peer-cert-allowed-hostname", "example.com", False),
])
def test_peer_cert_allowed_cn_and_hostname(tmp_path, pki, flag, allowed, forms):
    """etcd's --peer-cert-allowed-cn (or -hostname): a member lets in only peers whose
    certificate has that CN (or is valid for that host name); when no peer's is, no peer link
    comes up, so no leader is ever elected."""
    cluster = _tls_cluster(tmp_path, pki, extra=[flag, allowed])
    with running(cluster) as c:
        ctl = _WithArgs(Ctl(_https(c)), ["--cacert", str(pki.ca)])
        if forms:
            wait_healthy(ctl)
            ctl.run("put", "/cn/k", "v")
            return
        wait_for(lambda: f"{flag} {allowed!r}" in open(c.members[0].log_path).read(),
                 20.0, 0.2, "a refused peer connection")
        proc = ctl.run("endpoint", "health", check=False, timeout=30)
        assert proc.returncode != 0


def _good(pki):
    return ["--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]


@pytest.mark.parametrize("workers", [0, 2])
def test_client_crl_file_refuses_a_revoked_certificate(tmp_path, pki, workers):
    """--client-crl-file: a client certificate whose serial the CRL lists is refused over
    gRPC (etcdctl, also through --grpc-workers) and the native protocol; others are served."""
    extra = ["--client-cert-auth", "--client-crl-file", str(pki.crl), "--grpc-workers",
             str(workers)]
    with running(_tls_cluster(tmp_path, pki, members=1, extra=extra)) as c:
        ctl = Ctl(_https(c))
        wait_healthy(_WithArgs(ctl, _good(pki)))
        ctl.run(*_good(pki), "put", "/crl/k", "v")
        revoked = ctl.run("--cacert", str(pki.ca), "--cert", str(pki.revoked_cert), "--key",
                          str(pki.revoked_key), "get", "/crl/k", check=False)
        assert revoked.returncode != 0 and "v" not in revoked.stdout.split()
        assert "revoked" in revoked.stderr
        native = Client(c.native_endpoints, ca_cert=str(pki.ca),
                        cert_cert=str(pki.revoked_cert), cert_key=str(pki.revoked_key),
                        timeout=3.0)
        try:
            with pytest.raises(Exception):
                native.get("/crl/k")
        finally:
            native.close()
        assert "native: refused" in open(c.members[0].log_path).read()
        good = Client(c.native_endpoints, ca_cert=str(pki.ca), cert_cert=str(pki.client_cert),
                      cert_key=str(pki.client_key), timeout=5.0)
        try:
            assert good.get("/crl/k")[0] == b"v"
        finally:
            good.close()


def test_client_cert_allowed_hostname(tmp_path, pki):
    """Only client certificates valid for the host name get in (the member certificate, with
    SAN localhost and client auth, does; the client certificate, without SANs, does not)."""
    extra = ["--client-cert-auth", "--client-cert-allowed-hostname", "localhost"]
    with running(_tls_cluster(tmp_path, pki, members=1, extra=extra)) as c:
        ctl = Ctl(_https(c))
        member_cert = ["--cacert", str(pki.ca), "--cert", str(pki.server_cert), "--key",
                       str(pki.server_key)]
        wait_healthy(_WithArgs(ctl, member_cert))
        ctl.run(*member_cert, "put", "/host/k", "v")
        refused = ctl.run(*_good(pki), "get", "/host/k", check=False)
        assert refused.returncode != 0 and "--client-cert-allowed-hostname" in refused.stderr


def test_auto_tls_cluster(tmp_path):
    """--auto-tls and --peer-auto-tls without any file: each member makes self-signed
    certificates in DATA_DIR/fixtures, the peers accept each other's, and etcdctl works with
    --insecure-skip-tls-verify."""
    cluster = LocalCluster(str(tmp_path), 3, extra_args=[*FAST_ARGS, "--auto-tls",
                                                        "--peer-auto-tls"])
    for m in cluster.members:
        m.scheme = "https"
    with running(cluster) as c:
        ctl = _WithArgs(Ctl(_https(c)), ["--insecure-transport=false",
                                         "--insecure-skip-tls-verify"])
        wait_healthy(ctl)
        ctl.run("put", "/auto/k", "v")
        for ep in _https(c):
            assert ctl.run("get", "/auto/k", "--print-value-only",
                           endpoints=[ep]).stdout.strip() == "v"
        for m in c.members:
            for kind in ("client", "peer"):
                assert os.path.exists(os.path.join(m.data_dir, "fixtures", kind, "cert.pem"))
        plain = Ctl(_https(c)[:1]).run("get", "/auto/k", check=False)  # no TLS: refused
        assert plain.returncode != 0


def _handshake(port, ciphers):
    """The TLS 1.2 cipher a handshake offering only ciphers agrees, or None if refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                return s.cipher()[0]
    except (ssl.SSLError, ConnectionError):
        return None


@pytest.mark.parametrize("workers", [0, 2])
def test_cipher_suites_restrict_tls12(tmp_path, pki, workers):
    """--cipher-suites (Go's names): a TLS 1.2 client offering only another suite is refused
    on the gRPC and native ports; etcdctl, whose offer includes the allowed one, works."""
    extra = ["--cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "--grpc-workers",
             str(workers)]
    with running(_tls_cluster(tmp_path, pki, members=1, extra=extra)) as c:
        ctl = _WithArgs(Ctl(_https(c)), ["--cacert", str(pki.ca)])
        wait_healthy(ctl)
        ctl.run("put", "/cipher/k", "v")
        m = c.members[0]
        for port in (m.client_port, m.native_port):
            assert _handshake(port, "ECDHE-ECDSA-AES256-GCM-SHA384") is None, port
            assert _handshake(port, "ECDHE-ECDSA-AES128-GCM-SHA256") == \
                "ECDHE-ECDSA-AES128-GCM-SHA256", port
