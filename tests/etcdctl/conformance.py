"""Conformance runner: the same etcdctl scenarios against a real etcd 3-member cluster and a
raftkv 3-member cluster, outputs compared after normalisation.

    python -m tests.etcdctl.conformance            # starts both clusters, prints the diffs

Both clusters are fresh, so revisions line up when the scenarios run in the same order; what
cannot line up (member, cluster and lease IDs, ports, durations, raft terms and indexes, db sizes)
is replaced by placeholders. IDs are numbered in order of first appearance, so "the same lease
twice" still compares equal. A difference that is deliberate is listed in KNOWN_DIFFERENCES with
its reason (mirrored in docs/ETCD_DIFFERENCES.md); everything else is a failure.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from raftkv.cli.local_cluster import free_ports

ETCD = shutil.which("etcd")
STOP_GRACE_S = 10.0


@dataclasses.dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None

    @property
    def client_url(self):
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self):
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def grpc_endpoint(self):
        return f"127.0.0.1:{self.client_port}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


class EtcdCluster:
    """A real etcd cluster on fresh loopback ports, data in data_root; stopped by PID."""

    def __init__(self, data_root, members=3, token="etcd-conformance"):
        self.data_root = os.path.abspath(data_root)
        self.token = token
        ports = free_ports(2 * members)
        self.members = [
            EtcdMember(f"m{i + 1}", ports[2 * i], ports[2 * i + 1],
                       os.path.join(self.data_root, f"m{i + 1}.etcd"),
                       os.path.join(self.data_root, f"m{i + 1}.log"))
            for i in range(members)]

    @property
    def endpoints(self):
        return [m.grpc_endpoint for m in self.members]

    @property
    def initial_cluster(self):
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def command(self, m):
        return [ETCD, "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.token, "--heartbeat-interval", "50",
                "--election-timeout", "500", "--logger", "zap", "--log-outputs", "stderr"]

    def start(self):
        os.makedirs(self.data_root, exist_ok=True)
        for m in self.members:
            with open(m.log_path, "ab") as out:
                m.proc = subprocess.Popen(self.command(m), stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)

    def stop(self):
        for m in self.members:
            if m.alive():
                os.kill(m.proc.pid, signal.SIGTERM)
        for m in self.members:
            if m.proc is None:
                continue
            try:
                m.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(m.proc.pid, signal.SIGKILL)
                m.proc.wait(timeout=STOP_GRACE_S)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def add_etcd_member(cluster, name):
    """A new EtcdMember on fresh ports (not started), appended to cluster.members."""
    client_port, peer_port = free_ports(2)
    m = EtcdMember(name, client_port, peer_port,
                   os.path.join(cluster.data_root, f"{name}.etcd"),
                   os.path.join(cluster.data_root, f"{name}.log"))
    cluster.members.append(m)
    return m


def start_etcd_member(cluster, m, state="existing"):
    cmd = cluster.command(m)
    cmd[cmd.index("--initial-cluster-state") + 1] = state
    with open(m.log_path, "ab") as out:
        m.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
