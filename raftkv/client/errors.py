"""Errors the client raises besides RaftkvError (which comes from the server)."""
from __future__ import annotations


class ConnectionLost(ConnectionError):
    """The connection closed while a request was pending or before one could be sent."""


class ConnectionFailedError(ConnectionError):
    """No endpoint could be reached before the request's timeout."""


class LockTimeout(TimeoutError):
    """A lock could not be acquired within the time asked for."""
