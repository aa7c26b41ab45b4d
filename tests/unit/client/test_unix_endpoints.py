"""Unix socket endpoints (unix://PATH, unixs://PATH) for the native clients and raftkvctl:
parsing, the TLS server name, and the clients against in-process native servers listening on
Unix sockets (over RichFakeService): connect, failover, leader discovery, watch, TLS.

Socket files live in a short directory under /tmp: a Unix socket path is at most 107 bytes,
which pytest's tmp_path can exceed.
"""
from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import time

import pytest

import raftkv
from raftkv import tls
from raftkv.api.native import start_native_server
from raftkv.cli import ctl
from raftkv.client import AsyncClient, ConnectionFailedError, TLSHandshakeError
from raftkv.client.aio import tls_context
from raftkv.client.endpoints import UNIX_PATH_BYTES_MAX, Endpoint, parse_endpoint
from tests.tlscerts import make_pki
from tests.unit.client.richfake import RichFakeService, ServerThread
from tests.unit.client.test_async_client import MemberService

TEST_TIMEOUT_S = 20.0
CLIENT_TIMEOUT_S = 5.0
FAST_S = 1.0  # a TLS failure is reported well within the client timeout


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="rk-ux-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT_S))


async def serve_unix(path, service=None, ssl=None):
    server, _ = await start_native_server(service or RichFakeService(), "", 0, ssl=ssl,
                                          unix_path=path)
    return server


# Parsing.

@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:2379", ("", "127.0.0.1", 2379, "")),
    ("  http://10.0.0.1:1234/ ", ("http", "10.0.0.1", 1234, "")),
    ("https://m1.example:2379", ("https", "m1.example", 2379, "")),
    ("[::1]:2380", ("", "::1", 2380, "")),
    ("localhost", ("", "localhost", 2379, "")),
    ("unix:///run/raftkv.sock", ("unix", "", 0, "/run/raftkv.sock")),
    ("unixs:///run/raftkv.sock", ("unixs", "", 0, "/run/raftkv.sock")),
    # etcd's rule: everything after the scheme, so this is a relative file "localhost:2379".
    ("unix://localhost:2379", ("unix", "", 0, "localhost:2379")),
    ("UNIX://rel/dir/n.sock", ("unix", "", 0, "rel/dir/n.sock")),
    ("unix:/abs/n.sock", ("unix", "", 0, "/abs/n.sock")),  # gRPC's spelling
    ("unixs:rel.sock", ("unixs", "", 0, "rel.sock")),
])
def test_parse_endpoint(text, want):
    ep = parse_endpoint(text)
    assert (ep.scheme, ep.host, ep.port, ep.path) == want
    assert ep.text == text.strip()
    assert ep.unix == bool(want[3])
    assert ep.tls_required == (want[0] in ("https", "unixs"))


@pytest.mark.parametrize("text, match", [
    ("unix://", "names no socket file"),
    ("unixs:", "names no socket file"),
    ("tcp://127.0.0.1:2379", "unknown scheme tcp://"),
    ("127.0.0.1:http", "bad port"),
    ("unix:///" + "d" * UNIX_PATH_BYTES_MAX, "at most 107 bytes"),
])
def test_parse_endpoint_refuses(text, match):
    with pytest.raises(ValueError, match=match):
        parse_endpoint(text)


def test_endpoint_names():
    assert parse_endpoint("unix:///run/x.sock").name == "unix:/run/x.sock"
    assert parse_endpoint("http://127.0.0.1:5").name == "127.0.0.1:5"


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:2379", "127.0.0.1"),
    ("https://m1.example:2379", "m1.example"),
    ("unixs:///run/raftkv.sock", "localhost"),
    ("unixs://localhost:2379", "localhost"),  # etcdctl 3.4 and clientv3 3.5 agree here
    ("unixs:///run/etcd/m1.example:2379", "m1.example"),
    ("unixs:///run/x:notaport", "localhost"),
])
def test_tls_server_name(text, want):
    assert parse_endpoint(text).server_name() == want
    assert parse_endpoint(text).server_name("override.example") == "override.example"


def test_endpoint_invariant():
    with pytest.raises(AssertionError):
        Endpoint("x", "unix", host="h", port=1, path="/p")


def test_unixs_turns_tls_on_and_unix_follows_the_options(pki):
    assert tls_context(["unix:///tmp/a.sock"]) is None
    assert tls_context(["unixs:///tmp/a.sock"]) is not None
    assert tls_context(["unix:///tmp/a.sock"], ca_cert=pki.ca) is not None
    with pytest.raises(ValueError, match=r"plain http:// but TLS is on \(a unixs:// endpoint"):
        AsyncClient(["unixs:///tmp/a.sock", "http://127.0.0.1:2"])
    with pytest.raises(ValueError, match="unknown scheme"):
        AsyncClient(["tcp://127.0.0.1:1"])


# The clients against Unix socket listeners.

def test_put_get_watch_over_a_unix_socket(sockdir):
    async def main():
        path = os.path.join(sockdir, "native.sock")
        async with await serve_unix(path):
            async with AsyncClient([f"unix://{path}"], timeout=CLIENT_TIMEOUT_S) as c:
                events, cancel = await c.watch("w")
                await c.put("w", "1")
                assert (await c.get("w"))[0] == b"1"
                assert (await events.__anext__()).value == b"1"
                await cancel()
                assert (await c.status())["header"]

    run(main())


def test_relative_socket_path_from_the_working_directory(sockdir, monkeypatch):
    """unix://localhost:2379 is the file "localhost:2379" where the client runs (etcd's)."""
    async def main():
        async with await serve_unix(os.path.join(sockdir, "localhost:2379")):
            async with AsyncClient(["unix://localhost:2379"], timeout=CLIENT_TIMEOUT_S) as c:
                await c.put("k", "v")

    monkeypatch.chdir(sockdir)
    run(main())


def test_failover_from_a_missing_socket_to_the_next_endpoint(sockdir):
    async def main():
        live = os.path.join(sockdir, "live.sock")
        missing = os.path.join(sockdir, "missing.sock")
        async with await serve_unix(live):
            async with AsyncClient([f"unix://{missing}", f"unix://{live}"],
                                   timeout=CLIENT_TIMEOUT_S, prefer_leader=False) as c:
                await c.put("k", "v")
                assert c.endpoints[c._index].path == live
            async with AsyncClient([f"unix://{missing}"], timeout=0.5) as c:
                with pytest.raises(ConnectionFailedError, match=f"unix:{missing}"):
                    await c.get("k")

    run(main())


def test_leader_discovery_across_tcp_and_unix_endpoints(sockdir):
    """The client asks the endpoints it was given who they are; the leader's Unix socket is
    found like a TCP endpoint."""
    async def main():
        follower, leader = MemberService(1, 2), MemberService(2, 2)
        f_server, f_port = await start_native_server(follower, "127.0.0.1", 0)
        path = os.path.join(sockdir, "leader.sock")
        async with f_server, await serve_unix(path, leader):
            async with AsyncClient([f"127.0.0.1:{f_port}", f"unix://{path}"],
                                   timeout=CLIENT_TIMEOUT_S) as c:
                await c.put("k", "v")
        assert (follower.puts, leader.puts) == (0, 1)

    run(main())


def test_blocking_client_and_raftkvctl_over_a_unix_socket(sockdir, monkeypatch):
    srv = ServerThread(RichFakeService(), unix_path=os.path.join(sockdir, "n.sock"))
    ep = srv.endpoint
    try:
        with raftkv.Client([ep], timeout=CLIENT_TIMEOUT_S) as c:
            c.put("s", "1")
            assert c.get("s")[0] == b"1"
        assert ctl_run(["--endpoints", ep, "get", "s"]) == (0, "s\n1\n")
        rc, out = ctl_run(["--endpoints", ep, "endpoint", "health"])
        assert rc == 0 and out.startswith(f"{ep} is healthy: successfully committed"), out
        rc, out = ctl_run(["--endpoints", ep, "endpoint", "status"])
        assert rc == 0 and out.startswith(f"{ep}, "), out
        monkeypatch.setenv("RAFTKVCTL_ENDPOINTS", ep)
        assert ctl_run(["put", "e", "2"]) == (0, "OK\n")
    finally:
        srv.stop()
    assert not os.path.exists(srv.unix_path)


def ctl_run(argv):
    out = io.StringIO()
    rc = ctl.main(["--command-timeout", "3", *argv], out=out)
    return rc, out.getvalue()


def test_raftkvctl_names_a_bad_endpoint(capsys):
    assert ctl_run(["--endpoints", "unix://", "get", "k"]) == (1, "")
    assert "names no socket file" in capsys.readouterr().err


# TLS over Unix sockets.

def test_unixs_with_the_ca_checks_localhost(pki, sockdir):
    async def main():
        path = os.path.join(sockdir, "tls.sock")
        ctx = tls.server_context(pki.server_cert, pki.server_key)
        async with await serve_unix(path, ssl=ctx):
            async with AsyncClient([f"unixs://{path}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca) as c:
                await c.put("k", "v")
                assert (await c.get("k"))[0] == b"v"
            # unix:// with TLS options is TLS too (etcd 3.4's clientv3 does the same).
            async with AsyncClient([f"unix://{path}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca) as c:
                assert (await c.get("k"))[0] == b"v"
            # A name the certificate does not carry fails at once, naming the socket.
            async with AsyncClient([f"unixs://{path}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca, server_name="m9.example") as c:
                t0 = time.monotonic()
                with pytest.raises(TLSHandshakeError, match=f"unix:{path} failed: "
                                                            "certificate verify failed"):
                    await c.get("k")
                assert time.monotonic() - t0 < FAST_S
            # The certificate's IP address, named explicitly.
            async with AsyncClient([f"unixs://{path}"], timeout=CLIENT_TIMEOUT_S,
                                   ca_cert=pki.ca, server_name="127.0.0.1") as c:
                assert (await c.get("k"))[0] == b"v"
            # A plain client against the TLS socket is not a TLS failure but a lost hello.
            async with AsyncClient([f"unix://{path}"], timeout=0.5) as c:
                with pytest.raises((ConnectionFailedError, ConnectionError,
                                    raftkv.client.ConnectionLost)):
                    await c.get("k")

    run(main())
