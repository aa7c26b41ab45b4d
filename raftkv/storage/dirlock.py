"""One process per data dir: an exclusive flock on DIR/LOCK_FILE, held while a member runs.

Two members started on the same data dir (or the same --wal-dir), say by a service manager and
by hand, would both append to the WAL and write the store: the second start must fail at once,
before it touches anything. etcd locks its WAL files for the same reason. The kernel drops the
lock when the process ends however it ends (SIGKILL too), so a crash never leaves a stale lock
behind; the PID written into the file is only for the message.
"""
from __future__ import annotations

import errno
import fcntl
import os

from raftkv.storage.errors import StorageError, writable

LOCK_FILE = "raftkv.lock"


class DirInUseError(StorageError):
    """Another process holds the directory's lock."""


ADVICE_MEMBER = ("one member at a time may run on it: stop that process first, or give this "
                 "one its own --data-dir")


class DirLock:
    """Holds DIR/LOCK_FILE locked (LOCK_EX | LOCK_NB) until release(). what: how the message
    names the directory ("data dir", "WAL dir"); advice: what the refusal tells the user to
    do (a member start's by default)."""

    def __init__(self, directory, what, advice=ADVICE_MEMBER):
        self.path = os.path.join(os.fspath(directory), LOCK_FILE)
        with writable(f"create the {what}", what):
            os.makedirs(os.fspath(directory), mode=0o700, exist_ok=True)
        self._fd = None
        with writable(f"open the {what}'s lock file {LOCK_FILE} for writing", what):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise DirInUseError(f"{directory}: cannot lock the {what}: {exc}") from exc
            raise DirInUseError(
                f"{directory}: the {what} is in use by another process"
                f"{f' (PID {holder})' if holder else ''}; {advice}") from None
        self._fd = fd

    def record_pid(self):
        """Write this process's PID into the lock file, for another start's message (the
        member does once its start is past every refusal, which must change nothing)."""
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self):
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
