"""The real etcdctl (3.4, Debian's etcd-client; tools/install_etcd.sh installs it) against the
gRPC front end over the fake service: commands succeed and print what they print against etcd.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading

import pytest

from tests.api.conftest import SNAPSHOT_IMAGE, SNAPSHOT_SHA256

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("etcdctl") is None,
                       reason="etcdctl is not installed (run: bash tools/install_etcd.sh)"),
]
RUN_TIMEOUT = 20


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def _argv(server, *args):
    return ["etcdctl", f"--endpoints=127.0.0.1:{server.port}", "--dial-timeout=5s",
            "--command-timeout=10s", *args]


def etcdctl(server, *args, check=True):
    result = subprocess.run(_argv(server, *args), capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, env=_env(), stdin=subprocess.DEVNULL)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def test_put_get_del(grpc_server):
    assert etcdctl(grpc_server, "put", "foo", "bar").stdout == "OK\n"
    assert etcdctl(grpc_server, "put", "foo2", "baz").stdout == "OK\n"
    assert etcdctl(grpc_server, "get", "foo").stdout == "foo\nbar\n"
    assert etcdctl(grpc_server, "get", "foo", "--print-value-only").stdout == "bar\n"
    assert etcdctl(grpc_server, "get", "nothing").stdout == ""
    assert etcdctl(grpc_server, "del", "foo").stdout == "1\n"
    assert etcdctl(grpc_server, "del", "foo").stdout == "0\n"
    assert etcdctl(grpc_server, "get", "--prefix", "foo").stdout == "foo2\nbaz\n"


def test_get_prefix_json(grpc_server):
    for key, value in (("app/a", "1"), ("app/b", "2"), ("other", "3")):
        etcdctl(grpc_server, "put", key, value)
    out = json.loads(etcdctl(grpc_server, "get", "app/", "--prefix", "-w", "json").stdout)
    assert out["header"] == {"cluster_id": 1, "member_id": 1, "revision": 4, "raft_term": 2}
    assert out["count"] == 2
    decoded = [(base64.b64decode(kv["key"]), base64.b64decode(kv["value"]), kv["version"],
                kv["create_revision"]) for kv in out["kvs"]]
    assert decoded == [(b"app/a", b"1", 1, 2), (b"app/b", b"2", 1, 3)]


def test_put_prev_kv_and_error_message(grpc_server):
    etcdctl(grpc_server, "put", "k", "v1")
    assert etcdctl(grpc_server, "put", "k", "v2", "--prev-kv").stdout == "OK\nk\nv1\n"
    result = etcdctl(grpc_server, "put", "k", "v3", "--lease=1234", check=False)
    assert result.returncode != 0
    assert "etcdserver: requested lease not found" in result.stderr


def test_lease_grant_list_keepalive(grpc_server):
    out = etcdctl(grpc_server, "lease", "grant", "10").stdout
    assert out == "lease 00000000000003e8 granted with TTL(10s)\n"
    assert etcdctl(grpc_server, "lease", "list").stdout == "found 1 leases\n00000000000003e8\n"
    out = etcdctl(grpc_server, "lease", "keep-alive", "--once", "3e8").stdout
    assert out == "lease 00000000000003e8 keepalived with TTL(10)\n"
    etcdctl(grpc_server, "put", "leased", "v", "--lease=3e8")
    out = etcdctl(grpc_server, "lease", "timetolive", "3e8", "--keys").stdout
    assert out == ("lease 00000000000003e8 granted with TTL(10s), remaining(10s), "
                   "attached keys([leased])\n")
    assert etcdctl(grpc_server, "lease", "revoke", "3e8").stdout == (
        "lease 00000000000003e8 revoked\n")


def test_endpoint_status_and_health(grpc_server):
    out = etcdctl(grpc_server, "endpoint", "status").stdout
    assert out == f"127.0.0.1:{grpc_server.port}, 1, 3.4.23, 4.1 kB, true, false, 2, 1, 0, \n"
    status = json.loads(etcdctl(grpc_server, "endpoint", "status", "-w", "json").stdout)
    assert status[0]["Status"]["version"] == "3.4.23"
    assert status[0]["Status"]["header"]["member_id"] == 1
    result = etcdctl(grpc_server, "endpoint", "health")
    assert f"127.0.0.1:{grpc_server.port} is healthy" in result.stderr


def test_member_list_and_snapshot(grpc_server, tmp_path):
    out = etcdctl(grpc_server, "member", "list").stdout
    assert out == "1, started, m1, http://127.0.0.1:2380, http://127.0.0.1:2379, false\n"
    path = tmp_path / "snap.db"
    assert etcdctl(grpc_server, "snapshot", "save", str(path)).stdout == (
        f"Snapshot saved at {path}\n")
    # etcdctl checked the trailing SHA-256 (size % 512 == 32) and keeps it in the file.
    assert path.read_bytes() == SNAPSHOT_IMAGE + SNAPSHOT_SHA256


def _line_reader(stream, lines):
    for line in stream:
        lines.put(line.rstrip("\n"))


def test_watch(grpc_server):
    proc = subprocess.Popen(_argv(grpc_server, "watch", "w", "--prefix"), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, env=_env())
    lines = queue.Queue()
    threading.Thread(target=_line_reader, args=(proc.stdout, lines), daemon=True).start()
    try:
        _wait_for_watch(grpc_server)
        etcdctl(grpc_server, "put", "w1", "hello")
        etcdctl(grpc_server, "del", "w1")
        seen = [lines.get(timeout=RUN_TIMEOUT) for _ in range(5)]
        assert seen == ["PUT", "w1", "hello", "DELETE", "w1"]
    finally:
        proc.kill()
        proc.wait(RUN_TIMEOUT)


def _wait_for_watch(server):
    """Until etcdctl's watcher is registered with the service (it created the stream)."""
    for _ in range(200):
        if server.service._watchers:
            return
        threading.Event().wait(0.05)
    raise AssertionError("etcdctl watch never created its watcher")


def test_txn(grpc_server):
    etcdctl(grpc_server, "put", "t", "old")
    script = 'val("t") = "old"\n\nput t new\n\nput t failed\n\n'
    result = subprocess.run(_argv(grpc_server, "txn"), input=script, capture_output=True,
                            text=True, timeout=RUN_TIMEOUT, env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout == "SUCCESS\n\nOK\n"
    result = subprocess.run(_argv(grpc_server, "txn"), input=script, capture_output=True,
                            text=True, timeout=RUN_TIMEOUT, env=_env())
    assert result.stdout == "FAILURE\n\nOK\n"
    assert etcdctl(grpc_server, "get", "t", "--print-value-only").stdout == "failed\n"
