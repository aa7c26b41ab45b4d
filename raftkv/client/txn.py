"""Transaction builders in python-etcd3's style.

    t = client.transactions
    await client.transaction(
        compare=[t.value("k") == b"old", t.version("k") > 0],
        success=[t.put("k", b"new")],
        failure=[t.get("k")])

Compare targets: value, version, create (create_revision), mod (mod_revision), lease.
Operators ==, !=, <, > build the compare; ops are put/get/delete/txn (nested).
"""
from __future__ import annotations

from raftkv.client.types import SORT_ORDERS, SORT_TARGETS, prefix_range_end, to_bytes

_RESULTS = {"==": 0, ">": 1, "<": 2, "!=": 3}
_TARGETS = {"version": (0, "version"), "create": (1, "create_revision"),
            "mod": (2, "mod_revision"), "value": (3, "value"), "lease": (4, "lease")}


class Compare:
    def __init__(self, target, key, range_end=b""):
        assert target in _TARGETS, target
        self.target = target
        self.key = to_bytes(key)
        self.range_end = to_bytes(range_end)
        self.op = None
        self.operand = None

    def _set(self, op, other):
        self.op = op
        self.operand = to_bytes(other) if self.target == "value" else int(other)
        return self

    def __eq__(self, other):
        return self._set("==", other)

    def __ne__(self, other):
        return self._set("!=", other)

    def __lt__(self, other):
        return self._set("<", other)

    def __gt__(self, other):
        return self._set(">", other)

    __hash__ = None

    def to_wire(self):
        if self.op is None:
            raise ValueError("a compare needs an operator: ==, !=, < or >")
        code, field = _TARGETS[self.target]
        out = {"result": _RESULTS[self.op], "target": code, "key": self.key, field: self.operand}
        if self.range_end:
            out["range_end"] = self.range_end
        return out


def _range_body(key, range_end=None, prefix=False, sort_order=None, sort_target="key",
                limit=0, revision=0, keys_only=False, count_only=False, serializable=False):
    key = to_bytes(key)
    body = {"key": key}
    if prefix:
        body["range_end"] = prefix_range_end(key)
    elif range_end is not None:
        body["range_end"] = to_bytes(range_end)
    for name, value in (("limit", limit), ("revision", revision), ("keys_only", keys_only),
                        ("count_only", count_only), ("serializable", serializable)):
        if value:
            body[name] = value
    if sort_order not in (None, "none"):
        body["sort_order"] = SORT_ORDERS[sort_order]
        body["sort_target"] = SORT_TARGETS[sort_target]
    return body


def _put_body(key, value, lease=None, prev_kv=False):
    body = {"key": to_bytes(key), "value": to_bytes(value)}
    if lease:
        body["lease"] = lease if isinstance(lease, int) else lease.id
    if prev_kv:
        body["prev_kv"] = True
    return body


def _delete_body(key, range_end=None, prefix=False, prev_kv=False):
    key = to_bytes(key)
    body = {"key": key}
    if prefix:
        body["range_end"] = prefix_range_end(key)
    elif range_end is not None:
        body["range_end"] = to_bytes(range_end)
    if prev_kv:
        body["prev_kv"] = True
    return body


class Transactions:
    """client.transactions: compare targets and request ops for transaction()."""

    @staticmethod
    def value(key, range_end=b""):
        return Compare("value", key, range_end)

    @staticmethod
    def version(key, range_end=b""):
        return Compare("version", key, range_end)

    @staticmethod
    def create(key, range_end=b""):
        return Compare("create", key, range_end)

    @staticmethod
    def mod(key, range_end=b""):
        return Compare("mod", key, range_end)

    @staticmethod
    def lease(key, range_end=b""):
        return Compare("lease", key, range_end)

    @staticmethod
    def put(key, value, lease=None, prev_kv=False):
        return {"request_put": _put_body(key, value, lease, prev_kv)}

    @staticmethod
    def get(key, range_end=None, **kw):
        return {"request_range": _range_body(key, range_end, **kw)}

    @staticmethod
    def delete(key, range_end=None, prefix=False, prev_kv=False):
        return {"request_delete_range": _delete_body(key, range_end, prefix, prev_kv)}

    @staticmethod
    def txn(compare, success, failure):
        return {"request_txn": txn_body(compare, success, failure)}


def txn_body(compare, success, failure):
    return {"compare": [c.to_wire() if isinstance(c, Compare) else c for c in compare or []],
            "success": list(success or []), "failure": list(failure or [])}
