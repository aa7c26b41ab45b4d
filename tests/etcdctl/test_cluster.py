"""etcdctl member list/add/remove/promote (a learner with only a peer URL, and a real 4th member
started with --initial-cluster-state existing), move-leader."""
import json
import re

import pytest

from raftkv.cli.local_cluster import free_ports
from tests.etcdctl.conftest import (
    Ctl, add_member_process, start_member_process, stop_proc, wait_for)

pytestmark = pytest.mark.timeout(120)

LIST_LINE = re.compile(r"^([0-9a-f]+), (started|unstarted), (\S*), (\S*), (\S*), (true|false)$")


def member_add(ctl, *args):
    """etcd refuses reconfiguration until the leader has seen every member for 5 s
    ("unhealthy cluster"), so a fresh cluster needs a few retries."""
    def attempt():
        proc = ctl.run("member", "add", *args, check=False)
        if proc.returncode == 0:
            return proc.stdout
        assert "unhealthy cluster" in proc.stderr, proc.stderr
        return None
    return wait_for(attempt, 30, 0.5, "member add to be accepted")


def members(ctl):
    return json.loads(ctl.out("member", "list", "-w", "json"))["members"]


def parse_list(out):
    rows = []
    for line in out.splitlines():
        m = LIST_LINE.match(line)
        assert m, f"unexpected member list line {line!r}"
        rows.append(m.groups())
    return rows


def test_member_list_simple_and_table(ctl, raftkv_cluster):
    rows = parse_list(ctl.out("member", "list"))
    assert sorted(r[2] for r in rows) == ["m1", "m2", "m3"]
    by_name = {r[2]: r for r in rows}
    for m in raftkv_cluster.members[:3]:
        r = by_name[m.name]
        assert r[1] == "started" and r[3] == m.peer_url and r[4] == m.client_url
        assert r[5] == "false"
    table = ctl.out("member", "list", "-w", "table").splitlines()
    assert table[1].split("|")[1:-1] == [
        "        ID        ", " STATUS  ", " NAME ", "       PEER ADDRS       ",
        "      CLIENT ADDRS      ", " IS LEARNER "]
    assert len(table) == 3 + 3 + 1


def test_member_add_learner_then_remove(ctl):
    peer = f"http://127.0.0.1:{free_ports(1)[0]}"
    out = member_add(ctl, "ghost", f"--peer-urls={peer}", "--learner")
    m = re.match(r"^Member ([0-9a-f]+) added to cluster ([0-9a-f]+)\n\n"
                 r'ETCD_NAME="ghost"\nETCD_INITIAL_CLUSTER="(.*)"\n'
                 r'ETCD_INITIAL_ADVERTISE_PEER_URLS="(.*)"\n'
                 r'ETCD_INITIAL_CLUSTER_STATE="existing"\n$', out)
    assert m, out
    mid = m.group(1)
    assert f"ghost={peer}" in m.group(3).split(",") and m.group(4) == peer
    rows = {r[0]: r for r in parse_list(ctl.out("member", "list"))}
    assert rows[mid] == (mid, "unstarted", "", peer, "", "true")
    proc = ctl.run("member", "promote", mid, check=False)
    assert proc.returncode != 0
    assert "can only promote a learner member which is in sync with leader" in proc.stderr
    proc = ctl.run("member", "add", "again", f"--peer-urls={peer}", check=False)
    assert proc.returncode != 0
    # etcd 3.4 derives the new ID from the peer URLs and the current second, so within the
    # same second it reports the ID clash before the URL clash.
    assert "Peer URLs already exists" in proc.stderr or \
        "member ID already exist" in proc.stderr, proc.stderr
    out = ctl.out("member", "remove", mid)
    assert re.match(rf"^Member {mid} removed from cluster [0-9a-f]+\n$", out), out
    assert mid not in {r[0] for r in parse_list(ctl.out("member", "list"))}
    proc = ctl.run("member", "remove", mid, check=False)
    assert proc.returncode != 0 and "member not found" in proc.stderr


def test_fourth_member_joins_as_learner_promote_remove(ctl, raftkv_cluster):
    m4 = add_member_process(raftkv_cluster, "m4")
    out = member_add(ctl, "m4", f"--peer-urls={m4.peer_url}", "--learner")
    mid = re.match(r"^Member ([0-9a-f]+) added", out).group(1)
    ctl.out("put", "join/k", "before-join")
    start_member_process(raftkv_cluster, m4)
    ctl4 = Ctl([m4.grpc_endpoint])

    def promoted():
        proc = ctl.run("member", "promote", mid, check=False)
        return proc.returncode == 0 and proc.stdout
    out = wait_for(promoted, 60, 0.5, "the learner to catch up and be promoted")
    assert re.match(rf"^Member {mid} promoted in cluster [0-9a-f]+\n$", out), out
    want = ("started", "m4", m4.peer_url, m4.client_url, "false")

    def published():
        rows = {r[0]: r for r in parse_list(ctl.out("member", "list"))}
        return rows[mid][1:] == want or None
    # a raftkv member may serve before its name and client URLs are published
    # (docs/ETCD_DIFFERENCES.md); etcd publishes first
    wait_for(published, 20, 0.3, f"member list to show {want}")
    wait_for(lambda: ctl4.run("get", "join/k", check=False).stdout, 30, 0.3, "m4 to serve")
    assert ctl4.out("get", "join/k", "--print-value-only") == "before-join\n"
    out = ctl.out("member", "remove", mid)
    assert out.startswith(f"Member {mid} removed from cluster")
    assert len(members(ctl)) == 3
    stop_proc(m4.proc, 15)
    raftkv_cluster.members.remove(m4)


def test_move_leader(ctl, raftkv_cluster):
    status = [json.loads(ctl.out("endpoint", "status", "-w", "json", endpoints=[ep]))[0]
              for ep in raftkv_cluster.endpoints]
    leader = status[0]["Status"]["leader"]
    target = next(s["Status"]["header"]["member_id"] for s in status
                  if s["Status"]["header"]["member_id"] != leader)
    out = ctl.out("move-leader", f"{target:x}", timeout=30)
    assert out == f"Leadership transferred from {leader:x} to {target:x}\n"
    again = json.loads(ctl.out("endpoint", "status", "-w", "json"))
    assert all(s["Status"]["leader"] == target for s in again)
    # moving leadership to the current leader succeeds at once (as in etcd)
    out = ctl.out("move-leader", f"{target:x}")
    assert out == f"Leadership transferred from {target:x} to {target:x}\n"
    proc = ctl.run("move-leader", "abcdef12", check=False)
    assert proc.returncode != 0
