"""Well-typed but arbitrary requests on the native port of a real 3-member cluster (TESTING.md §7
row 9): random ops with random subsets of their fields, each of the right type but with
extreme values (negative, 2**63, 2**64 - 1, unknown enum numbers, empty or inverted ranges,
nested transactions). Wrong types and broken frames have their fixed cases in
test_bad_input.py; this hunts what type checks cannot see, above all a write that passes the
checks before it is proposed but then fails in the apply on every member. It found one: a
compare with target 99 passed every check, committed, and stopped all three members in their
apply.

Every request must get an answer (OK, or an error with a stable code other than INTERNAL, which
would be an unhandled exception) within the request timeout; afterwards every member is alive,
they agree on the data and still take writes.
"""
from __future__ import annotations

import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.api import wire
from tests.cluster.test_bad_input import Raw, _frame

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(240)]

EXAMPLES = 2000
REPLY_TIMEOUT_S = 15.0
# Fixed examples in CI; RAFTKV_FUZZ_RANDOM=1 draws new ones each run (longer local hunts).
DERANDOMIZE = os.environ.get("RAFTKV_FUZZ_RANDOM") != "1"

INTS = st.one_of(
    st.sampled_from([0, 1, -1, 2, 3, 4, 5, 99, 2 ** 31, -2 ** 31, 2 ** 32, 2 ** 53,
                     2 ** 63 - 1, -2 ** 63, 2 ** 64 - 1]),
    st.integers(-10, 200),
)
KEYS = st.one_of(st.sampled_from([b"", b"\x00", b"/fz/a", b"/fz/b", b"/fz/", b"/fz0",
                                  b"\xff\xff", b"/seed/00"]),
                 st.binary(max_size=12))
BOOLS = st.booleans()


def _body(fields):
    return st.fixed_dictionaries({}, optional=fields)


RANGE_FIELDS = {
    "key": KEYS, "range_end": KEYS, "limit": INTS, "revision": INTS, "sort_order": INTS,
    "sort_target": INTS, "serializable": BOOLS, "keys_only": BOOLS, "count_only": BOOLS,
    "min_mod_revision": INTS, "max_mod_revision": INTS, "min_create_revision": INTS,
    "max_create_revision": INTS,
}
PUT_FIELDS = {"key": KEYS, "value": st.binary(max_size=40), "lease": INTS, "prev_kv": BOOLS,
              "ignore_value": BOOLS, "ignore_lease": BOOLS}
DELETE_FIELDS = {"key": KEYS, "range_end": KEYS, "prev_kv": BOOLS}
COMPARE = _body({"result": INTS, "target": INTS, "key": KEYS, "range_end": KEYS,
                 "version": INTS, "create_revision": INTS, "mod_revision": INTS,
                 "value": st.binary(max_size=8), "lease": INTS})


def _txn(depth):
    ops = [st.fixed_dictionaries({"request_put": _body(PUT_FIELDS)}),
           st.fixed_dictionaries({"request_range": _body(RANGE_FIELDS)}),
           st.fixed_dictionaries({"request_delete_range": _body(DELETE_FIELDS)})]
    if depth:
        ops.append(st.fixed_dictionaries({"request_txn": _txn(depth - 1)}))
    op = st.one_of(ops)
    return _body({"compare": st.lists(COMPARE, max_size=3),
                  "success": st.lists(op, max_size=3), "failure": st.lists(op, max_size=3)})


TEXT = st.one_of(st.sampled_from(["", "u1", "r1", "\u00fc", "x" * 300]),
                 st.text(max_size=8).filter(lambda name: name != "root"))
PERM = _body({"permType": INTS, "key": KEYS, "range_end": KEYS})
AUTH_OPS = {
    "auth_enable": {}, "auth_disable": {}, "auth_status": {}, "user_list": {}, "role_list": {},
    "authenticate": {"name": TEXT, "password": TEXT},
    "user_add": {"name": TEXT, "password": TEXT, "no_password": BOOLS},
    "user_get": {"name": TEXT}, "user_delete": {"name": TEXT},
    "user_change_password": {"name": TEXT, "password": TEXT},
    "user_grant_role": {"user": TEXT, "role": TEXT},
    "user_revoke_role": {"name": TEXT, "role": TEXT},
    "role_add": {"name": TEXT}, "role_get": {"role": TEXT}, "role_delete": {"role": TEXT},
    "role_grant_permission": {"name": TEXT, "perm": PERM},
    "role_revoke_permission": {"role": TEXT, "key": KEYS, "range_end": KEYS},
}

REQUESTS = st.one_of(
    st.tuples(st.just("range"), _body(RANGE_FIELDS)),
    st.tuples(st.just("put"), _body(PUT_FIELDS)),
    st.tuples(st.just("delete_range"), _body(DELETE_FIELDS)),
    st.tuples(st.just("txn"), _txn(2)),
    st.tuples(st.just("compact"), _body({"revision": INTS, "physical": BOOLS})),
    st.tuples(st.just("lease_grant"), _body({"TTL": INTS, "ID": INTS})),
    st.tuples(st.just("lease_revoke"), _body({"ID": INTS})),
    st.tuples(st.just("lease_keepalive"), _body({"ID": INTS})),
    st.tuples(st.just("lease_timetolive"), _body({"ID": INTS, "keys": BOOLS})),
    st.tuples(st.just("lease_leases"), st.just({})),
    st.tuples(st.just("hash_kv"), _body({"revision": INTS})),
    st.tuples(st.just("status"), st.just({})),
    st.tuples(st.just("member_list"), st.just({})),
    # Membership changes only with IDs no member has (random 64-bit IDs never match).
    st.tuples(st.just("member_remove"), _body({"ID": INTS})),
    st.tuples(st.just("member_promote"), _body({"ID": INTS})),
    st.tuples(st.just("move_leader"), _body({"targetID": INTS})),
    st.tuples(st.just("alarm"), _body({"action": INTS, "memberID": INTS, "alarm": INTS})),
    st.tuples(st.just("batch"), _body({"requests": st.lists(st.one_of(
        st.fixed_dictionaries({"request_put": _body(PUT_FIELDS)}),
        st.fixed_dictionaries({"request_delete_range": _body(DELETE_FIELDS)})),
        max_size=4)})),
    # Auth ops with names other than "root": auth can never be turned on (no root user).
    *(st.tuples(st.just(op), _body(fields)) for op, fields in AUTH_OPS.items()),
    st.tuples(st.sampled_from(["range", "put", "status"]),
              _body({"key": KEYS, "value": st.binary(max_size=8), "token": TEXT,
                     "_auth": TEXT})),
    st.tuples(st.just("put_many"), st.fixed_dictionaries({"kvs": st.lists(
        st.tuples(KEYS, st.binary(max_size=8)), max_size=4).map(
            lambda pairs: [x for kv in pairs for x in kv])})),
)


def test_arbitrary_well_typed_requests_never_hurt_the_cluster(shared_cluster3):
    h = shared_cluster3
    c = h.client(timeout=10.0)
    for i in range(5):
        c.put(f"/fz/{i:02d}", f"value-{i}")
    raws = [Raw(m.native_port) for m in h.members]
    for raw in raws:
        raw.sock.settimeout(REPLY_TIMEOUT_S)
        raw.hello()
    seen = {"n": 0, "codes": {}}
    internal = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
              suppress_health_check=list(HealthCheck))
    @given(REQUESTS)
    def one(req):
        op, body = req
        seen["n"] += 1
        rid = seen["n"]
        raw = raws[rid % len(raws)]
        raw.send(_frame([rid, op, body]))
        reply = raw.read_frame()
        assert reply is not None, f"{op} {body!r}: the member closed the connection"
        got_id, status, payload = reply
        assert got_id == rid, reply
        assert status in (wire.STATUS_OK, wire.STATUS_ERROR), reply
        if status == wire.STATUS_ERROR:
            code = payload["code"]
            assert code in wire.ERRORS and payload["message"], payload
            seen["codes"][code] = seen["codes"].get(code, 0) + 1
            if code == "INTERNAL":
                internal.append((op, body, payload["message"]))

    try:
        one()
    finally:
        for raw in raws:
            raw.close()
        # Undo the alarms the fuzzer may have raised (ACTIVATE raises NOSPACE or CORRUPT),
        # so the checks below can write.
        c.call("alarm", {"action": 2, "memberID": 0, "alarm": 0})
    print(f"{seen['n']} requests; errors by code: {seen['codes']}")
    assert not internal, f"unhandled errors: {internal[:5]}"
    for m in h.members:
        assert m.alive(), f"{m.name} died ({m.proc.returncode}); see its log"
    # The members still commit, and agree on everything the fuzzer left behind (it may have
    # deleted or compacted anything: ranges over all keys and compactions are fair game).
    stamp = str(time.monotonic())
    rev = c.put("/fz-check", stamp)["header"]["revision"]
    assert c.get("/fz-check")[0] == stamp.encode()
    views = []
    for m in h.members:
        mc = h.client([m], timeout=10.0)
        resp = mc.get_response(b"\0", range_end=b"\0", revision=rev)
        views.append([(kv["key"], kv.get("value"), kv["mod_revision"]) for kv in resp["kvs"]])
    assert views[0] == views[1] == views[2]
