"""How Engine opens a data dir it may not, or should not, write: an empty (0-byte) data.mdb
beside a member's other files is refused before LMDB writes a new store into it, and a store
the process may not write is refused with the path, the operation, the errno and what to do
(the member's real-process tests: tests/cluster/test_data_dir_startup.py)."""
import errno
import os

import pytest

from raftkv.storage import engine as engine_mod
from raftkv.storage.engine import DATA_FILE, MAGIC, MAGIC_KEY, META_DB, DataDirError, Engine
from raftkv.storage.errors import DirAccessError, writable


def _made(path):
    Engine(str(path)).close()  # a store with its format marker
    return path


@pytest.mark.parametrize("beside", ["wal", "member-identity.json"])
def test_an_empty_data_file_beside_a_members_files_is_refused_and_left_empty(tmp_path, beside):
    """LMDB took a 0-byte data.mdb for a new environment and wrote one into it, so a start
    refused later (the store applied below the WAL's compaction point) had changed it."""
    d = _made(tmp_path / "d")
    (d / beside).mkdir() if beside == "wal" else (d / beside).write_text("{}")
    os.truncate(d / DATA_FILE, 0)
    with pytest.raises(DataDirError, match=rf"data.mdb is empty \(0 bytes\) but the data dir "
                                           rf"holds \['{beside}'\]: its store is lost"):
        Engine(str(d))
    assert os.path.getsize(d / DATA_FILE) == 0
    with pytest.raises(DataDirError, match="is empty"):
        Engine(str(d), readonly=True)
    assert os.path.getsize(d / DATA_FILE) == 0


def test_an_empty_data_file_alone_is_a_new_store(tmp_path):
    """A first start cut short before LMDB wrote its first pages: a new data dir, as an empty
    directory (or one whose data.mdb is missing and holds nothing else) is."""
    d = _made(tmp_path / "d")
    os.truncate(d / DATA_FILE, 0)  # lock.mdb is left beside it
    with Engine(str(d)) as e:
        with e.env.begin(db=e.db(META_DB)) as txn:
            assert txn.get(MAGIC_KEY) == MAGIC
    assert os.path.getsize(d / DATA_FILE) > 0


def test_a_store_it_may_not_write_is_refused_with_what_to_do(tmp_path, monkeypatch):
    """LMDB says only "Permission denied" (no file, no errno), and the member's message then
    advised removing the member as if the store were damaged. (Root writes through file modes:
    the open is made to fail as it does for another user; tests/cluster/test_data_dir_startup.py
    uses a read-only mount.)"""
    d = _made(tmp_path / "d")
    real_open = os.open

    def denied(path, flags, *args):
        if os.path.basename(path) == DATA_FILE and flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(engine_mod.os, "open", denied)
    with pytest.raises(DirAccessError) as info:
        Engine(str(d))
    msg = str(info.value)
    assert msg.startswith(f"{d / DATA_FILE}: cannot open data.mdb for reading and writing")
    assert "(errno 13, EACCES)" in msg and f"uid {os.geteuid()}" in msg
    assert "chown" in msg and "chmod" in msg


def test_writable_names_a_read_only_mount_and_lets_other_errors_through(tmp_path):
    with pytest.raises(DirAccessError, match=r"/x/y: cannot write it: Read-only file system "
                                             r"\(errno 30, EROFS\); the WAL dir is on a "
                                             r"read-only file system: remount it read-write"):
        with writable("write it", "WAL dir"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/x/y")
    with pytest.raises(OSError) as info:
        with writable("write it"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/x/y")
    assert info.value.errno == errno.ENOSPC and not isinstance(info.value, DirAccessError)
