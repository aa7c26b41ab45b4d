"""Storage errors, shared by the C and pure-Python backends so callers catch one class."""


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
