"""etcdctl member list/add/remove/promote (a learner with only a peer URL, and a real 4th member
started with --initial-cluster-state existing), move-leader."""
import io
import json
import re

import pytest

from raftkv.cli.local_cluster import free_ports
from tests.etcdctl.conftest import (
    TARGET, Ctl, add_member_process, start_member_process, stop_proc, wait_for)

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
    # etcdctl prints IDs as %16x: an ID below 2**60 is padded with spaces
    m = re.match(r"^Member +([0-9a-f]+) added to cluster +([0-9a-f]+)\n\n"
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
    # etcd 3.4 admits one learner at a time (maxLearners)
    other = f"http://127.0.0.1:{free_ports(1)[0]}"
    proc = ctl.run("member", "add", "second", f"--peer-urls={other}", "--learner", check=False)
    assert proc.returncode != 0
    assert "etcdserver: too many learner members in cluster" in proc.stderr, proc.stderr
    proc = ctl.run("member", "add", "again", f"--peer-urls={peer}", check=False)
    assert proc.returncode != 0
    # etcd 3.4 derives the new ID from the peer URLs and the current second, so within the
    # same second it reports the ID clash before the URL clash.
    assert "Peer URLs already exists" in proc.stderr or \
        "member ID already exist" in proc.stderr, proc.stderr
    out = ctl.out("member", "remove", mid)
    assert re.match(rf"^Member {int(mid, 16):16x} removed from cluster [ 0-9a-f]{{16}}\n$",
                    out), out
    assert mid not in {r[0] for r in parse_list(ctl.out("member", "list"))}
    proc = ctl.run("member", "remove", mid, check=False)
    assert proc.returncode != 0 and "member not found" in proc.stderr


def test_fourth_member_joins_as_learner_promote_remove(ctl, raftkv_cluster):
    m4 = add_member_process(raftkv_cluster, "m4")
    out = member_add(ctl, "m4", f"--peer-urls={m4.peer_url}", "--learner")
    mid = re.match(r"^Member +([0-9a-f]+) added", out).group(1)
    ctl.out("put", "join/k", "before-join")
    start_member_process(raftkv_cluster, m4)
    ctl4 = Ctl([m4.grpc_endpoint])

    def promoted():
        proc = ctl.run("member", "promote", mid, check=False)
        return proc.returncode == 0 and proc.stdout
    out = wait_for(promoted, 60, 0.5, "the learner to catch up and be promoted")
    assert re.match(rf"^Member {int(mid, 16):16x} promoted in cluster [ 0-9a-f]{{16}}\n$",
                    out), out
    want = ("started", "m4", m4.peer_url, m4.client_url, "false")

    def published():
        rows = {r[0]: r for r in parse_list(ctl.out("member", "list"))}
        return rows[mid][1:] == want or None
    # a raftkv member may serve before its name and client URLs are published
    # (docs/ETCD_DIFFERENCES.md); etcd publishes first
    wait_for(published, 20, 0.3, f"member list to show {want}")
    wait_for(lambda: ctl4.run("get", "join/k", check=False).stdout, 30, 0.3, "m4 to serve")
    assert ctl4.out("get", "join/k", "--print-value-only") == "before-join\n"
    # the added member answers with the cluster's ID, not one derived from its own flags
    head = json.loads(ctl.out("get", "join/k", "-w", "json"))["header"]
    head4 = json.loads(ctl4.out("get", "join/k", "-w", "json"))["header"]
    assert head4["cluster_id"] == head["cluster_id"], (head4, head)
    out = ctl.out("member", "remove", mid)
    assert out.startswith(f"Member {int(mid, 16):16x} removed from cluster")
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


def _by_name(cluster, name):  # LocalCluster or EtcdCluster
    return next(m for m in cluster.members if m.name == name)


def _member_ids(ctl):
    return {m["name"]: m["ID"] for m in members(ctl)}


def _peer_urls_everywhere(cluster, mid, want, timeout_s=20, skip=None):
    """Until member list on every running member (but skip) shows want as mid's peer URLs."""
    def ok():
        for m in cluster.members:
            if not m.alive() or m is skip:
                continue
            proc = Ctl([m.grpc_endpoint]).run("member", "list", "-w", "json", check=False)
            if proc.returncode != 0:
                return False
            listed = {x["ID"]: x for x in json.loads(proc.stdout)["members"]}
            if listed.get(mid, {}).get("peerURLs") != want:
                return False
        return True
    wait_for(ok, timeout_s, 0.2, f"every member to list {mid:x} with peer URLs {want}")


def test_member_update_peer_urls_and_errors(ctl, raftkv_cluster):
    # a follower: the leader moved to an address nobody listens on would lose its quorum
    leader = json.loads(ctl.out("endpoint", "status", "-w", "json"))[0]["Status"]["leader"]
    ids = _member_ids(ctl)
    name = next(n for n in ("m3", "m2") if ids[n] != leader)
    moved, mid = _by_name(raftkv_cluster, name), ids[name]
    # the moved member no longer hears from the leader: ask the others
    others = Ctl([m.grpc_endpoint for m in raftkv_cluster.members if m is not moved])
    other = f"http://127.0.0.1:{free_ports(1)[0]}"
    out = others.out("member", "update", f"{mid:x}", f"--peer-urls={other}")
    assert re.match(rf"^Member {mid:16x} updated in cluster [ 0-9a-f]{{16}}\n$", out), out
    _peer_urls_everywhere(raftkv_cluster, mid, [other], skip=moved)
    # the JSON answer carries the header and the member list
    resp = json.loads(others.out("member", "update", f"{mid:x}", f"--peer-urls={other}",
                                 "-w", "json"))
    assert resp["header"]["cluster_id"] and resp["header"]["member_id"]
    assert {m["ID"]: m["peerURLs"] for m in resp["members"]}[mid] == [other]
    unused = f"http://127.0.0.1:{free_ports(1)[0]}"
    proc = others.run("member", "update", "abcdef12", f"--peer-urls={unused}", check=False)
    assert proc.returncode != 0
    assert "Error: etcdserver: member not found" in proc.stderr, proc.stderr
    m1_url = _by_name(raftkv_cluster, "m1").peer_url
    proc = others.run("member", "update", f"{mid:x}", f"--peer-urls={m1_url}", check=False)
    assert proc.returncode != 0
    assert "Error: etcdserver: Peer URLs already exists" in proc.stderr, proc.stderr
    _peer_urls_everywhere(raftkv_cluster, mid, [other], skip=moved)
    # back to where it listens: it is reachable again, learns the change, serves reads
    others.out("member", "update", f"{mid:x}", f"--peer-urls={moved.peer_url}")
    _peer_urls_everywhere(raftkv_cluster, mid, [moved.peer_url], timeout_s=30)
    others.out("put", "upd/k", "v1")
    ctl_moved = Ctl([moved.grpc_endpoint])
    wait_for(lambda: ctl_moved.run("get", "upd/k", "--print-value-only", check=False).stdout
             == "v1\n", 30, 0.3, "the member to serve the write")


def test_member_update_then_restart_on_new_port(ctl, raftkv_cluster):
    """Stop m3, move its peer URL to a freshly probed port, write meanwhile, restart it
    listening there (--initial-cluster-state existing): it catches up."""
    m3 = _by_name(raftkv_cluster, "m3")
    mid = _member_ids(ctl)["m3"]
    others = Ctl([m.grpc_endpoint for m in raftkv_cluster.members if m is not m3])
    stop_proc(m3.proc, 15)
    new_port = free_ports(1)[0]
    new_url = f"http://127.0.0.1:{new_port}"

    def update():  # m3 may have been the leader: the first tries may meet an election
        proc = others.run("member", "update", f"{mid:x}", f"--peer-urls={new_url}",
                          check=False)
        if proc.returncode == 0:
            return proc.stdout
        assert "leader" in proc.stderr or "timed out" in proc.stderr, proc.stderr
        return None
    out = wait_for(update, 30, 0.5, "member update to be accepted")
    assert out.startswith(f"Member {mid:16x} updated in cluster"), out
    for i in range(20):
        others.out("put", f"moved/{i:02d}", f"v{i}")
    rows = {r[0]: r for r in parse_list(others.out("member", "list"))}
    assert rows[f"{mid:x}"][3] == new_url
    m3.peer_port = new_port
    start_member_process(raftkv_cluster, m3)
    ctl3 = Ctl([m3.grpc_endpoint])

    def caught_up():
        proc = ctl3.run("get", "moved/19", "--print-value-only", check=False)
        return proc.returncode == 0 and proc.stdout == "v19\n"
    wait_for(caught_up, 60, 0.5, "the restarted m3 to catch up")
    got = ctl3.out("get", "moved/", "--prefix", "--print-value-only").split()
    assert got == [f"v{i}" for i in range(20)]
    # its ID is unchanged and every member (itself included) lists the new peer URL
    assert _member_ids(ctl3)["m3"] == mid
    _peer_urls_everywhere(raftkv_cluster, mid, [new_url])
    # writes through the moved member replicate to the others
    ctl3.out("put", "moved/back", "x")
    assert others.out("get", "moved/back", "--print-value-only") == "x\n"
    wait_for(lambda: ctl.run("endpoint", "health", check=False).returncode == 0, 30, 0.5,
             "every endpoint healthy")


@pytest.mark.skipif(TARGET == "etcd", reason="raftkvctl speaks raftkv's native protocol")
def test_raftkvctl_member_update(ctl, raftkv_cluster, capsys):
    from raftkv.cli import ctl as raftkvctl

    def run(*argv):
        out = io.StringIO()
        eps = ",".join(raftkv_cluster.native_endpoints)
        rc = raftkvctl.main(["--endpoints", eps, *argv], out=out)
        return rc, out.getvalue(), capsys.readouterr().err
    m2 = _by_name(raftkv_cluster, "m2")
    mid = _member_ids(ctl)["m2"]
    # to the URL it already has: accepted through the log, nothing moves
    rc, out, _ = run("member", "update", f"{mid:x}", f"--peer-urls={m2.peer_url}")
    assert rc == 0 and re.match(rf"^Member {mid:16x} updated in cluster [ 0-9a-f]{{16}}\n$",
                                out), out
    rc, out, _ = run("-w", "json", "member", "update", f"{mid:x}", f"--peer-urls={m2.peer_url}")
    assert rc == 0 and {m["ID"]: m["peerURLs"] for m in json.loads(out)["members"]}[mid] == \
        [m2.peer_url]
    rc, _, err = run("member", "update", "abcdef12", "--peer-urls=http://127.0.0.1:1")
    assert rc == 1 and err == "Error: etcdserver: member not found\n"
    m1_url = _by_name(raftkv_cluster, "m1").peer_url
    rc, _, err = run("member", "update", f"{mid:x}", f"--peer-urls={m1_url}")
    assert rc == 1 and err == "Error: etcdserver: Peer URLs already exists\n"
    # refused by raftkvctl before sending, as by etcdctl (clientv3's check)
    rc, _, err = run("member", "update", f"{mid:x}", "--peer-urls=nope")
    assert rc == 1 and err == "Error: URL scheme must be http, https, unix, or unixs: nope\n"
    # a URL clientv3 lets through but no member could dial: the server refuses it
    rc, _, err = run("member", "update", f"{mid:x}", "--peer-urls=http://127.0.0.1:99999")
    assert rc == 1 and err == "Error: etcdserver: given member URLs are invalid\n"
    rc, _, err = run("member", "update", f"{mid:x}")
    assert rc == 128 and err == "Error: member peer urls not provided\n"
    _peer_urls_everywhere(raftkv_cluster, mid, [m2.peer_url])
