"""raftkv.mvcc: etcd v3's MVCC state machine (docs/INTERNAL_API.md §4, docs/ARCHITECTURE.md).

KVStore (kvstore.py) applies committed entries inside the caller's LMDB txn; watch.py delivers
events; lease.py holds the Lessor; snapshot.py exports/restores checksummed chunks.
"""
from raftkv.mvcc.kvstore import KVStore
from raftkv.mvcc.lease import Lessor
from raftkv.mvcc.snapshot import SnapshotError
from raftkv.mvcc.watch import Watcher

WatchableStore = KVStore  # the store is watchable: KVStore.watch()

__all__ = ["KVStore", "Lessor", "SnapshotError", "Watcher", "WatchableStore"]
