"""Fixtures for the etcdctl acceptance tests: the real `etcdctl` (ETCDCTL_API=3) against a real
3-member raftkv cluster (one per test module, raftkv.cli.local_cluster).

With RAFTKV_ETCDCTL_TARGET=etcd the same tests run against a real etcd 3-member cluster instead
(tests/etcdctl/conformance.py EtcdCluster): that is how the expected outputs were checked.

Every process is stopped by PID at teardown. Every etcdctl call has a deadline (`Ctl.run`
timeout), and every test a pytest-timeout bound (see the module-level `pytestmark`).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from raftkv.cli.local_cluster import LocalCluster, free_ports
from raftkv.cli.local_cluster import Member as LocalMember
from tests.etcdctl.conformance import ETCD, EtcdCluster, add_etcd_member, start_etcd_member

FAST_ARGS = ["--heartbeat-interval", "50", "--election-timeout", "500"]
ETCDCTL = shutil.which("etcdctl")
LOG_TAIL_BYTES = 6000
TARGET = os.environ.get("RAFTKV_ETCDCTL_TARGET", "raftkv")


def pytest_collection_modifyitems(config, items):
    if ETCDCTL:
        return
    skip = pytest.mark.skip(reason="etcdctl is not installed (tools/install_etcd.sh)")
    for item in items:
        if "tests/etcdctl" in str(item.fspath):
            item.add_marker(skip)


class Ctl:
    """Runs etcdctl against a list of endpoints, with a deadline per call."""

    def __init__(self, endpoints):
        self.endpoints = list(endpoints)

    def env(self):
        env = dict(os.environ)
        env["ETCDCTL_API"] = "3"
        for k in list(env):
            if k.startswith("ETCDCTL_") and k != "ETCDCTL_API":
                del env[k]
        return env

    def argv(self, args, endpoints=None):
        eps = self.endpoints if endpoints is None else endpoints
        return [ETCDCTL, "--endpoints", ",".join(eps), "--command-timeout=5s",
                "--dial-timeout=3s", *args]

    def run(self, *args, stdin=None, timeout=20.0, check=True, endpoints=None):
        """Run etcdctl; returns CompletedProcess (text). check=True asserts exit 0."""
        proc = subprocess.run(self.argv(args, endpoints), input=stdin, capture_output=True,
                              text=True, timeout=timeout, env=self.env())
        if check:
            assert proc.returncode == 0, (
                f"etcdctl {' '.join(args)} exited {proc.returncode}\n"
                f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def out(self, *args, **kw):
        return self.run(*args, **kw).stdout

    def popen(self, *args, endpoints=None):
        """A background etcdctl (watch, lock, elect); the caller stops it by PID."""
        return subprocess.Popen(self.argv(args, endpoints), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                env=self.env())


def stop_proc(proc, grace_s=5.0):
    """Stop one child process by its PID (SIGTERM, then SIGKILL) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)
    return proc.returncode


def wait_for(pred, timeout_s=10.0, interval_s=0.1, what="condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval_s)


def wait_healthy(ctl, timeout_s=60.0, user=()):
    """Until `etcdctl endpoint health` succeeds on every endpoint (so there is a leader).
    user: ("--user", "NAME:PASSWORD") once auth is on (a request without one is refused)."""
    def ok():
        proc = ctl.run(*user, "endpoint", "health", check=False, timeout=15)
        return proc.returncode == 0
    wait_for(ok, timeout_s, 0.2, "every endpoint healthy")


def wait_published(ctl, count, timeout_s=30.0):
    """Until member list shows every member with a name and client URLs. etcd serves clients
    only after publishing; a raftkv member may serve a moment before (docs/ETCD_DIFFERENCES.md)."""
    def ok():
        proc = ctl.run("member", "list", "-w", "json", check=False)
        if proc.returncode != 0:
            return False
        members = json.loads(proc.stdout).get("members", [])
        return len(members) == count and all(m.get("name") and m.get("clientURLs")
                                             for m in members)
    wait_for(ok, timeout_s, 0.2, "every member to publish its client URLs")


@contextlib.contextmanager
def running(cluster):
    """Start cluster; if anything fails before the with block ends, print its members' log
    tails; always stop every member by PID."""
    try:
        cluster.start()
        yield cluster
    except BaseException:
        print(log_tails(cluster))
        raise
    finally:
        cluster.stop()


def log_tails(cluster):
    out = []
    for m in cluster.members:
        try:
            with open(m.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - LOG_TAIL_BYTES))
                out.append(f"--- {m.name} ---\n" + f.read().decode(errors="replace"))
        except OSError:
            pass
    return "\n".join(out)


@pytest.fixture(scope="module")
def raftkv_cluster(tmp_path_factory):
    """A 3-member raftkv cluster for the whole module; stopped by PID at teardown."""
    root = tmp_path_factory.mktemp("etcdctl-cluster")
    if TARGET == "etcd":
        cluster = EtcdCluster(str(root), members=3)
    else:
        cluster = LocalCluster(str(root), members=3, extra_args=FAST_ARGS)
    with running(cluster):
        if TARGET != "etcd":
            cluster.wait_listening()
        wait_healthy(Ctl(cluster.endpoints))
        wait_published(Ctl(cluster.endpoints), len(cluster.members))
        yield cluster


@pytest.fixture(scope="module")
def ctl(raftkv_cluster):
    return Ctl(raftkv_cluster.endpoints)


@pytest.fixture
def ctl1(raftkv_cluster):
    """etcdctl on the first member only (snapshot save needs exactly one endpoint)."""
    return Ctl(raftkv_cluster.endpoints[:1])


class Background:
    """A background etcdctl whose stdout is read line by line on a thread."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = []
        self.err_lines = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._pump, args=(proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(proc.stderr, self.err_lines), daemon=True)]
        for t in self._threads:
            t.start()

    def _pump(self, stream, into):
        for line in iter(stream.readline, ""):
            with self._lock:
                into.append(line.rstrip("\n"))

    def stderr(self):
        with self._lock:
            return "\n".join(self.err_lines)

    def text(self):
        with self._lock:
            return "\n".join(self.lines)

    def wait_output(self, pred, timeout_s=10.0, what="output"):
        try:
            return wait_for(lambda: pred(self.text()), timeout_s, 0.05, what)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got:\n{self.text()}\n"
                                 f"stderr:\n{self.stderr()[-3000:]}\n(exit status: "
                                 f"{self.proc.poll()})") from None

    def stop(self):
        stop_proc(self.proc)
        for t in self._threads:
            t.join(timeout=5)
        return self.proc.returncode


@pytest.fixture
def background(ctl):
    """Start background etcdctl commands; every one is stopped by PID at teardown."""
    started = []

    def start(*args, endpoints=None):
        bg = Background(ctl.popen(*args, endpoints=endpoints))
        started.append(bg)
        return bg
    yield start
    for bg in started:
        bg.stop()


def add_member_process(cluster, name):
    """A new member (not started) on fresh ports, appended to cluster.members (so
    cluster.stop() stops it by PID); returns it. Works for LocalCluster and EtcdCluster."""
    if isinstance(cluster, EtcdCluster):
        return add_etcd_member(cluster, name)
    client, peer, native = free_ports(3)
    m = LocalMember(name, client, peer, native,
                    os.path.join(cluster.data_root, f"{name}.raftkv"),
                    os.path.join(cluster.data_root, f"{name}.log"))
    cluster.members.append(m)
    return m


def start_member_process(cluster, m):
    """Start a member added with add_member_process as --initial-cluster-state existing."""
    if isinstance(cluster, EtcdCluster):
        start_etcd_member(cluster, m, "existing")
    else:
        cluster.start_member(m, state="existing")


def kill_member_process(cluster, m):
    """SIGKILL one member by its PID and reap it (LocalCluster or EtcdCluster); restart it with
    start_member_process."""
    if isinstance(cluster, EtcdCluster):
        if m.alive():
            os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait(timeout=10)
    else:
        cluster.kill(m)


def restored_etcd(path, tmp_path):
    """`etcdctl snapshot restore` of path, then a real etcd on it (fresh loopback ports).
    Returns (process, endpoint, log path); the caller stops the process by PID."""
    client_port, peer_port = free_ports(2)
    peer, client = f"http://127.0.0.1:{peer_port}", f"http://127.0.0.1:{client_port}"
    data_dir, log_path = str(tmp_path / "restored.etcd"), str(tmp_path / "restored.log")
    token = "raftkv-restore"
    Ctl([]).run("snapshot", "restore", path, "--data-dir", data_dir, "--name", "restored",
                "--initial-cluster", f"restored={peer}", "--initial-cluster-token", token,
                "--initial-advertise-peer-urls", peer, timeout=60)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [ETCD, "--name", "restored", "--data-dir", data_dir, "--listen-client-urls", client,
             "--advertise-client-urls", client, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", f"restored={peer}",
             "--initial-cluster-token", token, "--logger", "zap", "--log-outputs", "stderr"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, f"127.0.0.1:{client_port}", log_path
