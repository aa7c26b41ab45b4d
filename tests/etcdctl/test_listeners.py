"""Every URL of --listen-client-urls, --listen-native-urls, --listen-peer-urls and
--listen-metrics-urls is served, as etcd serves each (127.0.0.1 and 127.0.0.2 are both
loopback), including unix:// sockets for client (etcdctl) and native URLs, and with
--grpc-workers."""
from __future__ import annotations

import os
import socket
import urllib.request

import msgpack
import pytest

from raftkv.cli.local_cluster import LocalCluster, free_ports
from raftkv.client import Client
from tests.etcdctl.conftest import FAST_ARGS, Ctl, running, wait_for, wait_healthy

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(180)]


def _one_member(tmp_path, extra=()):
    """A 1-member cluster whose client, native and metrics flags list several URLs: the
    harness's own 127.0.0.1 ports first, then 127.0.0.2 ports, then Unix sockets."""
    cluster = LocalCluster(str(tmp_path), 1, extra_args=[*FAST_ARGS, *extra])
    m = cluster.members[0]
    c2, n2, h1, h2 = free_ports(4)
    socks = {"client": str(tmp_path / "client.sock"), "native": str(tmp_path / "native.sock")}
    cluster.member_args = {m.name: [
        "--listen-client-urls",
        f"{m.client_url},http://127.0.0.2:{c2},unix://{socks['client']}",
        "--listen-native-urls",
        f"{m.native_url},http://127.0.0.2:{n2},unix://{socks['native']}",
        "--listen-metrics-urls", f"http://127.0.0.1:{h1},http://127.0.0.2:{h2}"]}
    grpc_eps = [m.grpc_endpoint, f"127.0.0.2:{c2}", f"unix://{socks['client']}"]
    native_eps = [m.native_endpoint, f"127.0.0.2:{n2}", f"unix://{socks['native']}"]
    metrics = [f"http://127.0.0.1:{h1}", f"http://127.0.0.2:{h2}"]
    return cluster, grpc_eps, native_eps, socks["native"], metrics


def _check_every_url(cluster, grpc_eps, native_eps, native_sock, metrics):
    wait_healthy(Ctl(grpc_eps[:1]))
    for i, ep in enumerate(grpc_eps):  # etcdctl on each client URL, the Unix socket too
        Ctl([ep]).run("put", f"/multi/{i}", f"v{i}")
    for ep in grpc_eps:
        out = Ctl([ep]).out("get", "/multi/", "--prefix", "--print-value-only").split()
        assert out == ["v0", "v1", "v2"], (ep, out)
    for ep in native_eps:  # raftkv.Client on each native URL, the Unix socket too
        client = Client([ep], timeout=5.0)
        try:
            assert client.get("/multi/1")[0] == b"v1"
        finally:
            client.close()
    for url in metrics:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            assert b'"health":"true"' in resp.read()


def test_every_client_native_and_metrics_url_is_served(tmp_path):
    cluster, grpc_eps, native_eps, native_sock, metrics = _one_member(tmp_path)
    with running(cluster):
        _check_every_url(cluster, grpc_eps, native_eps, native_sock, metrics)
        log = open(cluster.members[0].log_path).read()
        assert f"unix:{tmp_path / 'client.sock'}" in log
    # The member removes its socket files when it stops.
    assert not os.path.exists(tmp_path / "client.sock")
    assert not os.path.exists(native_sock)


def test_every_client_url_is_served_with_grpc_workers(tmp_path):
    """The workers serve every TCP client URL (SO_REUSEPORT on each); the member serves the
    Unix socket itself."""
    cluster, grpc_eps, native_eps, native_sock, metrics = _one_member(
        tmp_path, ["--grpc-workers", "2"])
    with running(cluster):
        _check_every_url(cluster, grpc_eps, native_eps, native_sock, metrics)
        assert "2 worker processes" in open(cluster.members[0].log_path).read()


def _bad_hello(host, port, source):
    """A peer hello with another cluster's token, from source: the member logs and refuses it."""
    with socket.create_connection((host, port), timeout=5, source_address=(source, 0)) as s:
        body = msgpack.packb({"token": "not-this-cluster", "from": 1, "to": 2})
        s.sendall(len(body).to_bytes(4, "big") + body)
        s.settimeout(5)
        try:
            s.recv(1)  # the member closes the connection
        except OSError:
            pass


def test_every_peer_url_is_listened_on_and_dialled(tmp_path):
    """m1 listens on two peer URLs. The cluster knows m1 as a dead URL and the second one,
    so the others reach m1 only by moving on from the dead URL to its second listener; a
    probe on each of m1's listeners is answered by the peer protocol."""
    cluster = LocalCluster(str(tmp_path), 3, extra_args=FAST_ARGS)
    m1 = cluster.members[0]
    p2, dead = free_ports(2)
    second = f"http://127.0.0.2:{p2}"
    advertised = [f"http://127.0.0.1:{dead}", second]
    initial = ",".join([*(f"m1={u}" for u in advertised),
                        *(f"{m.name}={m.peer_url}" for m in cluster.members[1:])])
    cluster.extra_args += ["--initial-cluster", initial]
    cluster.member_args = {"m1": ["--listen-peer-urls", f"{m1.peer_url},{second}",
                                  "--initial-advertise-peer-urls", ",".join(advertised)]}
    with running(cluster):
        ctl = Ctl(cluster.endpoints)
        wait_healthy(ctl)
        ctl.run("put", "/peers/k", "v")
        for ep in cluster.endpoints:  # replicated to every member
            assert Ctl([ep]).out("get", "/peers/k", "--print-value-only").strip() == "v"
        _bad_hello("127.0.0.1", m1.peer_port, "127.0.0.3")
        _bad_hello("127.0.0.2", p2, "127.0.0.4")
        wait_for(lambda: all(f"rejected peer ('{src}'" in open(m1.log_path).read()
                             for src in ("127.0.0.3", "127.0.0.4")), 10.0,
                 what="both peer listeners refusing the foreign hello")
