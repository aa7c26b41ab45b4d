"""Moving data between etcd and raftkv with `etcdctl make-mirror`, as an operator migrating
either way would: the mirror copies the keys under a prefix (a Range at one revision), then
follows the source's Watch from the next revision with Txns on the destination, so live puts
and deletes reach it too. Both directions run with the real etcd 3.4.23 and etcdctl.
"""
import base64
import json

import pytest

from tests.etcdctl.conformance import ETCD, EtcdCluster
from tests.etcdctl.conftest import Background, Ctl, running, wait_for, wait_healthy

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not ETCD, reason="etcd is not installed (tools/install_etcd.sh)")]

DOC = '{"replicas": 3,\n "image": "app:1.2"}'  # a JSON document with a newline


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    cluster = EtcdCluster(str(tmp_path_factory.mktemp("mirror-etcd")), members=1)
    with running(cluster):
        wait_healthy(Ctl(cluster.endpoints))
        yield cluster


def _kvs(ctl, prefix):
    """{key: value} of every key under prefix (bytes, as the JSON output has them)."""
    out = json.loads(ctl.out("get", "--prefix", prefix, "-w", "json"))
    return {base64.b64decode(kv["key"]): base64.b64decode(kv["value"])
            for kv in out.get("kvs", [])}


def _mirror(src, dest, *flags):
    """A background `etcdctl make-mirror` from src's endpoints to dest's first endpoint."""
    return Background(src.popen("make-mirror", *flags, dest.endpoints[0]))


def _until_same(src, src_prefix, dest, dest_prefix, what):
    def same():
        a, b = _kvs(src, src_prefix), _kvs(dest, dest_prefix)
        return {k[len(src_prefix):]: v for k, v in a.items()} == \
            {k[len(dest_prefix):]: v for k, v in b.items()}
    wait_for(same, timeout_s=20, what=what)


def _load(ctl, prefix):
    for i in range(30):
        ctl.out("put", f"{prefix}k{i:02d}", f"v{i}")
    ctl.out("put", f"{prefix}doc", stdin=DOC)  # etcdctl reads a value from stdin
    ctl.out("put", f"{prefix}k00", "v0-again")  # history: the mirror copies the latest
    ctl.out("del", f"{prefix}k01")
    ctl.out("put", "outside/k", "not mirrored")


def _live_changes(ctl, prefix):
    ctl.out("put", f"{prefix}live", "1")
    ctl.out("del", f"{prefix}k02")
    ctl.out("del", "--prefix", f"{prefix}k1")  # k10..k19 in one delete
    ctl.out("txn", stdin=f'\nput {prefix}txn a\nput {prefix}k03 b\n\n\n')


def test_etcd_to_raftkv(etcd, raftkv_cluster):
    src, dest = Ctl(etcd.endpoints), Ctl(raftkv_cluster.endpoints)
    _load(src, "mig/")
    mirror = _mirror(src, dest, "--prefix", "mig/")
    try:
        _until_same(src, b"mig/", dest, b"mig/", "the keys copied to raftkv")
        assert _kvs(dest, b"mig/")[b"mig/doc"] == DOC.encode()
        assert len(_kvs(dest, b"mig/")) == 30  # 30 keys, one deleted, the document
        _live_changes(src, "mig/")
        _until_same(src, b"mig/", dest, b"mig/", "the live changes mirrored to raftkv")
        kvs = _kvs(dest, b"mig/")
        assert kvs[b"mig/live"] == b"1" and kvs[b"mig/k03"] == b"b"
        assert not any(k.startswith(b"mig/k1") for k in kvs)
        assert _kvs(dest, b"outside/") == {}
        assert mirror.proc.poll() is None, mirror.stderr()  # still following the watch
    finally:
        mirror.stop()


def test_raftkv_to_etcd_under_another_prefix(etcd, raftkv_cluster):
    src, dest = Ctl(raftkv_cluster.endpoints), Ctl(etcd.endpoints)
    _load(src, "back/")
    mirror = _mirror(src, dest, "--prefix", "back/", "--dest-prefix", "copy/")
    try:
        _until_same(src, b"back/", dest, b"copy/", "the keys copied to etcd")
        _live_changes(src, "back/")
        _until_same(src, b"back/", dest, b"copy/", "the live changes mirrored to etcd")
        assert _kvs(dest, b"copy/")[b"copy/doc"] == DOC.encode()
        assert mirror.proc.poll() is None, mirror.stderr()
    finally:
        mirror.stop()
