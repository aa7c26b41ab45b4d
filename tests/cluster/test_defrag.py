"""Offline defrag of a cluster member (raftkvutl defrag --data-dir, raftkv/utl/defrag.py): after
a few MB are written, deleted and compacted, a stopped member's data.mdb shrinks, the member
restarts, rejoins, holds the same history as the others (HashKV) and takes new writes; the
defrag of a running member's data dir is refused (raftkvctl's form too) and changes nothing."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from raftkv.api import wire
from raftkv.storage.engine import DATA_FILE, DEFRAG_SCRATCH

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(150)]

KEYS = 600
VALUE_BYTES = 5000  # 3 MB in all: enough to see the file shrink, quick to write
WAIT_S = 20.0


def _run(*argv):
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True,
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def _file(m):
    st = os.stat(os.path.join(m.data_dir, DATA_FILE))
    return st.st_ino, st.st_size


def _hash_kv(h, m, rev):
    """m's HashKV at rev once it has applied rev (a member just restarted may lag: retried)."""
    alone = h.client([m])
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            return alone.hash_kv(rev)["hash"]
        except (wire.RaftkvError, ConnectionError) as exc:
            assert time.monotonic() < deadline, f"{m.name}: no HashKV at {rev}: {exc}"
            time.sleep(0.1)


def _wait_compacted(h, m, rev):
    alone = h.client([m])
    deadline = time.monotonic() + WAIT_S
    while alone.hash_kv()["compact_revision"] != rev:
        assert time.monotonic() < deadline, f"{m.name} did not apply the compaction at {rev}"
        time.sleep(0.05)


def test_defrag_of_a_stopped_member(make_cluster):
    h = make_cluster(3)
    c = h.client(timeout=10.0)
    res = c.put_many((f"/df/{i:04d}", bytes([i % 251]) * VALUE_BYTES) for i in range(KEYS))
    assert (res.done, res.failed) == (KEYS, 0), res
    c.put("/keep", "kept")
    c.delete_prefix("/df/")
    rev = c.put("/keep2", "kept")["header"]["revision"]
    c.compact(rev, physical=True)
    mark = c.put("/mark", "m")["header"]["revision"]  # HashKV is refused at the compact rev
    leader = h.leader()
    m = next(x for x in h.members if x is not leader)
    _wait_compacted(h, m, rev)

    # While m runs: refused, naming its PID; the file is the same file, untouched.
    before = _file(m)
    assert before[1] > KEYS * VALUE_BYTES
    for tool in (("raftkv.utl.main",), ("raftkv.cli", "--endpoints", "127.0.0.1:1")):
        status, out, err = _run(*tool, "defrag", "--data-dir", m.data_dir)
        assert status == 1 and out == "", (tool, out, err)
        assert err.startswith(f"Failed to defragment etcd data[{m.data_dir}] ("), err
        assert f"the data dir is in use by another process (PID {m.pid})" in err, err
        assert _file(m) == before and DEFRAG_SCRATCH not in os.listdir(m.data_dir)

    assert h.stop_member(m) == 0  # SIGTERM by PID
    size = _file(m)[1]
    status, out, err = _run("raftkv.utl.main", "defrag", "--data-dir", m.data_dir)
    assert status == 0, err
    after = _file(m)[1]
    assert out.startswith(f"Finished defragmenting etcd data[{m.data_dir}]: data.mdb "), out
    assert out.endswith(f"({size} -> {after} bytes)\n"), out
    assert after < size / 4, (size, after)

    # A scratch dir as a defrag killed half way leaves it: the start removes it.
    os.mkdir(os.path.join(m.data_dir, DEFRAG_SCRATCH))
    with open(os.path.join(m.data_dir, DEFRAG_SCRATCH, DATA_FILE), "wb") as f:
        f.write(b"half a copy")
    h.start_member(m)
    assert DEFRAG_SCRATCH not in os.listdir(m.data_dir)
    assert h.client([m]).get("/keep", serializable=True)[0] == b"kept"
    hashes = {x.name: _hash_kv(h, x, mark) for x in h.members}
    assert len(set(hashes.values())) == 1, hashes

    # New writes, through the defragmented member too, reach every member alike.
    new_rev = h.client([m], timeout=10.0).put("/after", "x")["header"]["revision"]
    hashes = {x.name: _hash_kv(h, x, new_rev) for x in h.members}
    assert len(set(hashes.values())) == 1, hashes
    assert h.client([m]).get("/after")[0] == b"x"
