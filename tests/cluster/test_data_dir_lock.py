"""A data dir (or --wal-dir) serves one member process at a time: a second process started on it,
by mistake, is refused with exit status 2 before it reads or writes anything, and the running
member goes on unharmed; once that member is gone (SIGKILL too) the data dir starts again."""
import dataclasses
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def _second_start(h, m, extra=()):
    """`python -m raftkv` on m's data dir with fresh ports: (exit status, output)."""
    from raftkv.cli.local_cluster import free_ports
    client, peer, native = free_ports(3)
    cmd = [sys.executable, "-m", "raftkv", "--name", m.name, "--data-dir", m.data_dir,
           "--listen-client-urls", f"http://127.0.0.1:{client}",
           "--advertise-client-urls", f"http://127.0.0.1:{client}",
           "--listen-native-urls", f"http://127.0.0.1:{native}",
           "--listen-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-advertise-peer-urls", m.peer_url,
           "--initial-cluster", h.cluster.initial_cluster, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_second_process_on_a_data_dir_is_refused(make_cluster):
    h = make_cluster(members=1)
    m = h.members[0]
    c = h.client()
    c.put("k", "before")
    status, out = _second_start(h, m)
    assert status == 2, out
    assert f"the data dir is in use by another process (PID {m.pid})" in out, out
    c.put("k", "after")  # the running member was not disturbed
    assert c.get("k")[0] == b"after"
    h.close_clients()
    h.kill(m)  # SIGKILL: the kernel drops the lock
    h.start_member(m)
    h.wait_native(m)
    assert h.client().get("k")[0] == b"after"


def test_two_members_on_one_wal_dir_are_refused(make_cluster, tmp_path):
    wal = tmp_path / "shared-wal"
    h = make_cluster(members=1, extra_args=["--wal-dir", str(wal)])
    m = h.members[0]
    h.client().put("k", "v")
    other = dataclasses.replace(m, data_dir=str(tmp_path / "other.raftkv"), proc=None)
    status, out = _second_start(h, other, ["--wal-dir", str(wal)])
    assert status == 2, out
    assert f"{wal}: the WAL dir is in use by another process (PID {m.pid})" in out, out
    assert h.client().get("k")[0] == b"v"
