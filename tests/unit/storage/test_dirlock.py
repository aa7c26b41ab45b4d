"""storage/dirlock.py: one holder per directory, the holder's PID in the refusal, and the lock
gone with its holder (also a process killed with SIGKILL)."""
import os
import signal
import subprocess
import sys

import pytest

from raftkv.storage.dirlock import LOCK_FILE, DirInUseError, DirLock


def test_a_second_lock_is_refused_until_the_first_is_released(tmp_path):
    first = DirLock(tmp_path, "data dir")
    first.record_pid()
    with pytest.raises(DirInUseError) as err:
        DirLock(tmp_path, "data dir")
    assert f"the data dir is in use by another process (PID {os.getpid()})" in str(err.value)
    first.release()
    first.release()  # twice is harmless
    DirLock(tmp_path / "new", "WAL dir").release()  # creates the directory
    again = DirLock(tmp_path, "data dir")
    assert open(tmp_path / LOCK_FILE).read() == f"{os.getpid()}\n"  # until record_pid
    again.release()


def test_the_lock_goes_with_a_killed_holder(tmp_path):
    code = ("import sys, time; from raftkv.storage.dirlock import DirLock; "
            f"DirLock({str(tmp_path)!r}, 'data dir').record_pid(); print('held', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"held\n"
        with pytest.raises(DirInUseError, match=f"PID {proc.pid}"):
            DirLock(tmp_path, "data dir")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    DirLock(tmp_path, "data dir").release()
