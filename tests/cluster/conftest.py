"""Fixtures for the cluster tests: real member processes on 127.0.0.1 (raftkv.cli.local_cluster).

`make_cluster(members=3, extra_args=...)` starts a LocalCluster under tmp_path, waits until
every member serves its client ports and has a leader, and returns a ClusterHarness. At
teardown every process the harness started is stopped by PID (SIGTERM, then SIGKILL), even if
the test failed half way; on failure each member's log is printed (its tail) so the report
shows what the members saw.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from raftkv.api import wire
from raftkv.cli.local_cluster import LocalCluster
from raftkv.client import Client

# Fast timings so elections and failovers take a fraction of a second.
# Fast elections; the cheapest password hashing (tests that add users need no real work factor).
FAST_ARGS = ["--heartbeat-interval", "50", "--election-timeout", "500", "--bcrypt-cost", "4"]
ELECTION_TIMEOUT_S = 0.5
LOG_TAIL_BYTES = 20_000
READY_TIMEOUT_S = 30.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


class ClusterHarness:
    """A LocalCluster plus the helpers the tests share."""

    def __init__(self, cluster):
        self.cluster = cluster
        self._clients = []

    @property
    def members(self):
        return self.cluster.members

    def client(self, members=None, timeout=5.0):
        """A Client on the given members' native endpoints (all members by default)."""
        members = self.members if members is None else members
        c = Client([m.native_endpoint for m in members], timeout=timeout)
        self._clients.append(c)
        return c

    def status(self, m, timeout=2.0):
        """The status dict of one member (a client on that member alone)."""
        c = Client([m.native_endpoint], timeout=timeout)
        try:
            return c.status()
        finally:
            c.close()

    def wait_native(self, m, timeout_s=READY_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while True:
            assert m.alive(), f"{m.name} exited with {m.proc.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", m.native_port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{m.name} does not listen on {m.native_endpoint}")
                time.sleep(0.05)

    def leader(self, among=None, timeout_s=READY_TIMEOUT_S):
        """The member that reports role leader (waits until exactly one running member does
        and every running member agrees on its id)."""
        among = [m for m in (among or self.members) if m.alive()]
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                sts = {m.name: self.status(m) for m in among}
            except (wire.RaftkvError, ConnectionError, OSError) as exc:
                last = exc
                time.sleep(0.05)
                continue
            leaders = [m for m in among if sts[m.name]["role"] == "leader"]
            ids = {st["leader"] for st in sts.values()}
            if len(leaders) == 1 and len(ids) == 1 and 0 not in ids:
                return leaders[0]
            last = {k: (v["role"], v["leader"], v["raftTerm"]) for k, v in sts.items()}
            time.sleep(0.05)
        raise TimeoutError(f"no agreed leader within {timeout_s}s: {last}")

    def start_member(self, m, state="new"):
        self.cluster.start_member(m, state)
        self.wait_native(m)

    def kill(self, m):
        self.cluster.kill(m)

    def restart_all(self):
        """Stop every member cleanly (exit status 0), start them all again, and wait until
        they listen and agree on a leader."""
        for m in self.members:
            assert self.stop_member(m) == 0, f"{m.name} did not stop cleanly"
        for m in self.members:
            self.cluster.start_member(m)
        for m in self.members:
            self.wait_native(m)
        return self.leader()

    def stop_member(self, m, grace_s=10.0):
        return self.cluster.stop_member(m, grace_s)

    def log_text(self, m):
        with open(m.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, m, text, timeout_s=READY_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log_text(m):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{m.name} did not log {text!r} within {timeout_s}s")

    def close_clients(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 -- teardown must reach the process cleanup
                pass
        self._clients.clear()


def _stop_all(cluster):
    """Stop every process the cluster started, by PID: SIGTERM, then SIGKILL."""
    for m in cluster.members:
        if m.alive():
            try:
                os.kill(m.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for m in cluster.members:
        if m.proc is None:
            continue
        try:
            m.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            try:
                os.kill(m.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            m.proc.wait(timeout=5.0)


def _dump_logs(cluster):
    for m in cluster.members:
        try:
            with open(m.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - LOG_TAIL_BYTES))
                tail = f.read().decode(errors="replace")
        except OSError as exc:
            tail = f"(no log: {exc})"
        print(f"\n===== {m.name} log ({m.log_path}, last {LOG_TAIL_BYTES} bytes) =====\n{tail}")


def _start(root, members, extra_args, wait_leader):
    cluster = LocalCluster(str(root), members=members, extra_args=[*FAST_ARGS, *extra_args])
    h = ClusterHarness(cluster)
    try:
        cluster.start()
        cluster.wait_listening(READY_TIMEOUT_S)
        for m in cluster.members:
            h.wait_native(m)
        if wait_leader:
            h.leader()
    except BaseException:
        _stop_all(cluster)
        _dump_logs(cluster)
        raise
    return h


def _finish(harnesses, failed):
    for h in harnesses:
        h.close_clients()
        _stop_all(h.cluster)
        if failed:
            _dump_logs(h.cluster)


@pytest.fixture
def make_cluster(tmp_path, request):
    """make_cluster(members=3, extra_args=(), wait_leader=True) -> ClusterHarness, with
    FAST_ARGS timings. Every member process is stopped by PID at teardown."""
    harnesses = []

    def make(members=3, extra_args=(), wait_leader=True):
        h = _start(tmp_path / f"cluster{len(harnesses)}", members, extra_args, wait_leader)
        harnesses.append(h)
        return h

    yield make
    failed = any(getattr(request.node, f"rep_{w}", None) is not None
                 and getattr(request.node, f"rep_{w}").failed for w in ("setup", "call"))
    _finish(harnesses, failed)


@pytest.fixture(scope="module")
def make_module_cluster(tmp_path_factory, request):
    """make_cluster for module-scoped fixtures: the clusters (one data dir built for many
    tests, say) live until the module's last test; stopped by PID then."""
    harnesses = []
    root = tmp_path_factory.mktemp("module")
    failed_before = request.session.testsfailed

    def make(members=3, extra_args=(), wait_leader=True):
        h = _start(root / f"cluster{len(harnesses)}", members, extra_args, wait_leader)
        harnesses.append(h)
        return h

    yield make
    _finish(harnesses, request.session.testsfailed > failed_before)


@pytest.fixture
def cluster3(make_cluster):
    return make_cluster(3)


@pytest.fixture(scope="module")
def shared_cluster3(tmp_path_factory, request):
    """One 3-member cluster for a whole module's non-destructive tests (saves start-ups)."""
    failed_before = request.session.testsfailed
    h = _start(tmp_path_factory.mktemp("shared"), 3, (), True)
    yield h
    _finish([h], request.session.testsfailed > failed_before)
