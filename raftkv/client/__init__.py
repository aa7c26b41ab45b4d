"""raftkv.client: native-protocol clients, python-etcd3's API.

AsyncClient (asyncio) and Client (blocking, same methods). See aio.py for failover, retries
and idempotent writes, lock.py for the lock recipe.
"""
from raftkv.client.aio import AsyncClient
from raftkv.client.errors import (
    ConnectionFailedError,
    ConnectionLost,
    LockTimeout,
    RevisionCompactedError,
    TLSHandshakeError,
)
from raftkv.client.sync import Client
from raftkv.client.types import (
    DeleteEvent,
    Event,
    KVMetadata,
    ProgressNotify,
    PutEvent,
    PutManyResult,
)

__all__ = [
    "AsyncClient", "Client", "ConnectionFailedError", "ConnectionLost", "DeleteEvent", "Event",
    "KVMetadata", "LockTimeout", "ProgressNotify", "PutEvent", "PutManyResult",
    "RevisionCompactedError", "TLSHandshakeError",
]
