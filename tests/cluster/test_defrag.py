"""Defrag of a cluster member after a few MB are written, deleted and compacted.

Offline (raftkvutl defrag --data-dir, raftkv/utl/defrag.py): a stopped member's data.mdb
shrinks, the member restarts, rejoins, holds the same history as the others (HashKV) and takes
new writes; the defrag of a running member's data dir is refused (raftkvctl's form too) and
changes nothing.

Online (etcdctl defrag, Maintenance.Defragment; Member.defragment): a follower, then the
leader, then every member (--cluster) shrink while they run; DB SIZE in `etcdctl endpoint
status` drops; writes made during and after succeed, a watch open across the defrags sees
every one of them, the leader keeps its term, and every member holds the same keys and
HashKV."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
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


def _filled_and_compacted(h):
    """KEYS values written, deleted and compacted away (pages a defrag gives back), two keys
    kept: (a client, the compaction's revision)."""
    c = h.client(timeout=10.0)
    res = c.put_many((f"/df/{i:04d}", bytes([i % 251]) * VALUE_BYTES) for i in range(KEYS))
    assert (res.done, res.failed) == (KEYS, 0), res
    c.put("/keep", "kept")
    c.delete_prefix("/df/")
    rev = c.put("/keep2", "kept")["header"]["revision"]
    c.compact(rev, physical=True)
    return c, rev


def test_defrag_of_a_stopped_member(make_cluster):
    h = make_cluster(3)
    c, rev = _filled_and_compacted(h)
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


ETCDCTL = shutil.which("etcdctl")
HOLD_S = 1.0


def _etcdctl(members, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    proc = subprocess.run(
        [ETCDCTL, "--endpoints", ",".join(m.client_url for m in members),
         "--command-timeout=30s", "--dial-timeout=3s", *args],
        capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def _db_sizes(h):
    """DB SIZE of each member, as `etcdctl endpoint status -w json` reports it."""
    out = json.loads(_etcdctl(h.members, "endpoint", "status", "-w", "json"))
    by_url = {m.client_url: m.name for m in h.members}
    return {by_url[e["Endpoint"]]: e["Status"]["dbSize"] for e in out}


class _Writer(threading.Thread):
    """Puts /live/N through every member in turn until stopped; records what it wrote."""

    def __init__(self, h):
        super().__init__(daemon=True)
        self.clients = [h.client([m], timeout=10.0) for m in h.members]
        self.stop = threading.Event()
        self.written, self.failed = [], []
        self.slowest_s = 0.0

    def run(self):
        n = 0
        while not self.stop.is_set():
            key = f"/live/{n:05d}"
            started = time.monotonic()
            try:
                rev = self.clients[n % 3].put(key, str(n))["header"]["revision"]
                self.written.append((key.encode(), rev))
                self.slowest_s = max(self.slowest_s, time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 -- reported by the test
                self.failed.append((key, repr(exc)))
            n += 1
            time.sleep(0.005)


def _wait_published(h):
    deadline = time.monotonic() + WAIT_S
    while True:
        listed = json.loads(_etcdctl(h.members, "member", "list", "-w", "json"))["members"]
        if sorted(u for x in listed for u in x.get("clientURLs", [])) == \
                sorted(m.client_url for m in h.members):
            return
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)


def _contents(h, m):
    return [(meta.key, value, meta.create_revision, meta.mod_revision, meta.version)
            for value, meta in h.client([m]).get_all(serializable=True)]


@pytest.mark.skipif(not ETCDCTL, reason="etcdctl is not installed (tools/install_etcd.sh)")
def test_defrag_of_running_members(make_cluster, monkeypatch):
    # Each defrag holds its member's writes HOLD_S (as a large store's copy would): writes
    # overlap it, and the leader's must not cost it its term (election timeout 0.5 s).
    monkeypatch.setenv("RAFTKV_DEFRAG_HOLD_S", str(HOLD_S))
    h = make_cluster(3)
    c, rev = _filled_and_compacted(h)
    leader = h.leader()
    follower = next(x for x in h.members if x is not leader)
    for m in h.members:
        _wait_compacted(h, m, rev)
    term = h.status(leader)["header"]["raft_term"]
    seen = []
    watcher = h.client([follower])
    watch_id = watcher.add_watch_prefix_callback(
        "/live/", lambda resp: seen.extend((ev.key, ev.mod_revision) for ev in resp.events))
    writer = _Writer(h)
    writer.start()
    try:
        sizes = _db_sizes(h)
        assert min(sizes.values()) > KEYS * VALUE_BYTES, sizes
        for step in ([follower], [leader]):
            out = _etcdctl(step, "defrag")
            assert out == f"Finished defragmenting etcd member[{step[0].client_url}]\n"
            after = _db_sizes(h)
            assert after[step[0].name] < sizes[step[0].name] / 4, (step[0].name, sizes, after)
        _wait_published(h)  # etcdctl --cluster skips a member whose client URLs are unknown
        out = _etcdctl([leader], "defrag", "--cluster")
        assert sorted(out.splitlines()) == sorted(
            f"Finished defragmenting etcd member[{m.client_url}]" for m in h.members)
        after = _db_sizes(h)
        assert all(after[name] < sizes[name] / 4 for name in sizes), (sizes, after)
        time.sleep(0.3)  # writes after the last defrag too
    finally:
        writer.stop.set()
        writer.join(30)
    assert not writer.failed, writer.failed[:5]
    assert len(writer.written) > 20, len(writer.written)
    assert writer.slowest_s > HOLD_S / 2, writer.slowest_s  # some write waited for a defrag
    assert h.leader() is leader and h.status(leader)["header"]["raft_term"] == term

    last = c.put("/after", "x")["header"]["revision"]
    deadline = time.monotonic() + WAIT_S
    while len(seen) < len(writer.written):
        assert time.monotonic() < deadline, (len(seen), len(writer.written))
        time.sleep(0.05)
    assert seen == writer.written  # every write, in order, none twice
    watcher.cancel_watch(watch_id)
    hashes = {m.name: _hash_kv(h, m, last) for m in h.members}
    assert len(set(hashes.values())) == 1, hashes
    contents = {m.name: _contents(h, m) for m in h.members}
    assert all(x == contents[leader.name] for x in contents.values())
    keys = [k for k, *_ in contents[leader.name]]
    assert keys == [b"/after", b"/keep", b"/keep2"] + [k for k, _ in writer.written]


@pytest.mark.skipif(not ETCDCTL, reason="etcdctl is not installed (tools/install_etcd.sh)")
def test_a_member_killed_during_its_defrag_restarts_whole(make_cluster, monkeypatch):
    """SIGKILL while the defrag holds the member's applies (writes the others acknowledged wait
    in its WAL): it restarts on its old file, applies them, and agrees with the others."""
    monkeypatch.setenv("RAFTKV_DEFRAG_HOLD_S", "60")
    h = make_cluster(3)
    c = h.client(timeout=10.0)
    for i in range(20):
        c.put(f"/k/{i}", str(i))
    leader = h.leader()
    m = next(x for x in h.members if x is not leader)
    _hash_kv(h, m, c.put("/k/x", "x")["header"]["revision"])  # m has applied everything
    before = _file(m)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    defrag = subprocess.Popen([ETCDCTL, "--endpoints", m.client_url, "--command-timeout=90s",
                               "defrag"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=env, text=True)
    try:
        h.wait_log(m, "defragmenting the store")
        last = c.put("/k/during", "d")["header"]["revision"]  # the leader and the other one
        # m's apply of it waits for the defrag, and so does a serializable read there
        with pytest.raises(wire.RaftkvError, match="timed out"):
            h.client([m], timeout=1.0).get("/k/during", serializable=True)
        h.kill(m)
        assert defrag.wait(30) != 0
    finally:
        if defrag.poll() is None:
            defrag.kill()
            defrag.wait(10)
    assert _file(m) == before  # the old file, untouched
    h.start_member(m)
    hashes = {x.name: _hash_kv(h, x, last) for x in h.members}
    assert len(set(hashes.values())) == 1, hashes
    assert h.client([m]).get("/k/during", serializable=True)[0] == b"d"
