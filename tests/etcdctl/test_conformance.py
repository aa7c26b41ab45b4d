"""The conformance runner (tests/etcdctl/conformance.py): the same etcdctl scenarios against a
real etcd 3-member cluster and a raftkv 3-member cluster; outputs must match after
normalisation, except the differences listed (with reasons) in KNOWN_DIFFERENCES."""
import shutil

import pytest

from raftkv.cli.local_cluster import LocalCluster
from tests.etcdctl import conformance
from tests.etcdctl.conftest import FAST_ARGS, Ctl, running, wait_healthy, wait_published

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(not shutil.which("etcd"), reason="etcd is not installed")]


def _results(cluster, root):
    with running(cluster):
        wait_healthy(Ctl(cluster.endpoints))
        wait_published(Ctl(cluster.endpoints), 3)
        return conformance.run_scenarios(Ctl, cluster.endpoints, str(root))


def test_etcdctl_outputs_match_etcd(tmp_path):
    etcd = _results(conformance.EtcdCluster(str(tmp_path / "etcd")), tmp_path / "etcd")
    raftkv = _results(LocalCluster(str(tmp_path / "raftkv"), members=3, extra_args=FAST_ARGS),
                      tmp_path / "raftkv")
    assert [n for n, _ in etcd] == [s.name for s in conformance.SCENARIOS]
    unexpected, stale = conformance.compare(etcd, raftkv)
    report = "".join(f"\n=== {name}\n--- etcd\n{want}\n--- raftkv\n{got}"
                     for name, want, got in unexpected)
    assert not unexpected, f"etcdctl output differs from etcd's:{report}"
    assert not stale, f"listed in KNOWN_DIFFERENCES but now the same: {[s[0] for s in stale]}"


def test_normalise_keeps_what_matters():
    ids = {}
    a = conformance.normalise('lease 694d77aa granted with TTL(60s)\n{"level":"warn"}', ids)
    assert a == "lease 694d77aa granted with TTL(60s)" and not ids  # TTLs are compared
    assert conformance.normalise("| true | 7.4ms | |", ids) == "| true | <DUR> | |"
    b = conformance.normalise("lease 694d77aa9b0c1d2e granted", ids)
    c = conformance.normalise("lease 694d77aa9b0c1d2e revoked, other 1111111111111111", ids)
    assert b == "lease <ID1> granted" and c == "lease <ID1> revoked, other <ID2>"
    # a lock key prints its lease ID with %x, lease revoke with %016x: the same ID
    assert conformance.normalise("c/lock/b27a21cb5973414, 0b27a21cb5973414", ids) == \
        "c/lock/<ID3>, <ID3>"
    assert conformance.normalise("a\nb=127.0.0.1:2379", {}) == "a\nb=127.0.0.1:<PORT>"
