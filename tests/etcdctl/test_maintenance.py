"""etcdctl endpoint health/status/hashkv (--cluster, -w table), alarm list/disarm, defrag,
snapshot save against a real 3-member raftkv cluster."""
import json
import os
import re

import pytest

from tests.etcdctl.conftest import TARGET

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


def test_alarm_list_and_disarm_when_none(ctl):
    assert ctl.out("alarm", "list") == ""
    assert ctl.out("alarm", "disarm") == ""


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


@pytest.mark.xfail(TARGET == "raftkv", strict=True,
                   reason="raftkv's snapshot image is its own chunk format (raftkv/mvcc/"
                   "snapshot.py), not a bbolt file: etcdctl snapshot status/restore cannot "
                   "read it. See docs/ETCD_DIFFERENCES.md")
def test_snapshot_status_reads_saved_file(ctl1, tmp_path):
    path = str(tmp_path / "snap.db")
    ctl1.run("snapshot", "save", path, timeout=60)
    out = ctl1.out("snapshot", "status", path, "-w", "json")
    assert json.loads(out)["totalKey"] > 0
