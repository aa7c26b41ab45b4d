"""free_ports: distinct, bindable, and outside the kernel's ephemeral range (a port an
outgoing connection may take between the probe and the member's bind)."""
import os
import socket
import subprocess
import sys

from raftkv.cli import local_cluster
from raftkv.cli.local_cluster import PROBE_LOW, ephemeral_range, free_ports


def test_probed_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    low, high = ephemeral_range()
    assert 0 < low <= high
    ports = free_ports(30)
    assert len(set(ports)) == 30
    if low - PROBE_LOW >= local_cluster.PROBE_MIN_ROOM:
        assert all(PROBE_LOW <= p < low for p in ports)
    socks = []
    try:
        for p in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", p))
    finally:
        for s in socks:
            s.close()


def test_a_taken_port_is_never_returned(monkeypatch):
    """With every candidate but one taken, the free one is found; with no room below the
    ephemeral range, ports are OS-assigned."""
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    try:
        busy = taken.getsockname()[1]
        monkeypatch.setattr(local_cluster, "ephemeral_range", lambda: (PROBE_LOW + 2_000, 60999))

        class Rng:
            calls = 0

            def randrange(self, a, b):
                Rng.calls += 1
                return PROBE_LOW + 7 if Rng.calls % 3 == 0 else busy  # busy is not free

        monkeypatch.setattr(local_cluster.random, "SystemRandom", Rng)
        ports = free_ports(1)
        assert ports != [busy] and len(ports) == 1
        monkeypatch.setattr(local_cluster, "ephemeral_range", lambda: (PROBE_LOW + 10, 60999))
        (port,) = free_ports(1)
        assert port != busy and port > 0
    finally:
        taken.close()


def test_ports_claimed_by_another_live_process_are_skipped(monkeypatch, tmp_path):
    """A port another running process claimed is never returned (pytest-xdist workers start
    clusters side by side); a claim whose process is gone is taken over; our own claims name
    our PID."""
    monkeypatch.setattr(local_cluster, "_reservations_dir", lambda: str(tmp_path))
    monkeypatch.setattr(local_cluster, "ephemeral_range", lambda: (PROBE_LOW + 2_000, 60999))
    held, stale, free = PROBE_LOW + 11, PROBE_LOW + 12, PROBE_LOW + 13
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / str(held)).write_text(str(other.pid))
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        (tmp_path / str(stale)).write_text(str(gone.pid))
        picks = iter([held, held, stale, held, free])

        class Rng:
            def randrange(self, a, b):
                return next(picks)

        monkeypatch.setattr(local_cluster.random, "SystemRandom", Rng)
        assert free_ports(2) == [stale, free]
        assert (tmp_path / str(held)).read_text() == str(other.pid)
        for port in (stale, free):
            assert (tmp_path / str(port)).read_text() == str(os.getpid())
    finally:
        other.kill()
        other.wait()
