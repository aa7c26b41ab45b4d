"""The Raft vocabulary: entries, hard state, configuration, snapshots and messages.

These are plain slotted dataclasses shared by the core (raftkv.raft), the storage engine
(raftkv.storage), the simulator (tests/sim) and the server's peer transport. Message and
entry type numbers follow etcd-io/raft's raftpb so that transcripts read alike.

Nothing here does I/O. Wire encoding of messages is the transport's business
(raftkv.server.peer); log-entry framing is the storage codec's (csrc/entry_codec.h).
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

# A member id of 0 means "nobody" (no vote cast, no known leader), as in etcd-io/raft.
NONE = 0


class EntryType(enum.IntEnum):
    NORMAL = 0  # application data (a batch of client requests), or empty (a leader's no-op)
    CONF_CHANGE = 1  # data is an encoded ConfChangeV2 (raftkv uses only the V2 form)


@dataclass(slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes counted against message and uncommitted-size limits (payload plus framing)."""
        return len(self.data) + 25


@dataclass(slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent (Raft §5.1, §5.2)."""

    term: int = 0
    vote: int = NONE
    commit: int = 0

    def is_empty(self) -> bool:
        return self.term == 0 and self.vote == NONE and self.commit == 0


@dataclass(slots=True)
class ConfState:
    """The membership configuration, possibly joint (voters_outgoing non-empty)."""

    voters: list[int] = field(default_factory=list)
    learners: list[int] = field(default_factory=list)
    voters_outgoing: list[int] = field(default_factory=list)  # non-empty only in a joint config
    learners_next: list[int] = field(default_factory=list)  # learners once the joint config is left
    auto_leave: bool = False


@dataclass(slots=True)
class SnapshotMetadata:
    conf_state: ConfState = field(default_factory=ConfState)
    index: int = 0
    term: int = 0


@dataclass(slots=True)
class Snapshot:
    """A state-machine image at metadata.index. data is opaque to the core."""

    data: bytes = b""
    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)

    def is_empty(self) -> bool:
        return self.metadata.index == 0


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    UPDATE_NODE = 2
    ADD_LEARNER_NODE = 3


class ConfChangeTransition(enum.IntEnum):
    AUTO = 0  # simple change if possible, else joint with automatic leave
    JOINT_IMPLICIT = 1  # joint, left automatically
    JOINT_EXPLICIT = 2  # joint, left by an explicit empty ConfChangeV2


@dataclass(slots=True)
class ConfChangeSingle:
    type: ConfChangeType
    node_id: int


@dataclass(slots=True)
class ConfChangeV2:
    transition: ConfChangeTransition = ConfChangeTransition.AUTO
    changes: list[ConfChangeSingle] = field(default_factory=list)
    context: bytes = b""  # opaque to the core; the server puts member URLs here


class MsgType(enum.IntEnum):
    HUP = 0  # local: start an election
    BEAT = 1  # local: leader sends heartbeats
    PROP = 2  # local or forwarded proposal
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    SNAP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    UNREACHABLE = 10  # local: transport reports a peer unreachable
    SNAP_STATUS = 11  # local: transport reports snapshot delivery result
    CHECK_QUORUM = 12  # local
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESP = 16
    PRE_VOTE = 17
    PRE_VOTE_RESP = 18


# Messages generated and consumed inside one member; never put on the wire.
LOCAL_MSGS = frozenset(
    {MsgType.HUP, MsgType.BEAT, MsgType.UNREACHABLE, MsgType.SNAP_STATUS, MsgType.CHECK_QUORUM}
)

# Responses, mapped from the request type (used for term handling and vote bookkeeping).
RESPONSE_OF = {
    MsgType.APP: MsgType.APP_RESP,
    MsgType.VOTE: MsgType.VOTE_RESP,
    MsgType.HEARTBEAT: MsgType.HEARTBEAT_RESP,
    MsgType.READ_INDEX: MsgType.READ_INDEX_RESP,
    MsgType.PRE_VOTE: MsgType.PRE_VOTE_RESP,
}


@dataclass(slots=True)
class Message:
    type: MsgType
    to: int = NONE
    frm: int = NONE  # "from" is a Python keyword
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(slots=True)
class ReadState:
    """A confirmed read: the state machine may serve request_ctx once applied >= index."""

    index: int
    request_ctx: bytes


# ConfChangeV2 wire form inside a CONF_CHANGE entry: transition u8 | count u16 | (type u8,
# node_id u64) * count | context. Big-endian. Kept here so the core, storage and server agree.
_CC_HEAD = struct.Struct(">BH")
_CC_ITEM = struct.Struct(">BQ")


def encode_conf_change(cc: ConfChangeV2) -> bytes:
    parts = [_CC_HEAD.pack(int(cc.transition), len(cc.changes))]
    parts += [_CC_ITEM.pack(int(c.type), c.node_id) for c in cc.changes]
    parts.append(bytes(cc.context))
    return b"".join(parts)


def decode_conf_change(data: bytes) -> ConfChangeV2:
    if len(data) < _CC_HEAD.size:
        raise ValueError("conf change entry too short")
    transition, count = _CC_HEAD.unpack_from(data, 0)
    off = _CC_HEAD.size
    if len(data) < off + count * _CC_ITEM.size:
        raise ValueError("conf change entry truncated")
    changes = []
    for _ in range(count):
        typ, node_id = _CC_ITEM.unpack_from(data, off)
        changes.append(ConfChangeSingle(ConfChangeType(typ), node_id))
        off += _CC_ITEM.size
    return ConfChangeV2(ConfChangeTransition(transition), changes, bytes(data[off:]))
