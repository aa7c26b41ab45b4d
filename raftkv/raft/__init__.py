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
