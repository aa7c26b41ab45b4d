"""Range and compare evaluation shared by plain ranges and txns (pure functions over fields).

Stored fields are the list [key, create_revision, mod_revision, version, value, lease].
"""
from __future__ import annotations

from raftkv.mvcc.codec import kv_dict

# sort_target (0 KEY, 1 VERSION, 2 CREATE, 3 MOD, 4 VALUE) -> field index
SORT_FIELD = (0, 3, 1, 2, 4)
# compare target (0 VERSION, 1 CREATE, 2 MOD, 3 VALUE, 4 LEASE) -> (field index, body field)
COMPARE_FIELD = ((3, "version"), (1, "create_revision"), (2, "mod_revision"), (4, "value"),
                 (5, "lease"))
EMPTY_FIELDS = (b"", 0, 0, 0, b"", 0)


def needs_full_read(body):
    """(sort order, read the whole range?) as etcd 3.4's applierV3backend.Range: it reads the
    whole range when the request names a sort order or a revision filter, then sorts and
    truncates. A sort target other than KEY with order NONE sorts ASCEND, but only the
    first limit + 1 keys read in key order (etcd decides the read on the order as sent)."""
    order = body.get("sort_order", 0)
    filtered = (body.get("min_mod_revision", 0) or body.get("max_mod_revision", 0)
                or body.get("min_create_revision", 0) or body.get("max_create_revision", 0))
    full = bool(order or filtered)
    if order == 0 and body.get("sort_target", 0) != 0:
        order = 1
    return order, full


def filter_and_sort(fields, body, order):
    lo_mod, hi_mod = body.get("min_mod_revision", 0), body.get("max_mod_revision", 0)
    lo_cr, hi_cr = body.get("min_create_revision", 0), body.get("max_create_revision", 0)
    if lo_mod:
        fields = [f for f in fields if f[2] >= lo_mod]
    if hi_mod:
        fields = [f for f in fields if f[2] <= hi_mod]
    if lo_cr:
        fields = [f for f in fields if f[1] >= lo_cr]
    if hi_cr:
        fields = [f for f in fields if f[1] <= hi_cr]
    if order:
        idx = SORT_FIELD[body.get("sort_target", 0)]
        fields = sorted(fields, key=lambda f: f[idx], reverse=order == 2)
    return fields


def range_response(fields, body, count, header_rev, order):
    """The RangeResponse dict from the fields read (all of them when `order` or filters)."""
    limit = body.get("limit", 0)
    if body.get("count_only"):
        return {"header": {"revision": header_rev}, "kvs": [], "more": False, "count": count}
    fields = filter_and_sort(fields, body, order)
    more = False
    if 0 < limit < len(fields):
        fields = fields[:limit]
        more = True
    kvs = [kv_dict(f) for f in fields]
    if body.get("keys_only"):
        for kv in kvs:
            kv["value"] = b""
    return {"header": {"revision": header_rev}, "kvs": kvs, "more": more, "count": count}


def compare_ok(cmp, fields_list):
    """etcd's applyCompare over the kvs of the compare's key or range."""
    target = cmp.get("target", 0)
    idx, name = COMPARE_FIELD[target]
    if not fields_list:
        if target == 3:
            return False  # a VALUE compare on a missing key always fails
        fields_list = [EMPTY_FIELDS]
    want = cmp.get(name, b"" if target == 3 else 0)
    result = cmp.get("result", 0)
    for f in fields_list:
        have = f[idx]
        if result == 0:
            ok = have == want
        elif result == 1:
            ok = have > want
        elif result == 2:
            ok = have < want
        else:
            ok = have != want
        if not ok:
            return False
    return True
