"""How a member opens its data dir, each a real member process on a stopped member's data dir
(found by hand):

- member-identity.json and wal-identity.json both deleted: the WAL (which has an identity)
  was taken for one written before WAL identities, and the member started on it;
- a 0-byte data.mdb beside the WAL: LMDB wrote a new store into it before a later check
  refused the start (or the member started on an empty store), so a refused start had changed
  a file;
- a data dir, WAL dir or store on a read-only mount: "cannot start: [Errno 30] Read-only file
  system", or for data.mdb the advice to remove the member as if its store were damaged.

Refusals exit with status 2, say what is wrong and what to do, and change no file.
"""
from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess

import pytest

from tests.cluster.test_damaged_data_dir import _refused, _stopped_member_with_data

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

START_S = 60.0  # a refused start's process ends within this


def _tree_digest(path):
    """sha256 of every file under path except lock.mdb (LMDB rewrites it at every open)."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            if name != "lock.mdb":
                full = os.path.join(root, name)
                with open(full, "rb") as f:
                    out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _serves_its_data(h, m, puts=20):
    h.start_member(m)
    h.leader()
    c = h.client([m], timeout=10.0)
    got = {meta.key: value for value, meta in c.get_prefix("k")}
    assert got == {f"k{i}".encode(): f"v{i}".encode() for i in range(puts)}
    h.close_clients()
    assert h.stop_member(m) == 0


# ---------------------------------------------------------------- identity files

def test_both_identity_files_deleted_are_refused_and_start_once_back(make_cluster):
    h, m = _stopped_member_with_data(make_cluster)
    saved = {}
    for name in ("member-identity.json", "wal-identity.json"):
        path = os.path.join(m.data_dir, name)
        with open(path, "rb") as f:
            saved[path] = f.read()
        os.unlink(path)
    before = _tree_digest(m.data_dir)
    with open(os.path.join(m.data_dir, "wal", "wal-id"), encoding="ascii") as f:
        wal_id = f.read().strip()
    _refused(h, m, "wal-identity.json and member-identity.json are missing",
             f"has an identity ({wal_id})", "Put the files back from a backup",
             "restore this member from its peers")
    assert _tree_digest(m.data_dir) == before  # a refused start changes no file
    for path, body in saved.items():
        with open(path, "wb") as f:
            f.write(body)
    _serves_its_data(h, m)


# ---------------------------------------------------------------- an empty data.mdb

def test_an_empty_data_mdb_beside_the_wal_is_refused_and_left_empty(make_cluster):
    """Refused as a missing data.mdb is (its store is lost): rebuilding it from the WAL is
    possible only while the WAL still holds the whole log, and restoring the member from its
    peers is the remedy either way."""
    h, m = _stopped_member_with_data(make_cluster)
    data_file = os.path.join(m.data_dir, "data.mdb")
    os.truncate(data_file, 0)
    before = _tree_digest(m.data_dir)
    _refused(h, m, "data.mdb is empty (0 bytes) but the data dir holds",
             "its store is lost", "remove the member from the cluster and add it back")
    assert os.path.getsize(data_file) == 0
    assert _tree_digest(m.data_dir) == before


# ---------------------------------------------------------------- read-only mounts

def _can_mount_read_only(tmp_path):
    """Whether this process may bind-mount a directory read-only in a private mount namespace
    (root, or CAP_SYS_ADMIN: what the tests below need); the reason when not."""
    probe = tmp_path / "ro-probe"
    probe.mkdir()
    if shutil.which("unshare") is None:
        return "no unshare(1) on this machine"
    sh = (f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && "
          f"! touch {probe}/x 2>/dev/null")
    try:
        done = subprocess.run(["unshare", "-m", "sh", "-c", sh], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -m failed: {exc}"
    if done.returncode != 0:
        return f"cannot bind-mount read-only here: {done.stderr.strip() or done.returncode}"
    return None


def _start_with_read_only(h, m, target):
    """Start m in its own mount namespace where target (a directory or file) is a read-only
    bind mount of itself: the mount ends with the process, nothing to undo. Returns (exit
    status, output)."""
    cmd = " ".join(shlex.quote(a) for a in h.cluster.command(m))
    t = shlex.quote(target)
    sh = f"mount --bind {t} {t} && mount -o remount,bind,ro {t} && exec {cmd}"
    done = subprocess.run(["unshare", "-m", "sh", "-c", sh], capture_output=True, text=True,
                          timeout=START_S, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


READ_ONLY = {  # what is mounted read-only -> (the path named, the directory's name)
    "data dir": ("", "raftkv.lock", "data dir"),
    "WAL dir": ("wal", "wal/0000000000000001.wal", "data dir"),
    "data.mdb": ("data.mdb", "data.mdb", "data dir"),
}


@pytest.mark.parametrize("case", sorted(READ_ONLY))
def test_a_read_only_data_dir_is_refused_with_what_to_do(make_cluster, tmp_path, case):
    why = _can_mount_read_only(tmp_path)
    if why:
        pytest.skip(why)
    rel, named, what = READ_ONLY[case]
    h, m = _stopped_member_with_data(make_cluster)
    before = _tree_digest(m.data_dir)
    status, out = _start_with_read_only(h, m, os.path.join(m.data_dir, rel))
    assert status == 2, out
    assert "refusing to start" in out and "Traceback" not in out, out
    assert f"{os.path.join(m.data_dir, named)}: cannot " in out, out
    assert "Read-only file system (errno 30, EROFS)" in out, out
    assert f"the {what} is on a read-only file system: remount it read-write" in out, out
    assert "remove the member" not in out, out  # not the advice for a damaged store
    assert _tree_digest(m.data_dir) == before
    _serves_its_data(h, m)  # writable again: it starts
