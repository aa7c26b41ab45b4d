"""Start a local N-member raftkv cluster on 127.0.0.1: the README's main-job command and the
process harness of the cluster tests.

Each member is its own OS process (`python -m raftkv.server ...`) with etcd-style flags. The
launcher records every PID it starts and stops members only by PID. In the foreground it prints
the endpoints, then each member's log lines prefixed with its name, and stops all members on
Ctrl-C (SIGINT) or SIGTERM.

    python -m raftkv.cli.local_cluster --members 3 --data-root ./raftkv-data
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

DEFAULT_DATA_ROOT = "raftkv-data"
STOP_GRACE_S = 10.0  # SIGTERM lets a member finish its in-flight sync; then SIGKILL
READY_TIMEOUT_S = 30.0


@dataclasses.dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    native_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen | None = None
    scheme: str = "http"  # https: every listener speaks TLS

    @property
    def client_url(self):
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def native_url(self):
        return f"{self.scheme}://127.0.0.1:{self.native_port}"

    @property
    def native_endpoint(self):
        return f"127.0.0.1:{self.native_port}"

    @property
    def grpc_endpoint(self):
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self):
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


# Probed ports come from below the kernel's ephemeral range when it leaves room. A probed port
# is released before its member binds it, and in between the kernel may give a port from the
# ephemeral range to an outgoing connection (a client polling the members that are already
# up, a member's peer connections): the member then fails to bind and exits. About 1 cluster
# start in 30 did so here while a client polled the others for their leader.
PROBE_LOW = 10_000  # below: ports that well-known services tend to use
PROBE_MIN_ROOM = 2_000  # fewer candidate ports than this below the range: probe with port 0


def ephemeral_range():
    """The kernel's (low, high) local port range for outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _reservations_dir():
    path = os.path.join(tempfile.gettempdir(), f"raftkv-ports-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _reserve(directory, port):
    """Claim port for this process (a file naming our PID); False if a live process holds it.
    A claim outlives a member that stops: a member killed and started again by the same
    process finds its ports still its own, not handed to another process's new cluster."""
    path = os.path.join(directory, str(port))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = int(f.read() or 0)
            except (OSError, ValueError):
                return False  # being written right now, or unreadable: someone else's
            if owner and _alive(owner):
                return False
            try:
                os.unlink(path)  # its process is gone: the claim is stale
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_ports(count):
    """count distinct, freshly probed free TCP ports on 127.0.0.1 (each bound, then released),
    outside the ephemeral range when it leaves room (see above), else OS-assigned.

    Probed ports are also claimed for the calling process in a directory under the temp dir,
    so that test processes running side by side (pytest-xdist) never pick each other's ports
    in the moment between a probe and a member's bind, or while a member is down."""
    low, _ = ephemeral_range()
    rng = random.SystemRandom()
    socks, ports = [], []
    claims = _reservations_dir()
    try:
        tries = 0
        while len(ports) < count and low - PROBE_LOW >= PROBE_MIN_ROOM and tries < 50 * count:
            tries += 1
            port = rng.randrange(PROBE_LOW, low)
            if port in ports or not _reserve(claims, port):
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))  # fails if taken, also by a listener on 0.0.0.0
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(port)
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class LocalCluster:
    """N members on 127.0.0.1, each in its own process, data under data_root/<name>.raftkv.

    tls: (CA file, certificate file, key file) to serve clients and peers over TLS (https://
    URLs; peers must present a certificate the CA signed); None: plaintext."""

    def __init__(self, data_root, members=3, ports=None, token="raftkv-local", extra_args=(),
                 tls=None):
        assert members >= 1
        self.data_root = os.path.abspath(data_root)
        self.token = token
        self.extra_args = list(extra_args)
        self.member_args = {}  # member name -> flags for that member only (after the others)
        if tls is not None:
            ca, cert, key = tls
            self.extra_args = ["--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
                               "--peer-cert-file", cert, "--peer-key-file", key,
                               "--peer-trusted-ca-file", ca, "--peer-client-cert-auth",
                               *self.extra_args]
        ports = ports or free_ports(3 * members)
        assert len(ports) >= 3 * members
        self.members = [
            Member(
                name=f"m{i + 1}",
                client_port=ports[3 * i],
                peer_port=ports[3 * i + 1],
                native_port=ports[3 * i + 2],
                data_dir=os.path.join(self.data_root, f"m{i + 1}.raftkv"),
                log_path=os.path.join(self.data_root, f"m{i + 1}.log"),
                scheme="https" if tls is not None else "http",
            )
            for i in range(members)
        ]

    @property
    def initial_cluster(self):
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self):
        """etcd gRPC endpoints (what etcdctl takes)."""
        return [m.grpc_endpoint for m in self.members]

    @property
    def native_endpoints(self):
        """Native protocol endpoints (what raftkv.Client and raftkvctl take)."""
        return [m.native_endpoint for m in self.members]

    def member(self, name):
        return next(m for m in self.members if m.name == name)

    def command(self, m, state="new"):
        return [
            sys.executable, "-m", "raftkv",
            "--name", m.name,
            "--data-dir", m.data_dir,
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-native-urls", m.native_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            *self.extra_args,
            *self.member_args.get(m.name, ()),
        ]

    def start_member(self, m, state="new", log_to_file=True):
        """Start (or restart) one member; returns its PID."""
        assert not m.alive(), f"{m.name} is already running as PID {m.pid}"
        os.makedirs(self.data_root, exist_ok=True)
        out = open(m.log_path, "ab") if log_to_file else subprocess.PIPE
        try:
            m.proc = subprocess.Popen(
                self.command(m, state), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            if log_to_file:
                out.close()
        return m.proc.pid

    def start(self, log_to_file=True):
        for m in self.members:
            self.start_member(m, log_to_file=log_to_file)

    def wait_listening(self, timeout_s=READY_TIMEOUT_S):
        """Wait until every running member accepts TCP connections on its client port."""
        deadline = time.monotonic() + timeout_s
        for m in self.members:
            while True:
                if not m.alive():
                    raise RuntimeError(
                        f"{m.name} exited with {m.proc.returncode}; see {m.log_path}"
                    )
                try:
                    with socket.create_connection(("127.0.0.1", m.client_port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{m.name} is not listening on {m.client_url}")
                    time.sleep(0.05)

    def signal_member(self, m, sig):
        """Send sig to the member's own PID (never by name)."""
        if m.alive():
            os.kill(m.proc.pid, sig)

    def kill(self, m):
        """SIGKILL by PID and reap."""
        if m.alive():
            os.kill(m.proc.pid, signal.SIGKILL)
        if m.proc is not None:
            m.proc.wait(timeout=STOP_GRACE_S)

    def stop_member(self, m, grace_s=STOP_GRACE_S):
        if not m.alive():
            return m.proc.returncode if m.proc else None
        os.kill(m.proc.pid, signal.SIGTERM)
        try:
            return m.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.kill(m.proc.pid, signal.SIGKILL)
            return m.proc.wait(timeout=grace_s)

    def stop(self):
        stop_processes(self.members)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_processes(members, grace_s=STOP_GRACE_S):
    """SIGTERM every running member by its PID, then reap each; SIGKILL any that does not exit
    within grace_s. members: objects with .proc (a Popen or None) and .alive()."""
    for m in members:
        if m.alive():
            os.kill(m.proc.pid, signal.SIGTERM)
    for m in members:
        if m.proc is not None:
            try:
                m.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.kill(m.proc.pid, signal.SIGKILL)
                m.proc.wait(timeout=grace_s)


def _pump(name, stream):
    """Copy a member's output to our stdout, one prefixed line at a time."""
    for raw in iter(stream.readline, b""):
        sys.stdout.write(f"[{name}] {raw.decode(errors='replace')}")
        sys.stdout.flush()


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="raftkv-local-cluster",
        description="Start a local raftkv cluster on 127.0.0.1 in the foreground; Ctrl-C stops it.",
    )
    p.add_argument("--members", type=int, default=3, help="number of members (default 3)")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT,
                   help="directory for the members' data dirs and logs "
                   f"(default ./{DEFAULT_DATA_ROOT})")
    p.add_argument("--base-port", type=int, default=2379,
                   help="first client port; member i uses base+10*i (etcd gRPC client and, "
                   "on the same port as etcd 3.4, etcd's HTTP/JSON gateway), base+10*i+1 "
                   "(peer), base+10*i+2 (native)")
    args = p.parse_args(argv)
    if args.members < 1:
        p.error("--members must be at least 1")
    if not 1024 <= args.base_port <= 65000:
        p.error("--base-port must be between 1024 and 65000")
    return args


def main(argv=None):
    args = _parse(argv)
    ports = []
    for i in range(args.members):
        ports += [args.base_port + 10 * i + k for k in range(3)]
    cluster = LocalCluster(args.data_root, members=args.members, ports=ports)
    # etcd's HTTP/JSON gateway, /health and /metrics answer on the client ports beside gRPC,
    # as etcd 3.4 serves them (raftkv/api/mux.py).
    gateways = [m.client_url for m in cluster.members]
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster.start(log_to_file=False)
        pumps = [threading.Thread(target=_pump, args=(m.name, m.proc.stdout), daemon=True)
                 for m in cluster.members]
        for t in pumps:
            t.start()
        cluster.wait_listening()
        print(f"raftkv: {args.members}-member cluster up; data under {cluster.data_root}")
        print("raftkv: etcd gRPC endpoints " + ",".join(cluster.endpoints))
        print("raftkv: native endpoints    " + ",".join(cluster.native_endpoints))
        print("raftkv: HTTP/JSON gateway   " + ",".join(gateways))
        print("raftkv: try  raftkvctl --endpoints " + ",".join(cluster.native_endpoints)
              + " endpoint status -w table")
        print("raftkv: or   ETCDCTL_API=3 etcdctl --endpoints " + ",".join(cluster.endpoints)
              + " endpoint status -w table   (Ctrl-C stops the cluster)")
        while not stop.wait(0.5):
            dead = [m for m in cluster.members if not m.alive()]
            if dead:
                print(f"raftkv: member {dead[0].name} exited ({dead[0].proc.returncode}); stopping")
                return 1
        return 0
    finally:
        print("raftkv: stopping members")
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
