"""Plain result types and key helpers (python-etcd3's shapes, built from the wire dicts)."""
from __future__ import annotations

import dataclasses

from raftkv.api import wire

SORT_ORDERS = {None: 0, "none": 0, "ascend": 1, "descend": 2}
SORT_TARGETS = {"key": 0, "version": 1, "create": 2, "mod": 3, "value": 4}


def to_bytes(x):
    """Keys and values may be str (utf-8) or bytes."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    if isinstance(x, str):
        return x.encode("utf-8")
    raise TypeError(f"expected str or bytes, got {type(x).__name__}")


def prefix_range_end(prefix):
    """etcd's range end for all keys starting with prefix (clientv3.GetPrefixRangeEnd); str
    or bytes."""
    return wire.prefix_range_end(to_bytes(prefix))


@dataclasses.dataclass(frozen=True)
class KVMetadata:
    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease_id: int

    @classmethod
    def from_kv(cls, kv):
        return cls(kv.get("key", b""), kv.get("create_revision", 0), kv.get("mod_revision", 0),
                   kv.get("version", 0), kv.get("lease", 0))


@dataclasses.dataclass(frozen=True)
class Event:
    """One watch event. type is "PUT" or "DELETE"; PutEvent/DeleteEvent allow isinstance."""

    type: str
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease_id: int
    prev_value: bytes | None = None
    prev_kv: dict | None = None

    @staticmethod
    def from_wire(ev):
        kv = ev.get("kv", {})
        prev = ev.get("prev_kv")
        cls = DeleteEvent if ev.get("type", 0) == 1 else PutEvent
        return cls("DELETE" if cls is DeleteEvent else "PUT", kv.get("key", b""),
                   kv.get("value", b""), kv.get("create_revision", 0),
                   kv.get("mod_revision", 0), kv.get("version", 0), kv.get("lease", 0),
                   prev.get("value") if prev else None, prev)


class PutEvent(Event):
    pass


class DeleteEvent(Event):
    pass


@dataclasses.dataclass(frozen=True)
class ProgressNotify:
    """A watch's progress notification (watch(..., progress_notify=True)): no event came for
    the member's --experimental-watch-progress-notify-interval, and every event up to
    `revision` has been delivered (etcd's bookmark)."""

    revision: int


@dataclasses.dataclass
class WatchResponse:
    """One watch response as the member sent it (Watch.responses()): its header (the wire
    dict: cluster_id, member_id, revision, raft_term) and its Events, or one ProgressNotify."""

    header: dict
    events: list


@dataclasses.dataclass
class PutManyResult:
    """What put_many did: items written, items failed, a few error messages, wall time."""

    done: int = 0
    failed: int = 0
    errors: list = dataclasses.field(default_factory=list)  # the first ERRORS_KEPT messages
    elapsed_s: float = 0.0

    ERRORS_KEPT = 10

    def note_error(self, message):
        if len(self.errors) < self.ERRORS_KEPT:
            self.errors.append(message)
