"""Storage errors, shared by the C and pure-Python backends so callers catch one class."""
import contextlib
import errno
import os


# What a member whose own data is damaged should do (the refusals' advice).
RESTORE_FROM_PEERS = ("restore this member from its peers: remove it from the cluster and add "
                      "it back with an empty data dir")


class StorageError(Exception):
    """Base class for every error raised by raftkv.storage."""


class CorruptEntryError(StorageError):
    """A log record failed its length or CRC32C check.

    index is the Raft index of the first bad record when it can be known (the record before it
    was good), else None; offset is the byte offset of the bad frame in the decoded buffer.
    """

    def __init__(self, message: str, index: int | None = None, offset: int | None = None):
        super().__init__(message)
        self.index = index
        self.offset = offset


# The errnos of a directory or file the process may not write: permissions or ownership
# (EACCES), an attribute or a security module (EPERM), a read-only mount (EROFS).
ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class DirAccessError(StorageError):
    """A file the member must write in its data dir or WAL dir refused the write (ACCESS_ERRNOS):
    the start is refused with the path, the operation, the errno and what to do."""


def access_advice(err, what="data dir"):
    """What to do about an ACCESS_ERRNOS errno err met in the `what` (the refusals' advice)."""
    if err == errno.EROFS:
        return (f"the {what} is on a read-only file system: remount it read-write, or give the "
                f"member a {what} on a writable one")
    who = f"uid {os.geteuid()}, gid {os.getegid()}"
    if err == errno.EPERM:
        return (f"the {what} must be writable by the user raftkv runs as ({who}): fix its "
                f"ownership or permissions (chown, chmod), or clear an immutable or "
                f"append-only attribute (lsattr, chattr -i -a)")
    return (f"the {what} and its files must be writable by the user raftkv runs as ({who}): "
            f"fix their ownership or permissions (chown -R, chmod -R u+rwX), or run raftkv as "
            f"the user that owns them")


@contextlib.contextmanager
def writable(doing, what="data dir"):
    """Within the block, an OSError of ACCESS_ERRNOS (a write the file system or the
    permissions refuse) becomes a DirAccessError that names the path, the operation (doing:
    "open the WAL for writing", say), the errno and what to do. Other OSErrors pass."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in ACCESS_ERRNOS:
            raise
        raise DirAccessError(access_message(exc, doing, what)) from None


def access_message(exc, doing, what="data dir"):
    name = errno.errorcode.get(exc.errno, "?")
    where = f"{exc.filename}: " if exc.filename else ""
    return (f"{where}cannot {doing}: {exc.strerror} (errno {exc.errno}, {name}); "
            f"{access_advice(exc.errno, what)}")
