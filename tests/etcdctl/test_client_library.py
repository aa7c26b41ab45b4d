"""A third-party etcd client library from PyPI (aetcd) against a 3-member raftkv cluster:
put, get, prefix, watch, lease and txn (issue #6). It runs in its own process: aetcd carries
its own generated etcd protobuf modules, which cannot share a process with raftkv's."""
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.etcdctl.conftest import Ctl

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SCENARIO = os.path.join(os.path.dirname(__file__), "aetcd_scenario.py")


def test_aetcd_put_get_watch_lease_txn(raftkv_cluster):
    # Only look for it: importing aetcd here would clash with raftkv's protobuf modules.
    if importlib.util.find_spec("aetcd") is None:
        pytest.skip("aetcd is in the test extra: pip install -e '.[test]'")
    host, port = raftkv_cluster.endpoints[1].rsplit(":", 1)  # a member, leader or not
    proc = subprocess.run([sys.executable, SCENARIO, host, port], capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["ALL", "OK"], proc.stdout
    for check in ("put/get ok", "get_prefix ok", "watch ok", "lease ok", "txn ok"):
        assert check in proc.stdout


def test_aetcd_with_auth(raftkv_cluster):
    """aetcd authenticates with a user and password and sends its token: a permitted write
    passes, another is refused, a wrong password fails. Last in the module: auth is turned
    off again at the end."""
    if importlib.util.find_spec("aetcd") is None:
        pytest.skip("aetcd is in the test extra: pip install -e '.[test]'")
    ctl = Ctl(raftkv_cluster.endpoints)
    root = ("--user", "root:rootpw")
    for args in [("user", "add", "root:rootpw"), ("user", "grant-role", "root", "root"),
                 ("user", "add", "alice:alicepw"), ("role", "add", "app"),
                 ("role", "grant-permission", "app", "readwrite", "lib/app/", "--prefix"),
                 ("user", "grant-role", "alice", "app"), ("auth", "enable")]:
        ctl.run(*args)
    try:
        host, port = raftkv_cluster.endpoints[0].rsplit(":", 1)
        proc = subprocess.run([sys.executable, SCENARIO, host, port, "auth"],
                              capture_output=True, text=True, timeout=90)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
        assert proc.stdout.split()[-2:] == ["ALL", "OK"], proc.stdout
        assert "auth ok" in proc.stdout and "bad password refused" in proc.stdout
    finally:
        ctl.run("auth", "disable", *root)
