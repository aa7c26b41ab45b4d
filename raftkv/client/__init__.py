"""raftkv.client: native-protocol clients, python-etcd3's API.

AsyncClient (asyncio) and Client (blocking, same methods). See aio.py for failover, retries
and idempotent writes, lock.py for the lock recipe, election.py for leader elections and
lease.py for Session (a lease kept alive). README.md "Python client" lists where the API
differs from python-etcd3's.
"""
from raftkv.client.aio import AsyncClient
from raftkv.client.errors import (
    ConnectionFailedError,
    ConnectionLost,
    ElectionNotLeader,
    LockTimeout,
    RevisionCompactedError,
    TLSHandshakeError,
    WatchTimedOut,
)
from raftkv.client.election import Election
from raftkv.client.lease import Session
from raftkv.client.sync import Client
from raftkv.client.types import (
    DeleteEvent,
    Event,
    KVMetadata,
    ProgressNotify,
    PutEvent,
    PutManyResult,
    WatchResponse,
)

__all__ = [
    "AsyncClient", "Client", "ConnectionFailedError", "ConnectionLost", "DeleteEvent",
    "Election", "ElectionNotLeader", "Event", "KVMetadata", "LockTimeout", "ProgressNotify",
    "PutEvent", "PutManyResult", "RevisionCompactedError", "Session", "TLSHandshakeError",
    "WatchResponse", "WatchTimedOut",
]
