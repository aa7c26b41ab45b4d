"""Deterministic Raft core: a pure state machine with no I/O, clock, threads or global randomness.

The public API (RawNode, Config, Ready, ...) is re-exported here as it is built; the shared
vocabulary lives in raftkv.raft.types.
"""
from raftkv.raft.types import (  # noqa: F401
    NONE,
    ConfChangeSingle,
    ConfChangeTransition,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Snapshot,
    SnapshotMetadata,
)
from raftkv.raft.raft import Config, StateType  # noqa: F401,E402
from raftkv.raft.rawnode import RawNode, Ready, Role, SoftState  # noqa: F401,E402
from raftkv.raft.storage import MemoryStorage, Storage  # noqa: F401,E402
from raftkv.raft.types import decode_conf_change, encode_conf_change  # noqa: F401,E402
