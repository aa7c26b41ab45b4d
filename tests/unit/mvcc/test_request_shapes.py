"""Requests whose fields have the right top-level types but wrong contents (an unknown enum
number, an int beyond 64 bits, a nested field of the wrong type, runaway nesting) are refused
with BAD_REQUEST by check_shape, which the front end runs before proposing and the apply runs
again: the entry is applied as an error and the store goes on. Before, a compare with target
99 passed the front end, committed, and raised IndexError in the apply of every member."""
import pytest

from raftkv.errors import RaftkvError
from raftkv.mvcc import txncheck


def _txn(compare=(), success=(), failure=()):
    return {"compare": list(compare), "success": list(success), "failure": list(failure)}


BAD = {
    "compare_target_99": ("txn", _txn([{"key": b"a", "target": 99, "result": 0}])),
    "compare_target_negative": ("txn", _txn([{"key": b"a", "target": -(1 << 63)}])),
    "compare_result_7": ("txn", _txn([{"key": b"a", "target": 0, "result": 7}])),
    "compare_value_int": ("txn", _txn([{"key": b"a", "target": 3, "value": 5}])),
    "compare_version_bytes": ("txn", _txn([{"key": b"a", "target": 0, "version": b"1"}])),
    "compare_not_a_map": ("txn", _txn([b"a"])),
    "compare_key_int": ("txn", _txn([{"key": 5, "target": 0}])),
    "op_two_kinds": ("txn", _txn(success=[{"request_put": {"key": b"a"},
                                           "request_range": {"key": b"a"}}])),
    "op_unknown_kind": ("txn", _txn(success=[{"request_drop": {}}])),
    "op_body_list": ("txn", _txn(success=[{"request_put": [b"a", b"v"]}])),
    "nested_put_value_int": ("txn", _txn(success=[{"request_txn": _txn(
        success=[{"request_put": {"key": b"a", "value": 1}}])}])),
    "nested_range_sort_target_9": ("txn", _txn(failure=[{"request_range": {
        "key": b"a", "sort_order": 1, "sort_target": 9}}])),
    "success_not_a_list": ("txn", {"success": {"request_put": {"key": b"a"}}}),
    "range_sort_order_5": ("range", {"key": b"a", "sort_order": 5}),
    "range_limit_2_64": ("range", {"key": b"a", "limit": (1 << 64) - 1}),
    "put_lease_2_63": ("put", {"key": b"a", "value": b"v", "lease": 1 << 63}),
    "lease_grant_id_2_63": ("lease_grant", {"ID": 1 << 63, "TTL": 10}),
    "lease_checkpoint_not_maps": ("lease_checkpoint", {"checkpoints": [1, 2]}),
    "compact_2_64": ("compact", {"revision": (1 << 64) - 1}),
}


# Ops the member serves itself (not applied by the store): refused before anything else.
BAD_FRONT = {
    "member_add_is_learner_str": ("member_add", {"peerURLs": ["http://h:1"], "isLearner": "yes"}),
    "member_remove_id_str": ("member_remove", {"ID": "abc"}),
    "member_remove_id_negative": ("member_remove", {"ID": -1}),
    "member_promote_id_2_64": ("member_promote", {"ID": 1 << 64}),
    "member_update_id_bytes": ("member_update", {"ID": b"1", "peerURLs": ["http://h:1"]}),
    "move_leader_target_str": ("move_leader", {"targetID": "x"}),
    "alarm_action_str": ("alarm", {"action": "x"}),
    "alarm_action_9": ("alarm", {"action": 9}),
    "alarm_type_negative": ("alarm", {"action": 1, "alarm": -1}),
    "alarm_member_str": ("alarm", {"action": 1, "memberID": "m1", "alarm": 1}),
}


def test_member_ids_are_unsigned_64_bit():
    for op in ("member_remove", "member_promote"):
        txncheck.check_shape(op, {"ID": (1 << 64) - 1})
    txncheck.check_shape("member_add", {"peerURLs": ["http://h:1"], "isLearner": True})
    txncheck.check_shape("move_leader", {"targetID": 1 << 63})
    txncheck.check_shape("alarm", {"action": 1, "memberID": (1 << 64) - 1, "alarm": 7})


def _deep(depth):
    body = _txn(success=[{"request_put": {"key": b"deep", "value": b"v"}}])
    for _ in range(depth):
        body = _txn(success=[{"request_txn": body}])
    return body


@pytest.mark.parametrize("case", sorted({**BAD, **BAD_FRONT}))
def test_refused_up_front(case):
    op, body = {**BAD, **BAD_FRONT}[case]
    with pytest.raises(RaftkvError) as exc:
        txncheck.check_shape(op, body)
    assert exc.value.code == "BAD_REQUEST" and exc.value.message.startswith("raftkv: ")


@pytest.mark.parametrize("case", sorted(BAD))
def test_applied_as_an_error_and_the_store_goes_on(h, case):
    op, body = BAD[case]
    h.put(b"a", b"before")
    (out,) = h.apply([(op, body)])
    assert isinstance(out, RaftkvError) and out.code == "BAD_REQUEST", out
    h.put(b"a", b"after")
    assert h.get(b"a")["kvs"][0]["value"] == b"after"


def test_good_requests_pass():
    txncheck.check_shape("txn", _txn(
        [{"key": b"a", "target": 3, "result": 3, "value": b"x"},
         {"key": b"a", "range_end": b"b", "target": 4, "lease": 0}],
        [{"request_put": {"key": b"a", "value": b"v", "lease": (1 << 63) - 1}}],
        [{"request_range": {"key": b"a", "sort_order": 2, "sort_target": 4}},
         {"request_delete_range": {"key": b"a", "range_end": b"\0"}}]))
    txncheck.check_shape("txn", _deep(txncheck.TXN_DEPTH_MAX))
    txncheck.check_shape("range", {"key": b"a", "revision": -(1 << 63)})
    txncheck.check_shape("member_list", {"anything": object()})  # not a KV op: not ours


def test_runaway_nesting_is_refused():
    with pytest.raises(RaftkvError, match="nested deeper"):
        txncheck.check_shape("txn", _deep(txncheck.TXN_DEPTH_MAX + 1))


def test_a_read_with_an_unknown_sort_target_is_refused(h):
    h.put(b"a", b"v")
    with pytest.raises(RaftkvError) as exc:
        h.get(b"a", sort_order=1, sort_target=9)
    assert exc.value.code == "BAD_REQUEST"


@pytest.mark.parametrize("body", [
    {"key": b"a", "start_revision": -5},
    {"key": b"a", "filters": [99]},
    {"key": b"a", "filters": [b"x"]},
    {"key": b"a", "filters": 1},
    {"key": 5},
])
def test_a_bad_watch_is_refused(body):
    """A negative start revision used to give a watch that never delivered anything."""
    with pytest.raises(RaftkvError) as exc:
        txncheck.check_shape("watch", body)
    assert exc.value.code == "BAD_REQUEST"


def test_good_watches_pass():
    txncheck.check_shape("watch", {"key": b"a", "range_end": b"\0", "start_revision": 0,
                                   "filters": [0, 1], "prev_kv": True})
