"""etcdctl endpoint health/status/hashkv (--cluster, -w table), alarm list/disarm, defrag,
snapshot save/status/restore against a real 3-member raftkv cluster (restore: into a real
etcd)."""
import base64
import json
import os
import re

import pytest

from raftkv.mvcc import bbolt
from tests.etcdctl.conformance import ETCD
from tests.etcdctl.conftest import Ctl, restored_etcd, stop_proc, wait_healthy

pytestmark = pytest.mark.timeout(90)

HEALTHY = re.compile(r"^(\S+) is healthy: successfully committed proposal: took = \S+$")


def test_endpoint_health(ctl, raftkv_cluster):
    proc = ctl.run("endpoint", "health")
    # etcdctl 3.4 prints the health lines on stderr
    lines = [ln for ln in proc.stderr.splitlines() if "is healthy" in ln]
    assert sorted(HEALTHY.match(ln).group(1) for ln in lines) == sorted(raftkv_cluster.endpoints)


def test_endpoint_health_cluster_table(ctl, raftkv_cluster):
    out = ctl.out("endpoint", "health", "--cluster", "-w", "table")
    lines = out.splitlines()
    assert [c.strip() for c in lines[1].split("|")[1:-1]] == ["ENDPOINT", "HEALTH", "TOOK",
                                                              "ERROR"]
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in lines[3:-1]]
    urls = sorted(m.client_url for m in raftkv_cluster.members)
    assert sorted(r[0] for r in rows) == urls
    assert all(r[1] == "true" and r[3] == "" for r in rows), out


def test_endpoint_health_json(ctl):
    doc = json.loads(ctl.out("endpoint", "health", "-w", "json"))
    assert len(doc) == 3 and all(h["health"] is True for h in doc)
    assert set(doc[0]) >= {"endpoint", "health", "took"}


def test_endpoint_status_table_and_json(ctl, raftkv_cluster):
    lines = ctl.out("endpoint", "status", "--cluster", "-w", "table").splitlines()
    assert [c.strip() for c in lines[1].split("|")[1:-1]] == [
        "ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER", "RAFT TERM",
        "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"]
    rows = [[c.strip() for c in ln.split("|")[1:-1]] for ln in lines[3:-1]]
    assert len(rows) == 3
    assert [r[4] for r in rows].count("true") == 1
    assert {r[2] for r in rows} == {"3.4.23"} and {r[5] for r in rows} == {"false"}
    doc = json.loads(ctl.out("endpoint", "status", "-w", "json"))
    leaders = {d["Status"]["leader"] for d in doc}
    assert len(leaders) == 1 and leaders != {0}
    ids = {d["Status"]["header"]["member_id"] for d in doc}
    assert leaders <= ids and len(ids) == 3
    simple = ctl.out("endpoint", "status").splitlines()
    assert all(re.match(r"^\S+, [0-9a-f]+, 3\.4\.23, [\d.]+ [kMG]?B, (true|false), false, "
                        r"\d+, \d+, \d+, $", ln) for ln in simple), simple


def test_endpoint_hashkv_agrees(ctl):
    ctl.out("put", "hash/k", "v")
    ctl.out("get", "hash/k")  # each member has applied the put once every one answered
    out = ctl.out("endpoint", "hashkv")
    hashes = {ln.split(", ")[1] for ln in out.splitlines()}
    assert len(out.splitlines()) == 3 and len(hashes) == 1, out
    # Before any compaction etcd's compact revision is -1 (its compactMainRev's start).
    if not any(r["HashKV"].get("compact_revision", 0) > 0
               for r in json.loads(ctl.out("endpoint", "hashkv", "-w", "json"))):
        assert all(r["HashKV"]["compact_revision"] == -1
                   for r in json.loads(ctl.out("endpoint", "hashkv", "-w", "json")))


def test_alarm_list_and_disarm_when_none(ctl):
    assert ctl.out("alarm", "list") == ""
    assert ctl.out("alarm", "disarm") == ""
    assert ctl.out("alarm", "list", "-w", "json").strip() == "{}"  # no header, as etcd 3.4


def test_alarm_activate_answers_the_alarm_it_raised(ctl):
    """Maintenance.Alarm ACTIVATE answers with the alarm it raised, as the request named it
    (member ID and type), without a header, and writes are refused until it is disarmed (on
    raftkv it used to list the raised alarms and raise none)."""
    import grpc

    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
    ep = ctl.endpoints[0]
    with grpc.insecure_channel(ep) as channel:
        m = rpc_pb2_grpc.MaintenanceStub(channel)
        me = m.Status(rpc_pb2.StatusRequest(), timeout=10).header.member_id
        try:
            resp = m.Alarm(rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.ACTIVATE,
                                                memberID=me, alarm=rpc_pb2.NOSPACE), timeout=10)
            assert not resp.HasField("header")
            assert [(a.memberID, a.alarm) for a in resp.alarms] == [(me, rpc_pb2.NOSPACE)]
            # raftkv's NOSPACE is cluster-wide, listed under the asked member's ID
            assert ctl.out("alarm", "list", endpoints=[ep]) == f"memberID:{me} alarm:NOSPACE \n"
            put = ctl.run("put", "alarm/k", "v", check=False)
            assert (put.returncode, put.stderr.splitlines()[-1]) == (
                1, "Error: etcdserver: mvcc: database space exceeded")
        finally:
            ctl.out("alarm", "disarm")
    assert ctl.out("alarm", "list") == ""
    ctl.out("put", "alarm/k", "v")


def test_defrag(ctl, raftkv_cluster):
    out = ctl.out("defrag")
    assert out.splitlines() == [f"Finished defragmenting etcd member[{ep}]"
                                for ep in raftkv_cluster.endpoints]
    out = ctl.out("defrag", "--cluster")
    assert sorted(out.splitlines()) == sorted(
        f"Finished defragmenting etcd member[{m.client_url}]" for m in raftkv_cluster.members)


def test_snapshot_save(ctl1, tmp_path):
    ctl1.out("put", "snap/k", "v")
    path = str(tmp_path / "snap.db")
    proc = ctl1.run("snapshot", "save", path, timeout=60)
    assert proc.stdout == f"Snapshot saved at {path}\n"
    size = os.path.getsize(path)
    assert size > 0 and size % 512 == 32  # etcdctl verifies the SHA-256 trailer


def test_snapshot_save_needs_one_endpoint(ctl):
    proc = ctl.run("snapshot", "save", "/nonexistent/x.db", check=False)
    assert proc.returncode != 0
    assert "snapshot must be requested to one selected node" in proc.stderr


def test_snapshot_status_reads_saved_file(ctl1, tmp_path):
    ctl1.out("put", "snapstatus/k", "v")
    path = str(tmp_path / "snap.db")
    before = json.loads(ctl1.out("get", "snapstatus/k", "-w", "json"))["header"]["revision"]
    ctl1.run("snapshot", "save", path, timeout=60)
    after = json.loads(ctl1.out("get", "snapstatus/k", "-w", "json"))["header"]["revision"]
    status = json.loads(ctl1.out("snapshot", "status", path, "-w", "json"))
    # (other tests' leases may expire meanwhile on the shared cluster: a revision in between)
    assert before <= status["revision"] <= after and status["totalKey"] > 0
    # raftkv's own reader of the file agrees with etcdctl's (bbolt's) on all four numbers
    assert status == bbolt.snapshot_status(path)


@pytest.mark.skipif(not ETCD, reason="etcd is not installed (tools/install_etcd.sh)")
@pytest.mark.timeout(150)
def test_snapshot_restore_into_real_etcd(ctl, ctl1, tmp_path):
    """Keys, a lease, a delete and a compaction; snapshot save on one member; etcdctl snapshot
    restore; a real etcd started on the restored data dir serves the same keys, values,
    versions, revisions and lease, and takes new writes."""
    ctl.out("put", "restore/a", "1")
    ctl.out("put", "restore/b", "2")
    ctl.out("put", "restore/a", "3")
    lease = re.match(r"lease ([0-9a-f]+) granted", ctl.out("lease", "grant", "3600")).group(1)
    ctl.out("put", "restore/leased", "L", f"--lease={lease}")
    ctl.out("del", "restore/b")
    deleted_at = json.loads(ctl.out("get", "restore/a", "-w", "json"))["header"]["revision"]
    ctl.out("compaction", str(deleted_at))
    ctl.out("put", "restore/c", "x" * 3000)
    want = json.loads(ctl1.out("get", "", "--prefix", "-w", "json"))
    path = str(tmp_path / "snap.db")
    ctl1.run("snapshot", "save", path, timeout=60)

    status = json.loads(ctl1.out("snapshot", "status", path, "-w", "json"))
    assert status["revision"] == want["header"]["revision"]
    assert status == bbolt.snapshot_status(path)

    proc, endpoint, log_path = restored_etcd(path, tmp_path)
    try:
        restored = Ctl([endpoint])
        try:
            wait_healthy(restored, timeout_s=60)
        except TimeoutError:
            with open(log_path, errors="replace") as f:
                raise AssertionError("restored etcd did not start:\n" + f.read()[-4000:])
        got = json.loads(restored.out("get", "", "--prefix", "-w", "json"))
        assert got["kvs"] == want["kvs"]
        assert got["header"]["revision"] == want["header"]["revision"]
        keys = {base64.b64decode(kv["key"]) for kv in got["kvs"]}
        assert {b"restore/a", b"restore/c", b"restore/leased"} <= keys
        assert b"restore/b" not in keys
        ttl = json.loads(restored.out("lease", "timetolive", lease, "--keys", "-w", "json"))
        assert ttl["granted-ttl"] == 3600
        assert [base64.b64decode(k) for k in ttl["keys"]] == [b"restore/leased"]
        old = restored.run("get", "restore/a", f"--rev={deleted_at - 1}", check=False)
        assert "required revision has been compacted" in old.stderr
        # etcd's HashKV over the restored "key" bucket equals raftkv's over its own history
        assert restored.out("endpoint", "hashkv").split(", ")[1] == \
            ctl1.out("endpoint", "hashkv").split(", ")[1]
        restored.out("put", "restore/after", "new")  # the restored member applies new writes
        assert restored.out("get", "restore/after", "--print-value-only") == "new\n"
    finally:
        stop_proc(proc, grace_s=10)
    # raftkv's reader on a file bbolt itself wrote (etcd's NoFreelistSync: no freelist page)
    db = str(tmp_path / "restored.etcd" / "member" / "snap" / "db")
    with bbolt.Reader(db) as r:
        assert r.check() == [] and r.meta["freelist"] == bbolt.NO_FREELIST
    assert bbolt.snapshot_status(db) == json.loads(
        Ctl([]).out("snapshot", "status", db, "-w", "json"))
