"""Errors the client raises besides RaftkvError (which comes from the server)."""
from __future__ import annotations

from raftkv.api.wire import RaftkvError


class ConnectionLost(ConnectionError):
    """The connection closed while a request was pending or before one could be sent."""


class ConnectionFailedError(ConnectionError):
    """No endpoint could be reached before the request's timeout."""


class LockTimeout(TimeoutError):
    """A lock could not be acquired within the time asked for."""


class RevisionCompactedError(RaftkvError):
    """A watch asked for events from a revision the store has compacted away: the events
    before compacted_revision are gone, so the watch was canceled. Start again from
    compacted_revision (after re-reading the state) to go on; python-etcd3 raises its
    RevisionCompactedError the same way."""

    def __init__(self, compacted_revision):
        super().__init__("COMPACTED")
        self.compacted_revision = compacted_revision
