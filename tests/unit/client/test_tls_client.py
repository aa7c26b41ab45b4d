"""The native clients and raftkvctl over TLS, against a TLS native server over RichFakeService.

The PKI (tests/tlscerts.py) is made once per module. "Fails fast" means well under the
client's timeout: a TLS failure is not retried until the timeout as a refused connection is.
"""
from __future__ import annotations

import asyncio
import io
import threading
import time

import pytest

import raftkv
from raftkv import tls
from raftkv.api.native import start_native_server
from raftkv.cli import ctl
from raftkv.client import AsyncClient, ConnectionFailedError, TLSHandshakeError
from tests.tlscerts import make_pki
from tests.unit.client.richfake import RichFakeService, ServerThread
from tests.unit.client.test_async_client import MemberService, watch_resume_scenario

TEST_TIMEOUT_S = 20.0
CLIENT_TIMEOUT_S = 5.0
FAST_S = 1.0  # a TLS failure must be reported within this (the client timeout is 5 s)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


def server_ctx(pki, client_cert_auth=False, other=False):
    if other:
        return tls.server_context(pki.other_cert, pki.other_key)
    return tls.server_context(pki.server_cert, pki.server_key,
                              pki.ca if client_cert_auth else None, client_cert_auth)


async def serve(ctx, service=None):
    """(server, port): a native server over service (a RichFakeService) serving TLS with ctx."""
    return await start_native_server(service or RichFakeService(), "127.0.0.1", 0, ssl=ctx)


async def expect_fast_failure(client, match):
    t0 = time.monotonic()
    with pytest.raises(TLSHandshakeError, match=match) as err:
        await client.get("k")
    assert time.monotonic() - t0 < FAST_S
    assert isinstance(err.value, ConnectionFailedError)
    return str(err.value)


def test_put_get_watch_with_ca_cert(pki):
    async def main():
        server, port = await serve(server_ctx(pki))
        async with server:
            async with AsyncClient([f"127.0.0.1:{port}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca) as c:
                events, cancel = await c.watch("w")
                await c.put("w", "1")
                assert (await c.get("w"))[0] == b"1"
                assert (await events.__anext__()).value == b"1"
                await cancel()
                result = await c.put_many([(f"m{i}", "v") for i in range(10)], batch_max=3)
                assert (result.done, result.failed) == (10, 0)

    run(main())


def test_https_endpoints(pki):
    async def main():
        server, port = await serve(server_ctx(pki))
        async with server:
            async with AsyncClient([f"https://127.0.0.1:{port}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca) as c:
                await c.put("k", "v")
            # The certificate's DNS name, where localhost is an address the server has.
            async with AsyncClient([f"https://localhost:{port}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca) as c:
                assert (await c.get("k"))[0] == b"v"
            # https:// alone turns TLS on, with the system's CAs, which do not know ours.
            async with AsyncClient([f"https://127.0.0.1:{port}"],
                                   timeout=CLIENT_TIMEOUT_S) as c:
                await expect_fast_failure(c, "certificate verify failed")

    run(main())


def test_http_endpoint_with_tls_options_is_refused():
    with pytest.raises(ValueError, match=r"http://127.0.0.1:1 is plain http:// but TLS is on "
                                         r"\(ca_cert\)"):
        AsyncClient(["http://127.0.0.1:1"], ca_cert="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="an https:// endpoint"):
        AsyncClient(["https://127.0.0.1:1", "http://127.0.0.1:2"])


def test_plain_tcp_stays_plain(pki):
    assert AsyncClient(["127.0.0.1:1"])._ssl_context is None
    assert AsyncClient(["http://127.0.0.1:1"])._ssl_context is None
    # As etcdctl's --insecure-skip-tls-verify: it does not turn TLS on by itself.
    assert AsyncClient(["127.0.0.1:1"], insecure_skip_verify=True)._ssl_context is None
    assert AsyncClient(["127.0.0.1:1"], ca_cert=pki.ca)._ssl_context is not None


def test_bad_files_fail_at_construction(pki, tmp_path):
    missing = str(tmp_path / "missing-ca.pem")
    with pytest.raises(tls.TLSConfigError, match="missing-ca.pem"):
        AsyncClient(["127.0.0.1:1"], ca_cert=missing)
    with pytest.raises(tls.TLSConfigError, match="needs its key"):
        AsyncClient(["127.0.0.1:1"], cert_key=pki.client_key)


def test_wrong_ca_fails_fast_naming_the_endpoint(pki):
    async def main():
        server, port = await serve(server_ctx(pki))
        async with server:
            async with AsyncClient([f"127.0.0.1:{port}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.other_ca) as c:
                msg = await expect_fast_failure(c, "certificate verify failed")
                assert f"TLS handshake with 127.0.0.1:{port} failed" in msg

    run(main())


def test_insecure_skip_verify_connects_despite_the_wrong_ca(pki):
    async def main():
        server, port = await serve(server_ctx(pki))
        async with server:
            async with AsyncClient([f"127.0.0.1:{port}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.other_ca, insecure_skip_verify=True) as c:
                await c.put("k", "v")
                assert (await c.get("k"))[0] == b"v"

    run(main())


def test_a_member_with_a_bad_certificate_is_skipped_for_a_good_one(pki):
    async def main():
        bad, bad_port = await serve(server_ctx(pki, other=True))
        good, good_port = await serve(server_ctx(pki))
        async with bad, good:
            eps = [f"127.0.0.1:{bad_port}", f"127.0.0.1:{good_port}"]
            async with AsyncClient(eps, timeout=CLIENT_TIMEOUT_S, ca_cert=pki.ca,
                                   prefer_leader=False) as c:
                await c.put("k", "v")

    run(main())


def test_leader_discovery_over_tls(pki):
    async def main():
        follower, leader = MemberService(1, 2), MemberService(2, 2)
        s1, p1 = await serve(server_ctx(pki), follower)
        s2, p2 = await serve(server_ctx(pki), leader)
        async with s1, s2:
            async with AsyncClient([f"127.0.0.1:{p1}", f"127.0.0.1:{p2}"],
                                   timeout=CLIENT_TIMEOUT_S, ca_cert=pki.ca) as c:
                await c.put("k", "v")
        assert (follower.puts, leader.puts) == (0, 1)

    run(main())


def test_watch_reopens_over_tls_after_the_connection_is_lost(pki):
    run(watch_resume_scenario(server_ctx(pki), ca_cert=pki.ca))


def test_client_certificates(pki):
    async def main():
        server, port = await serve(server_ctx(pki, client_cert_auth=True))
        ep = f"127.0.0.1:{port}"
        async with server:
            async with AsyncClient([ep], timeout=CLIENT_TIMEOUT_S, ca_cert=pki.ca,
                                   cert_cert=pki.client_cert, cert_key=pki.client_key) as c:
                await c.put("k", "v")
            async with AsyncClient([ep], timeout=CLIENT_TIMEOUT_S, ca_cert=pki.ca) as c:
                msg = await expect_fast_failure(c, "client certificate")
                assert f"TLS handshake with {ep} failed" in msg
            async with AsyncClient([ep], timeout=CLIENT_TIMEOUT_S, ca_cert=pki.ca,
                                   cert_cert=pki.other_cert, cert_key=pki.other_key) as c:
                await expect_fast_failure(c, "client certificate")
            # The member's own certificate (clientAuth too) is accepted, as between peers.
            async with AsyncClient([ep], timeout=CLIENT_TIMEOUT_S, ca_cert=pki.ca,
                                   cert_cert=pki.server_cert, cert_key=pki.server_key) as c:
                assert (await c.get("k"))[0] == b"v"

    run(main())


def test_plaintext_client_against_a_tls_port_fails_and_the_server_goes_on(pki):
    async def main():
        server, port = await serve(server_ctx(pki))
        async with server:
            async with AsyncClient([f"127.0.0.1:{port}"], timeout=0.5) as c:
                with pytest.raises(ConnectionFailedError, match="connect with TLS"):
                    await c.get("k")
            async with AsyncClient([f"127.0.0.1:{port}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca) as c:
                await c.put("k", "v")

    run(main())


def test_tls_client_against_a_plaintext_port_fails_fast(pki):
    async def main():
        server, port = await serve(None)
        async with server:
            async with AsyncClient([f"127.0.0.1:{port}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca) as c:
                await expect_fast_failure(c, "does not speak TLS")

    run(main())


# The blocking client and raftkvctl, against a server in a thread.

@pytest.fixture(scope="module")
def mtls_server(pki):
    srv = ServerThread(RichFakeService(), ssl=server_ctx(pki, client_cert_auth=True))
    yield srv
    srv.stop()


def test_blocking_client(pki, mtls_server):
    with raftkv.Client([mtls_server.endpoint], timeout=CLIENT_TIMEOUT_S, ca_cert=pki.ca,
                       cert_cert=pki.client_cert, cert_key=pki.client_key) as c:
        c.put("sync", "1")
        assert c.get("sync")[0] == b"1"
    with raftkv.Client([mtls_server.endpoint], timeout=CLIENT_TIMEOUT_S,
                       ca_cert=pki.other_ca) as c:
        with pytest.raises(TLSHandshakeError, match="certificate verify failed"):
            c.get("sync")


def test_blocking_client_with_a_bad_file_leaves_no_thread(tmp_path):
    before = threading.active_count()
    with pytest.raises(tls.TLSConfigError, match="missing.pem"):
        raftkv.Client(["127.0.0.1:1"], ca_cert=str(tmp_path / "missing.pem"))
    assert threading.active_count() == before


def ctl_run(server, *argv):
    out = io.StringIO()
    rc = ctl.main(["--endpoints", server.endpoint, "--command-timeout", "3", *argv], out=out)
    return rc, out.getvalue()


def test_ctl_with_flags(pki, mtls_server):
    flags = ["--cacert", pki.ca, "--cert", pki.client_cert, "--key", pki.client_key]
    assert ctl_run(mtls_server, *flags, "put", "c1", "v1") == (0, "OK\n")
    assert ctl_run(mtls_server, *flags, "get", "c1") == (0, "c1\nv1\n")
    # After the verb, as etcdctl allows; --key is the TLS key, not the KEY argument.
    assert ctl_run(mtls_server, "get", "c1", *flags) == (0, "c1\nv1\n")
    assert ctl_run(mtls_server, "get", "c1", f"--cacert={pki.other_ca}", "--cert",
                   pki.client_cert, "--key", pki.client_key,
                   "--insecure-skip-tls-verify") == (0, "c1\nv1\n")


def test_ctl_with_environment_variables(pki, mtls_server, monkeypatch):
    monkeypatch.setenv("RAFTKVCTL_CACERT", pki.ca)
    monkeypatch.setenv("RAFTKVCTL_CERT", pki.client_cert)
    monkeypatch.setenv("RAFTKVCTL_KEY", pki.client_key)
    assert ctl_run(mtls_server, "put", "e1", "v1") == (0, "OK\n")
    assert ctl_run(mtls_server, "get", "e1") == (0, "e1\nv1\n")
    monkeypatch.setenv("RAFTKVCTL_CACERT", pki.other_ca)
    monkeypatch.setenv("RAFTKVCTL_INSECURE_SKIP_TLS_VERIFY", "true")
    assert ctl_run(mtls_server, "get", "e1") == (0, "e1\nv1\n")


def test_ctl_tls_errors(pki, mtls_server, tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "no-such-ca.pem")
    assert ctl_run(mtls_server, "--cacert", missing, "get", "k") == (1, "")
    assert missing in capsys.readouterr().err
    assert ctl_run(mtls_server, "--cacert", pki.ca, "get", "k") == (1, "")
    assert "client certificate" in capsys.readouterr().err
    monkeypatch.setenv("RAFTKVCTL_INSECURE_SKIP_TLS_VERIFY", "maybe")
    assert ctl_run(mtls_server, "get", "k") == (1, "")
    assert "RAFTKVCTL_INSECURE_SKIP_TLS_VERIFY" in capsys.readouterr().err
