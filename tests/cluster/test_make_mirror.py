"""raftkvctl make-mirror between two raftkv clusters over the native protocol (etcdctl's verb;
etcdctl's own make-mirror between etcd and raftkv is tests/etcdctl/test_make_mirror.py): the
keys under a prefix as of one revision, then the source's puts, deletes, prefix deletes and
txns as they happen, renamed as etcdctl renames them; SIGINT ends it with exit status 0."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

MIRROR_WAIT_S = 20.0


def _mirror(src, dest, *flags):
    env = dict(os.environ)
    env.pop("RAFTKVCTL_ENDPOINTS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "raftkv.cli", "--endpoints", src.members[0].native_endpoint,
         "make-mirror", *flags, ",".join(m.native_endpoint for m in dest.members)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=env)


def _kvs(client, prefix):
    pairs = client.get_prefix(prefix) if prefix else client.get_all()
    return {meta.key: value for value, meta in pairs}


def _until_same(src_c, src_prefix, dest_c, dest_prefix, proc):
    deadline = time.monotonic() + MIRROR_WAIT_S
    while time.monotonic() < deadline:
        a = {k[len(src_prefix):]: v for k, v in _kvs(src_c, src_prefix).items()}
        b = {k[len(dest_prefix):]: v for k, v in _kvs(dest_c, dest_prefix).items()}
        if a == b:
            return a
        assert proc.poll() is None, proc.communicate(timeout=5)
        time.sleep(0.05)
    raise AssertionError(f"not mirrored within {MIRROR_WAIT_S}s: {sorted(a)} vs {sorted(b)}")


def _stop(proc):
    """SIGINT to the mirror's PID; SIGKILL if it has not ended within 30 s (then the test
    fails on its exit status)."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.mark.parametrize("flags, dest_prefix", [
    (("--prefix", "mig/", "--dest-prefix", "copy/"), b"copy/"),
    (("--prefix", "mig/"), b"mig/"),
    (("--prefix", "mig/", "--no-dest-prefix"), b""),
])
def test_make_mirror_copies_then_follows(make_cluster, flags, dest_prefix):
    src, dest = make_cluster(members=1), make_cluster(members=3)
    s, d = src.client(), dest.client()
    for i in range(2500):  # more than one page of the initial copy
        s.put(f"mig/k{i:04d}", f"v{i}")
    s.put("mig/doc", '{"replicas": 3,\n "image": "app:1.2"}')
    s.put("outside", "not mirrored")
    proc = _mirror(src, dest, *flags)
    try:
        assert len(_until_same(s, b"mig/", d, dest_prefix, proc)) == 2501
        s.put("mig/live", "1")
        s.delete("mig/k0002")
        s.delete_prefix("mig/k1")  # 1,000 deletes at one revision: several destination txns
        t = s.transactions
        s.transaction([], [t.put("mig/txn", "a"), t.put("mig/k0003", "b"),
                           t.delete("mig/k0004")], [])
        kvs = _until_same(s, b"mig/", d, dest_prefix, proc)
        assert kvs[b"live"] == b"1" and kvs[b"k0003"] == b"b" and b"k0004" not in kvs
        assert not any(k.startswith(b"k1") for k in kvs) and len(kvs) == 1501
        if dest_prefix != b"":
            assert d.get("outside") == (None, None)
    finally:
        code, out, err = _stop(proc)
    assert code == 0, err


def test_dest_prefix_and_no_dest_prefix_together_are_refused():
    proc = subprocess.run(
        [sys.executable, "-m", "raftkv.cli", "--endpoints", "127.0.0.1:1", "make-mirror",
         "--dest-prefix", "a/", "--no-dest-prefix", "127.0.0.1:2"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128
    assert proc.stderr == ("Error: `--dest-prefix` and `--no-dest-prefix` cannot be set at the "
                           "same time, choose one.\n")
