"""raftkv's own clients over a real member's native Unix socket (--listen-native-urls
unix://PATH, unixs://PATH with TLS): raftkv.Client, raftkv.AsyncClient and the raftkvctl
process (put, get, watch, endpoint status/health), and a 3-member cluster reached only through
Unix sockets (leader discovery, failover when the leader stops).

Socket files live in a short directory under /tmp (a Unix socket path is at most 107 bytes,
which pytest's tmp_path can exceed), removed after the test.
"""
from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

from raftkv.cli.local_cluster import LocalCluster
from raftkv.client import AsyncClient, Client
from tests.etcdctl.conftest import FAST_ARGS, running, wait_for
from tests.tlscerts import make_pki

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]

CLIENT_TIMEOUT_S = 10.0  # covers an election after the leader stops
CTL_TIMEOUT_S = 20.0  # one raftkvctl process, start-up included
LINE_TIMEOUT_S = 10.0  # a watch event reaching `raftkvctl watch`


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="rk-ux-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def raftkvctl(*args, check=True):
    """The raftkvctl process (python -m raftkv.cli, this checkout); CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "raftkv.cli", *args], capture_output=True,
                          text=True, timeout=CTL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def _cluster(root, sockdir, members=1, tls=None):
    """A cluster whose members also serve the native protocol on sockdir/nI.sock (unixs://
    with tls); returns (cluster, the Unix endpoints)."""
    cluster = LocalCluster(str(root), members, extra_args=FAST_ARGS, tls=tls)
    scheme = "unixs" if tls else "unix"
    eps = []
    for i, m in enumerate(cluster.members):
        ep = f"{scheme}://{os.path.join(sockdir, f'n{i + 1}.sock')}"
        cluster.member_args[m.name] = ["--listen-native-urls", f"{m.native_url},{ep}"]
        eps.append(ep)
    return cluster, eps


def _wait_serving(eps, **tls):
    def ok():
        try:
            with Client(eps, timeout=2.0, **tls) as c:
                c.put("/ux/ready", "1")
            return True
        except ValueError:
            raise  # a bad endpoint or TLS option: no use waiting
        except Exception:  # not serving yet: refused, or a RaftkvError while it starts
            return False
    wait_for(ok, 60.0, 0.2, f"a write through {eps}")


class _Lines:
    """A background process's stdout lines, read by a thread, taken with a deadline."""

    def __init__(self, proc):
        self.proc = proc
        self.q = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))

    def take(self, n):
        return [self.q.get(timeout=LINE_TIMEOUT_S) for _ in range(n)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()  # by PID: Popen.kill signals its own child only
        self.proc.wait(timeout=10)


def test_client_async_client_and_raftkvctl_over_a_unix_socket(tmp_path, sockdir):
    cluster, (ep,) = _cluster(tmp_path, sockdir)
    with running(cluster):
        _wait_serving([ep])
        # The blocking client: put, get, and a watch that sees a later put.
        with Client([ep], timeout=CLIENT_TIMEOUT_S) as c:
            c.put("/ux/a", "1")
            assert c.get("/ux/a")[0] == b"1"
            events, cancel = c.watch("/ux/w")
            c.put("/ux/w", "seen")
            assert next(iter(events)).value == b"seen"
            cancel()
            rev = c.status()["header"]["revision"]

        async def with_async_client():
            async with AsyncClient([ep], timeout=CLIENT_TIMEOUT_S) as ac:
                await ac.put("/ux/b", "2")
                events, cancel = await ac.watch_prefix("/ux/p/")
                await ac.put("/ux/p/1", "x")
                got = await asyncio.wait_for(events.__anext__(), LINE_TIMEOUT_S)
                await cancel()
                return (await ac.get("/ux/a"))[0], got.key

        assert asyncio.run(with_async_client()) == (b"1", b"/ux/p/1")
        # raftkvctl: put, get, watch (from the revision after `rev`: no race with its start)
        # and endpoint status/health naming the socket as given.
        assert raftkvctl("--endpoints", ep, "put", "/ux/c", "3").stdout == "OK\n"
        assert raftkvctl("--endpoints", ep, "get", "/ux/", "--prefix", "--print-value-only",
                         ).stdout.split() == ["1", "2", "3", "x", "1", "seen"]
        watch = _Lines(subprocess.Popen(
            [sys.executable, "-m", "raftkv.cli", "--endpoints", ep, "watch", "/ux/a",
             "--rev", str(rev + 1)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, text=True))
        try:
            with Client([ep], timeout=CLIENT_TIMEOUT_S) as c:
                c.put("/ux/a", "again")
            assert watch.take(3) == ["PUT", "/ux/a", "again"]
        finally:
            watch.stop()
        status = json.loads(raftkvctl("--endpoints", ep, "endpoint", "status",
                                      "-w", "json").stdout)
        assert [s["Endpoint"] for s in status] == [ep]
        assert status[0]["Status"]["leader"] == status[0]["Status"]["header"]["member_id"]
        health = raftkvctl("--endpoints", ep, "endpoint", "health").stdout
        assert health.startswith(f"{ep} is healthy: successfully committed proposal")
        # RAFTKVCTL_ENDPOINTS takes the socket too.
        env_proc = subprocess.run([sys.executable, "-m", "raftkv.cli", "get", "/ux/c"],
                                  capture_output=True, text=True, timeout=CTL_TIMEOUT_S,
                                  env=dict(os.environ, RAFTKVCTL_ENDPOINTS=ep))
        assert env_proc.stdout == "/ux/c\n3\n", env_proc.stderr
    assert not os.path.exists(ep[len("unix://"):])  # the member removed its socket


def test_three_members_through_unix_sockets_only(tmp_path, sockdir):
    """Leader discovery asks each given endpoint who it is, so it works through sockets; when
    the leader stops, the client fails over to another socket and goes on."""
    cluster, eps = _cluster(tmp_path, sockdir, members=3)
    with running(cluster):
        _wait_serving(eps)
        status = json.loads(raftkvctl("--endpoints", ",".join(eps), "endpoint", "status",
                                      "-w", "json").stdout)
        assert [s["Endpoint"] for s in status] == eps
        leaders = [s["Endpoint"] for s in status
                   if s["Status"]["leader"] == s["Status"]["header"]["member_id"]]
        assert len(leaders) == 1, status
        with Client(eps, timeout=CLIENT_TIMEOUT_S) as c:
            c.put("/ux3/k", "1")
            # prefer_leader: the client settled on the leader's socket.
            assert c._target.endpoints[c._target._index].text == leaders[0]
            cluster.stop_member(cluster.members[eps.index(leaders[0])])
            c.put("/ux3/k", "2")  # fails over to a surviving member's socket
            assert c.get("/ux3/k")[0] == b"2"
            assert c._target.endpoints[c._target._index].text != leaders[0]


def test_unixs_with_the_client_tls_options(tmp_path, sockdir):
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    cluster, (ep,) = _cluster(tmp_path / "data", sockdir,
                              tls=(str(pki.ca), str(pki.server_cert), str(pki.server_key)))
    with running(cluster):
        # The member's certificate names localhost, which a Unix socket is checked against.
        _wait_serving([ep], ca_cert=str(pki.ca))
        with Client([ep], timeout=CLIENT_TIMEOUT_S, ca_cert=str(pki.ca)) as c:
            c.put("/uxs/k", "v")
            assert c.get("/uxs/k")[0] == b"v"
        assert raftkvctl("--endpoints", ep, "--cacert", str(pki.ca), "get", "/uxs/k",
                         "--print-value-only").stdout == "v\n"
        # Without the CA the system's CAs cannot verify the member: refused, not hung.
        proc = raftkvctl("--endpoints", ep, "--command-timeout", "3", "get", "/uxs/k",
                         check=False)
        assert proc.returncode == 1 and "certificate verify failed" in proc.stderr
