"""--grpc-workers (raftkv/api/etcd/workers.py): the etcd gRPC API served by child processes
sharing the client port. The whole etcdctl suite also runs with RAFTKV_GRPC_WORKERS=2; this
file checks what is particular to the workers: they are the member's children, serve every
connection, come back when one dies, stop with the member, and a taken port fails the start."""
import os
import signal
import socket
import subprocess
import sys

import pytest

from raftkv.cli.local_cluster import LocalCluster, free_ports
from tests.etcdctl.conftest import ETCDCTL, FAST_ARGS, TARGET, Ctl, running, wait_for

pytestmark = pytest.mark.skipif(ETCDCTL is None or TARGET != "raftkv",
                                reason="needs etcdctl and a raftkv target")
WORKERS = 2


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return sorted(int(x) for x in f.read().split())
    except OSError:
        return []


@pytest.fixture
def member(tmp_path):
    cluster = LocalCluster(str(tmp_path), members=1,
                           extra_args=FAST_ARGS + ["--grpc-workers", str(WORKERS)])
    with running(cluster):
        cluster.wait_listening()
        # The port listens once the first worker does; the member is ready when all are.
        wait_for(lambda: "ready: etcd gRPC" in _log(cluster.members[0]), 30.0)
        yield cluster


def test_workers_serve_every_etcdctl_connection(member):
    m = member.members[0]
    ctl = Ctl(member.endpoints)
    wait_for(lambda: ctl.run("endpoint", "health", check=False).returncode == 0, 20.0)
    assert len(children(m.pid)) == WORKERS
    for i in range(12):  # each etcdctl run is a new connection: the kernel spreads them
        ctl.run("put", f"k{i}", f"v{i}")
    assert ctl.out("get", "k", "--prefix", "--keys-only").split() == sorted(
        f"k{i}" for i in range(12))
    status = ctl.out("endpoint", "status", "-w", "json")
    assert '"leader"' in status


def test_hash_through_the_workers_covers_the_last_put(member):
    """Maintenance.Hash (python-etcd3's hash()) through a worker: the worker reaches the
    member over the native protocol, which once refused the op (UNIMPLEMENTED); like etcd's,
    the hash covers every write acknowledged before it."""
    import grpc

    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
    ctl = Ctl(member.endpoints)
    wait_for(lambda: ctl.run("endpoint", "health", check=False).returncode == 0, 20.0)
    with grpc.insecure_channel(member.endpoints[0]) as channel:
        maintenance, kv = rpc_pb2_grpc.MaintenanceStub(channel), rpc_pb2_grpc.KVStub(channel)
        for i in range(3):
            before = maintenance.Hash(rpc_pb2.HashRequest(), timeout=10.0).hash
            put = kv.Put(rpc_pb2.PutRequest(key=b"h", value=b"%d" % i), timeout=10.0)
            after = maintenance.Hash(rpc_pb2.HashRequest(), timeout=10.0)
            assert after.hash != before
            assert after.header.revision == put.header.revision


def test_a_dead_worker_is_restarted_and_the_member_stops_them_all(member):
    m = member.members[0]
    ctl = Ctl(member.endpoints)
    wait_for(lambda: len(children(m.pid)) == WORKERS, 20.0)
    before = children(m.pid)
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: len(children(m.pid)) == WORKERS and children(m.pid) != before, 20.0)
    wait_for(lambda: ctl.run("put", "after", "restart", check=False).returncode == 0, 20.0)
    assert ctl.out("get", "after", "--print-value-only").strip() == "restart"
    workers = children(m.pid)
    assert member.stop_member(m) == 0
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid), f"worker {pid} survived"


def _log(m):
    with open(m.log_path, errors="replace") as f:
        return f.read()


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_client_port_taken_without_reuseport_fails_the_start(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    peer, native = free_ports(2)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "raftkv", "--name", "x", "--data-dir", str(tmp_path / "x"),
             "--listen-client-urls", f"http://127.0.0.1:{port}",
             "--listen-native-urls", f"http://127.0.0.1:{native}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--grpc-workers", "1"], capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "cannot start" in proc.stderr


def test_watches_through_the_workers_are_checked_and_delivered(member):
    """A worker's watch asks the member first (the watch_check op) whether its user may
    create it, as etcd does: allowed, it delivers events; with auth on and no token, it is
    refused at once (watch_id -1, created and canceled)."""
    import grpc

    from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
    ctl = Ctl(member.endpoints)
    wait_for(lambda: ctl.run("endpoint", "health", check=False).returncode == 0, 20.0)

    def first_two(key, then=None):
        with grpc.insecure_channel(member.endpoints[0]) as channel:
            create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=key))
            stream = rpc_pb2_grpc.WatchStub(channel).Watch(iter([create]), timeout=10.0)
            try:
                first = next(stream)
                if then:
                    then()
                return first, (next(stream) if not first.canceled else None)
            finally:
                stream.cancel()

    created, event = first_two(b"w", lambda: ctl.run("put", "w", "1"))
    assert created.created and not created.canceled and created.watch_id == 0
    assert event.events[0].kv.value == b"1"
    ctl.run("user", "add", "root:pw")
    ctl.run("auth", "enable")
    refused, _ = first_two(b"w")
    assert (refused.watch_id, refused.created, refused.canceled) == (-1, True, True)
    assert refused.cancel_reason == \
        "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
