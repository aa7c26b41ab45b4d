"""Errors of the Raft core and of its Storage protocol (same meanings as etcd-io/raft)."""


class RaftError(Exception):
    """Base class for errors raised by raftkv.raft."""


class CompactedError(RaftError):
    """The requested index is older than the storage's first index (compacted away)."""


class UnavailableError(RaftError):
    """The requested index is newer than the storage's last index."""


class SnapshotOutOfDateError(RaftError):
    """The snapshot to apply is older than the one already held."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """The storage cannot produce a snapshot right now; the leader retries later."""


class ProposalDroppedError(RaftError):
    """The proposal was not accepted (no leader, leader transfer under way, or limits hit)."""


class StepLocalMsgError(RaftError):
    """A local-only message type was passed to step() from the network."""
