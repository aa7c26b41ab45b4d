"""Disaster recovery and migration with snapshot files, with the real etcd and etcdctl:

- a real etcd's snapshot (etcdctl snapshot save), restored with `raftkvutl snapshot restore`
  once per member, gives a 3-member raftkv cluster with etcd's keys, history, compaction
  point, leases, users, roles and passwords (etcd's bcrypt hashes), and etcd's HashKV;
- a raftkv snapshot saved over the native protocol (`raftkvctl snapshot save`) restores into
  a new raftkv cluster the same way, and, with `etcdctl snapshot restore`, into a real etcd
  whose users log in with the passwords they had in raftkv.
"""
import base64
import json
import re
import subprocess
import sys

import pytest

from raftkv.cli.local_cluster import LocalCluster
from tests.etcdctl.conformance import ETCD, EtcdCluster
from tests.etcdctl.conftest import (FAST_ARGS, Ctl, log_tails, restored_etcd, running,
                                    stop_proc, wait_healthy)

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not ETCD, reason="etcd is not installed (tools/install_etcd.sh)")]

ROOT, ALICE = ("--user", "root:rootpw"), ("--user", "alice:alicepw")
RAFTKV_ARGS = [*FAST_ARGS, "--bcrypt-cost", "4"]


def make_history(ctl):
    """Keys with history, a delete, a compaction, a lease with a key, then users and roles
    and auth on. Returns (lease ID, the compaction revision)."""
    for i in range(6):
        ctl.out("put", f"dr/k{i}", f"v{i}")
    ctl.out("put", "dr/k1", "v1-again")
    ctl.out("del", "dr/k2")
    compacted = json.loads(ctl.out("get", "dr/k1", "-w", "json"))["header"]["revision"]
    ctl.out("put", "dr/k3", "v3-after")  # history above the compaction point
    ctl.out("compaction", str(compacted))
    lease = re.match(r"lease ([0-9a-f]+) granted", ctl.out("lease", "grant", "3600")).group(1)
    ctl.out("put", "dr/leased", "L", f"--lease={lease}")
    ctl.out("put", "dr/doc", json.dumps({"a": [1, 2], "b": "x" * 2000}))
    ctl.out("user", "add", "root:rootpw")
    ctl.out("user", "add", "alice:alicepw")
    ctl.out("role", "add", "dr-reader")
    ctl.out("role", "grant-permission", "dr-reader", "readwrite", "dr/k1", "dr/k4")
    ctl.out("user", "grant-role", "alice", "dr-reader")
    ctl.out("auth", "enable")
    return lease, compacted


def expected(ctl):
    want = json.loads(ctl.out(*ROOT, "get", "", "--prefix", "-w", "json"))
    rev = want["header"]["revision"]
    lines = ctl.out(*ROOT, "endpoint", "hashkv", f"--rev={rev}").splitlines()
    hashes = {ln.split(", ")[1].strip() for ln in lines}
    assert len(lines) == len(ctl.endpoints) and len(hashes) == 1, lines
    return want, rev, hashes.pop()


def check_restored(ctl, want, rev, hashkv, lease, compacted):
    """What the cluster behind ctl must serve after the restore of want's snapshot."""
    got = json.loads(ctl.out(*ROOT, "get", "", "--prefix", "-w", "json"))
    assert got["kvs"] == want["kvs"]  # keys, values, revisions, versions, leases
    assert got["header"]["revision"] == rev
    for ep in ctl.endpoints:  # every member's HashKV of the history, as the source's
        assert ctl.out(*ROOT, "endpoint", "hashkv", f"--rev={rev}",
                       endpoints=[ep]).split(", ")[1].strip() == hashkv
    old = ctl.out(*ROOT, "get", "dr/k3", f"--rev={compacted}", "--print-value-only")
    assert old == "v3\n"  # history at the compaction point
    gone = ctl.run(*ROOT, "get", "dr/k1", f"--rev={compacted - 1}", check=False)
    assert "required revision has been compacted" in gone.stderr
    ttl = json.loads(ctl.out(*ROOT, "lease", "timetolive", lease, "--keys", "-w", "json"))
    assert ttl["granted-ttl"] == 3600
    assert [base64.b64decode(k) for k in ttl["keys"]] == [b"dr/leased"]
    # users, roles and passwords came along
    assert ctl.out(*ALICE, "get", "dr/k1", "--print-value-only") == "v1-again\n"
    denied = ctl.run(*ALICE, "get", "dr/k5", check=False)
    assert "permission denied" in denied.stderr
    wrong = ctl.run("--user", "alice:nope", "get", "dr/k1", check=False)
    assert "authentication failed" in wrong.stderr
    ctl.out(*ALICE, "put", "dr/k1", "written after the restore")
    after = json.loads(ctl.out(*ROOT, "get", "dr/k1", "-w", "json"))
    assert after["kvs"][0]["mod_revision"] == rev + 1  # revisions go on from the snapshot's


def restore_raftkv(path, root, *extra):
    """A 3-member LocalCluster (not started) whose data dirs raftkvutl restored from path."""
    cluster = LocalCluster(str(root), members=3, extra_args=RAFTKV_ARGS, token="restored")
    for m in cluster.members:
        proc = subprocess.run(
            [sys.executable, "-m", "raftkv.utl.main", "snapshot", "restore", str(path),
             "--name", m.name, "--initial-cluster", cluster.initial_cluster,
             "--initial-cluster-token", cluster.token, "--initial-advertise-peer-urls",
             m.peer_url, "--data-dir", m.data_dir, *extra],
            capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert f"into {m.data_dir}: member {m.name}" in proc.stdout
    return cluster


def check_cluster(cluster, want, rev, hashkv, lease, compacted):
    with running(cluster):
        cluster.wait_listening()
        ctl = Ctl(cluster.endpoints)
        try:
            wait_healthy(ctl, user=ROOT)
            members = ctl.out(*ROOT, "member", "list").splitlines()
            assert sorted(ln.split(", ")[2] for ln in members) == ["m1", "m2", "m3"]
            check_restored(ctl, want, rev, hashkv, lease, compacted)
        except BaseException:
            print(log_tails(cluster))
            raise


def test_etcd_snapshot_restores_into_raftkv(tmp_path):
    etcd = EtcdCluster(str(tmp_path / "etcd"), members=1)
    path = tmp_path / "etcd-snap.db"
    with running(etcd):
        ctl = Ctl(etcd.endpoints)
        wait_healthy(ctl)
        lease, compacted = make_history(ctl)
        want, rev, hashkv = expected(ctl)
        ctl.run(*ROOT, "snapshot", "save", str(path), timeout=60)
    cluster = restore_raftkv(path, tmp_path / "raftkv")
    check_cluster(cluster, want, rev, hashkv, lease, compacted)


def test_raftkv_snapshot_restores_into_raftkv_and_etcd(tmp_path):
    src = LocalCluster(str(tmp_path / "src"), members=3, extra_args=RAFTKV_ARGS)
    path = tmp_path / "raftkv-snap.db"
    with running(src):
        src.wait_listening()
        ctl = Ctl(src.endpoints)
        wait_healthy(ctl)
        lease, compacted = make_history(ctl)
        want, rev, hashkv = expected(ctl)
        saved = subprocess.run(
            [sys.executable, "-m", "raftkv.cli.ctl", "--endpoints", src.native_endpoints[1],
             *ROOT, "snapshot", "save", str(path)], capture_output=True, text=True, timeout=60)
        assert saved.returncode == 0 and saved.stdout == f"Snapshot saved at {path}\n", \
            saved.stderr
    # raftkv -> raftkv (the native save, checked by its SHA-256 trailer)
    check_cluster(restore_raftkv(path, tmp_path / "restored"), want, rev, hashkv, lease,
                  compacted)
    # raftkv -> etcd: etcdctl's own restore of the same file; users keep their passwords
    proc, endpoint, log_path = restored_etcd(str(path), tmp_path)
    try:
        ctl = Ctl([endpoint])
        try:
            wait_healthy(ctl, timeout_s=60, user=ROOT)
        except TimeoutError:
            with open(log_path, errors="replace") as f:
                raise AssertionError("restored etcd did not start:\n" + f.read()[-4000:])
        check_restored(ctl, want, rev, hashkv, lease, compacted)
    finally:
        stop_proc(proc, grace_s=10)
