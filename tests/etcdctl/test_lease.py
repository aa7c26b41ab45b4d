"""etcdctl lease grant / revoke / keep-alive (--once) / timetolive / list, put --lease; and
raftkvctl's lease keep-alive of a lease that is gone, compared with etcdctl's."""
import re
import subprocess
import sys
import time

import pytest

from tests.etcdctl.conftest import TARGET, Background, wait_for

pytestmark = pytest.mark.timeout(90)

GRANTED = re.compile(r"^lease ([0-9a-f]+) granted with TTL\((\d+)s\)\n$")


def grant(ctl, ttl):
    out = ctl.out("lease", "grant", str(ttl))
    m = GRANTED.match(out)
    assert m, out
    assert int(m.group(2)) == ttl
    return m.group(1)


def test_grant_list_revoke(ctl):
    lid = grant(ctl, 60)
    out = ctl.out("lease", "list")
    assert re.match(r"^found \d+ leases\n", out)
    assert lid in out.splitlines()[1:]
    assert ctl.out("lease", "revoke", lid) == f"lease {lid} revoked\n"
    assert lid not in ctl.out("lease", "list").splitlines()[1:]
    proc = ctl.run("lease", "revoke", lid, check=False)
    assert proc.returncode != 0 and "requested lease not found" in proc.stderr


def test_put_with_lease_and_timetolive_keys(ctl):
    lid = grant(ctl, 60)
    assert ctl.out("put", "lease/a", "1", f"--lease={lid}") == "OK\n"
    assert ctl.out("put", "lease/b", "2", "--lease", lid) == "OK\n"
    out = ctl.out("lease", "timetolive", lid)
    m = re.match(rf"^lease {lid} granted with TTL\(60s\), remaining\((\d+)s\)\n$", out)
    assert m and 50 <= int(m.group(1)) <= 60, out
    out = ctl.out("lease", "timetolive", lid, "--keys")
    m = re.match(rf"^lease {lid} granted with TTL\(60s\), remaining\(\d+s\), "
                 r"attached keys\(\[(.*)\]\)\n$", out)
    assert m and sorted(m.group(1).split()) == ["lease/a", "lease/b"], out
    ctl.out("lease", "revoke", lid)
    assert ctl.out("get", "lease/", "--prefix") == ""
    out = ctl.out("lease", "timetolive", lid)
    assert out == f"lease {lid} already expired\n"


def test_put_with_unknown_lease_fails(ctl):
    proc = ctl.run("put", "lease/x", "1", "--lease=1234abcd", check=False)
    assert proc.returncode != 0 and "requested lease not found" in proc.stderr


def test_keep_alive_once(ctl):
    lid = grant(ctl, 60)
    out = ctl.out("lease", "keep-alive", "--once", lid)
    assert out == f"lease {lid} keepalived with TTL(60)\n"
    ctl.out("lease", "revoke", lid)


def test_keep_alive_streams_and_lease_expires(ctl, background):
    lid = grant(ctl, 5)
    ctl.out("put", "lease/ka", "v", f"--lease={lid}")
    bg = background("lease", "keep-alive", lid)
    bg.wait_output(lambda t: t.count("keepalived") >= 1, 15)
    assert bg.lines[0] == f"lease {lid} keepalived with TTL(5)"
    time.sleep(6.5)  # longer than the TTL: the keep-alives keep it
    assert ctl.out("get", "lease/ka", "--print-value-only") == "v\n"
    bg.stop()
    deadline = time.monotonic() + 20
    while ctl.out("get", "lease/ka") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ctl.out("get", "lease/ka") == "", "the key outlived its lease"
    assert ctl.out("lease", "timetolive", lid) == f"lease {lid} already expired\n"


# ------------------------------------------------------------------ a lease that is gone

def gone_leases(ctl):
    """(a lease that expired, a lease that was revoked)."""
    expired = grant(ctl, 2)
    revoked = grant(ctl, 60)
    ctl.out("lease", "revoke", revoked)
    wait_for(lambda: ctl.out("lease", "timetolive", expired) ==
             f"lease {expired} already expired\n", 30, 0.2, "the 2 s lease to expire")
    return expired, revoked


KEEP_ALIVE_GONE = [  # (flags, exit status, stdout, stderr) as etcdctl 3.4.23 gives them
    ((), 0, "lease {lid} expired or revoked.\n", ""),
    (("-w", "json"), 0, "", ""),
    (("--once",), 2, "", "Error: etcdserver: requested lease not found\n"),
    (("-w", "json", "--once"), 2, "", "Error: etcdserver: requested lease not found\n"),
]


def check_gone(run, lid):
    for flags, rc, out, err in KEEP_ALIVE_GONE:
        fmt = [f for f in flags if f != "--once"]
        p = run(*fmt, "lease", "keep-alive", *[f for f in flags if f == "--once"], lid)
        assert (p.returncode, p.stdout, p.stderr) == (rc, out.format(lid=lid), err), flags


def test_keep_alive_of_an_expired_or_revoked_lease(ctl):
    for lid in gone_leases(ctl):
        check_gone(lambda *a: ctl.run(*a, check=False), lid)


def stream_until_revoked(ctl, proc):
    """proc keeps a 3 s lease alive; revoke it after the first answer: proc must end on its
    own, exit 0."""
    bg = Background(proc)
    try:
        bg.wait_output(lambda t: "keepalived" in t, 15, "the first keep-alive")
        lid = bg.lines[0].split()[1]
        ctl.out("lease", "revoke", lid)
        assert proc.wait(timeout=15) == 0
    finally:
        bg.stop()
    return lid, bg.lines, bg.stderr()


def test_keep_alive_ends_when_the_lease_is_revoked(ctl):
    lid = grant(ctl, 3)
    lid, lines, err = stream_until_revoked(ctl, ctl.popen("lease", "keep-alive", lid))
    assert lines[0] == f"lease {lid} keepalived with TTL(3)" and err == ""
    assert lines[-1] == f"lease {lid} expired or revoked."
    assert all(ln == lines[0] for ln in lines[:-1]), lines


@pytest.mark.skipif(TARGET == "etcd", reason="raftkvctl speaks raftkv's native protocol")
def test_raftkvctl_keep_alive_of_a_lease_that_is_gone_matches_etcdctl(ctl, raftkv_cluster):
    def raftkvctl(*args):
        return [sys.executable, "-m", "raftkv.cli.ctl", "--endpoints",
                ",".join(raftkv_cluster.native_endpoints), "--command-timeout", "5", *args]

    def run(*args):
        return subprocess.run(raftkvctl(*args), capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)

    for lid in gone_leases(ctl):
        check_gone(run, lid)
    lid = grant(ctl, 3)
    proc = subprocess.Popen(raftkvctl("lease", "keep-alive", lid), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    lid, lines, err = stream_until_revoked(ctl, proc)
    assert lines[0] == f"lease {lid} keepalived with TTL(3)" and err == "", (lines, err)
    assert lines[-1] == f"lease {lid} expired or revoked."


def test_lease_answers_carry_the_asking_members_revision(raftkv_cluster):
    """On every member (followers forward TimeToLive and KeepAlive to the leader), a lease
    answer right after a put on that member carries the put's revision, as etcd's v3rpc
    fills the header where the client asked. Found by tests/etcdctl/differential.py: the
    forwarded answer had the leader's header, which could lag by the leader's store round."""
    import grpc

    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
    for endpoint in raftkv_cluster.endpoints:
        with grpc.insecure_channel(endpoint) as channel:
            kv, lease = rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.LeaseStub(channel)
            lid = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10).ID
            for i in range(10):
                rev = kv.Put(rpc_pb2.PutRequest(key=b"hdr/k", value=b"%d" % i, lease=lid),
                             timeout=10).header.revision
                ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid),
                                            timeout=10)
                assert ttl.header.revision == rev
                rev = kv.Put(rpc_pb2.PutRequest(key=b"hdr/k", value=b"x"),
                             timeout=10).header.revision
                leases = lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest(), timeout=10)
                assert leases.header.revision == rev
            lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid), timeout=10)


def test_time_to_live_sees_every_write_the_asked_member_acknowledged(raftkv_cluster):
    """TimeToLive right after writes acknowledged by the member asked (a follower forwards
    it to the leader, which may not have applied them yet): a lease revoked and granted
    again with another TTL shows the new TTL, not the old lease's deadline, and a key moved
    off the lease is no longer listed. Found by tests/etcdctl/differential.py (seeds 103 and
    111): the leader answered from before the writes."""
    import grpc

    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
    for n, endpoint in enumerate(raftkv_cluster.endpoints):
        with grpc.insecure_channel(endpoint) as channel:
            kv, lease = rpc_pb2_grpc.KVStub(channel), rpc_pb2_grpc.LeaseStub(channel)
            lid = 0x7700 + n
            for i in range(5):
                lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=lid, TTL=3000), timeout=10)
                kv.Put(rpc_pb2.PutRequest(key=b"ttl/k", lease=lid), timeout=10)
                kv.Put(rpc_pb2.PutRequest(key=b"ttl/k"), timeout=10)
                lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid), timeout=10)
                lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(ID=lid, TTL=60), timeout=10)
                kv.Put(rpc_pb2.PutRequest(key=b"ttl/k", lease=lid), timeout=10)
                kv.Put(rpc_pb2.PutRequest(key=b"ttl/k", value=b"off"), timeout=10)
                ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=lid, keys=True),
                                            timeout=10)
                assert (ttl.grantedTTL, list(ttl.keys)) == (60, [])
                assert 55 <= ttl.TTL <= 60, (endpoint, i, ttl)
                lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=lid), timeout=10)
