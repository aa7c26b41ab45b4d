"""Test helpers: a store over a tmp Engine and an apply-and-commit wrapper."""
from __future__ import annotations

from raftkv.errors import RaftkvError
from raftkv.mvcc import KVStore
from raftkv.storage.engine import Engine


class Harness:
    """An Engine + KVStore with a Raft-index counter: h.apply(reqs) commits one entry."""

    def __init__(self, path, **kw):
        self.path = path
        self.kw = kw
        self.engine = Engine(path)
        self.store = KVStore(self.engine, **kw)
        self.index = self.store.applied_index

    def apply(self, requests, index=None):
        self.index = self.index + 1 if index is None else index
        with self.engine.env.begin(write=True) as txn:
            out = self.store.apply(txn, self.index, requests)
        self.store.committed()
        return out

    def one(self, op, body):
        """Apply one request; return its response or raise its RaftkvError."""
        (resp,) = self.apply([(op, body)])
        if isinstance(resp, RaftkvError):
            raise resp
        return resp

    def put(self, key, value=b"v", **kw):
        return self.one("put", dict(key=key, value=value, **kw))

    def delete(self, key, range_end=b"", **kw):
        return self.one("delete_range", dict(key=key, range_end=range_end, **kw))

    def get(self, key, range_end=b"", **kw):
        return self.store.range(dict(key=key, range_end=range_end, **kw))

    def reopen(self):
        self.engine.close()
        self.engine = Engine(self.path)
        self.store = KVStore(self.engine, **self.kw)
        self.index = self.store.applied_index
        return self.store

    def close(self):
        self.engine.close()


def kv(key, value, create, mod, version, lease=0):
    return {"key": key, "create_revision": create, "mod_revision": mod, "version": version,
            "value": value, "lease": lease}
