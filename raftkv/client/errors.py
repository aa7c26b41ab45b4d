"""Errors the client raises besides RaftkvError (which comes from the server)."""
from __future__ import annotations

from raftkv.api.wire import RaftkvError


class ConnectionLost(ConnectionError):
    """The connection closed while a request was pending or before one could be sent."""


class ConnectionFailedError(ConnectionError):
    """No endpoint could be reached before the request's timeout."""


class TLSHandshakeError(ConnectionFailedError):
    """TLS with a member failed in a way a retry would not fix: its certificate did not
    verify, it refused ours (or our lack of one), or it does not speak TLS. The request fails
    at once instead of retrying until its timeout; the message names the endpoint and why."""


class LockTimeout(TimeoutError):
    """A lock could not be acquired within the time asked for."""


class WatchTimedOut(TimeoutError):
    """watch_once() or watch_prefix_once() saw no event within its timeout (python-etcd3's
    WatchTimedOut, here also a TimeoutError)."""


class ElectionNotLeader(Exception):
    """Election.proclaim() by a candidate that does not hold its key any more (etcd's
    ErrElectionNotLeader)."""


class RevisionCompactedError(RaftkvError):
    """A watch asked for events from a revision the store has compacted away: the events
    before compacted_revision are gone, so the watch was canceled. Start again from
    compacted_revision (after re-reading the state) to go on; python-etcd3 raises its
    RevisionCompactedError the same way."""

    def __init__(self, compacted_revision, header=None):
        super().__init__("COMPACTED")
        self.compacted_revision = compacted_revision
        self.header = header or {}  # the canceling response's header (a watch's)
