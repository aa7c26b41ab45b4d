"""Acceptance 7 and 8: clean shutdown on SIGTERM and rejoin; the fault-tolerance warning of
clusters that cannot survive a failure."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest

from raftkv.api import wire

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

CLEAN_EXIT_BOUND_S = 5.0
NO_TOLERANCE_WARNING = "tolerates no failure"


def _sigterm_and_wait(h, m):
    """SIGTERM by PID; returns (exit code, seconds until the process was gone)."""
    t0 = time.monotonic()
    h.cluster.signal_member(m, signal.SIGTERM)
    try:
        code = m.proc.wait(timeout=CLEAN_EXIT_BOUND_S * 3)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - t0


def _wait_value(client, key, value, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get(key)[0] == value:
                return
        except (wire.RaftkvError, ConnectionError) as exc:
            last = exc
        else:
            last = None
        assert time.monotonic() < deadline, f"{key!r} never became {value!r}: {last!r}"
        time.sleep(0.1)


@pytest.mark.parametrize("who", ["follower", "leader"])
def test_sigterm_exits_zero_promptly_and_member_rejoins(make_cluster, who):
    h = make_cluster(3)
    client = h.client(timeout=10.0)
    for i in range(20):
        client.put(f"/term/{i:02d}", str(i))
    leader = h.leader()
    m = leader if who == "leader" else next(x for x in h.members if x is not leader)
    code, took = _sigterm_and_wait(h, m)
    print(f"{who} {m.name} exited {code} {took:.2f}s after SIGTERM")
    assert code == 0, f"{m.name} exited with {code} after SIGTERM"
    assert took < CLEAN_EXIT_BOUND_S, f"{m.name} took {took:.1f}s to exit"
    log = h.log_text(m)
    assert "stopping" in log
    assert "Traceback" not in log, log[-3000:]
    # The others go on without it.
    client.put("/term/while-down", "x")
    h.start_member(m)
    assert "refusing to start" not in h.log_text(m)
    h.leader()
    client.put("/term/after", "y")
    alone = h.client([m], timeout=5.0)
    _wait_value(alone, "/term/while-down", b"x")
    _wait_value(alone, "/term/after", b"y")
    got = [(meta.key, v) for v, meta in alone.get_prefix("/term/")]
    assert got == [(meta.key, v) for v, meta in client.get_prefix("/term/")]
    assert len(got) == 22
    assert NO_TOLERANCE_WARNING not in h.log_text(h.members[0])


@pytest.mark.parametrize("members", [1, 2])
def test_small_cluster_logs_fault_tolerance_warning(make_cluster, members):
    h = make_cluster(members)
    for m in h.members:
        h.wait_log(m, NO_TOLERANCE_WARNING, timeout_s=10.0)
        line = next(x for x in h.log_text(m).splitlines() if NO_TOLERANCE_WARNING in x)
        assert "WARNING" in line, line
        assert f"a cluster of {members} member" in line, line
        assert "run 3, 5 or 7 members" in line, line
    st = h.status(h.members[0])
    assert (st["members"], st["fault_tolerance"]) == (members, 0)
    assert st["quorum"] == members // 2 + 1
    # It still works while every member is up.
    client = h.client()
    client.put("/small", "ok")
    assert client.get("/small")[0] == b"ok"
