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


class LogDivergedError(RaftError):
    """The leader's log contradicts an entry this member counted as committed: a quorum's logs
    lost committed entries (damaged data dirs) and elected a leader that lacks them. Raft
    never lets this happen to intact logs (Leader Completeness, §5.4), so the member can
    neither follow that leader (it would drop committed entries its state machine applied)
    nor go on as if nothing happened; the caller must stop it. Raised by step() before the
    member sends or changes anything durable."""

    def __init__(self, leader, term, index, log_term, leader_log_term, committed):
        super().__init__(
            f"leader {leader:x} of term {term} has entry {index} of term {leader_log_term} "
            f"where this member's log has term {log_term}, and this member counted entries "
            f"up to {committed} as committed: the leader lacks committed entries")
        self.leader = leader
        self.term = term
        self.index = index
        self.log_term = log_term
        self.leader_log_term = leader_log_term
        self.committed = committed
