"""raftkv's history model and global checks (raftkv_model.py) on small hand-made histories:
legal ones pass, and each planted anomaly is found by the check meant for it."""
import math

from tests.linearizability.checker import check
from tests.linearizability.raftkv_model import (
    Op,
    WatchLog,
    WatchSegment,
    duplicate_write_revisions,
    history,
    model,
    phantom_serializable_reads,
    revision_order_violations,
    watch_violations,
)

A = b"/k/a"
B = b"/k/b"


def op(kind, call, ret, out, key=A, arg=None, client=0, header_rev=None):
    if header_rev is None:
        header_rev = _header_rev(kind, out)
    if out is None:
        ret = math.inf
    return Op(client, kind, key, arg, call, ret, out, header_rev or 0)


def _header_rev(kind, out):
    if out is None:
        return 0
    if kind == "put":
        return out
    if kind in ("delete", "cas"):
        return out[1]
    return out[1]  # a get at least as new as what it read


def put(call, ret, value, rev, **kw):
    return op("put", call, ret, rev, arg=value, **kw)


def get(call, ret, value, mod, **kw):
    return op("get", call, ret, (value, mod), **kw)


def cas(call, ret, expect, value, out, **kw):
    return op("cas", call, ret, out, arg=(expect, value), **kw)


def verdict(ops):
    return check(model(), history(ops), timeout_s=10).verdict


def test_a_sequential_history_with_every_kind_is_linearizable():
    ops = [put(0, 1, b"a", 2), get(2, 3, b"a", 2), cas(4, 5, 2, b"b", (True, 3, None)),
           cas(6, 7, 2, b"c", (False, 3, (b"b", 3))), op("delete", 8, 9, (1, 4)),
           get(10, 11, None, 0), op("delete", 12, 13, (0, 4)),
           cas(14, 15, 0, b"d", (True, 5, None)), get(16, 17, b"d", 5)]
    assert verdict(ops) == "ok"


def test_a_stale_read_is_illegal():
    ops = [put(0, 1, b"a", 2), put(2, 3, b"b", 3), get(4, 5, b"a", 2)]
    assert verdict(ops) == "illegal"


def test_a_lost_acknowledged_write_is_illegal():
    ops = [put(0, 1, b"a", 2), get(2, 3, None, 0)]
    assert verdict(ops) == "illegal"


def test_concurrent_write_and_read_may_see_either_value():
    for seen in ((b"a", 2), (b"b", 3)):
        ops = [put(0, 1, b"a", 2), put(2, 6, b"b", 3), get(3, 5, *seen)]
        assert verdict(ops) == "ok", seen


def test_a_write_revision_older_than_the_value_it_replaces_is_illegal():
    ops = [put(0, 1, b"a", 5), put(2, 3, b"b", 3), get(4, 5, b"b", 3)]
    assert verdict(ops) == "illegal"


def test_a_failed_write_may_have_applied_or_not():
    applied = [put(0, None, b"a", None), get(5, 6, b"a", 7)]
    not_applied = [put(0, None, b"a", None), get(5, 6, None, 0)]
    assert verdict(applied) == "ok"
    assert verdict(not_applied) == "ok"
    # ...but a read cannot see it applied before it was sent.
    assert verdict([get(0, 1, b"a", 7), put(2, None, b"a", None)]) == "illegal"


def test_a_failed_cas_applies_only_where_its_compare_could_hold():
    ops = [put(0, 1, b"a", 2), cas(2, None, 2, b"b", None), get(5, 6, b"b", 3)]
    assert verdict(ops) == "ok"
    ops = [put(0, 1, b"a", 2), cas(2, None, 9, b"b", None), get(5, 6, b"b", 3)]
    assert verdict(ops) == "illegal"


def test_a_cas_that_succeeds_against_another_revision_is_illegal():
    ops = [put(0, 1, b"a", 2), cas(2, 3, 7, b"b", (True, 3, None))]
    assert verdict(ops) == "illegal"


def test_a_cas_failure_branch_reading_a_stale_value_is_illegal():
    ops = [put(0, 1, b"a", 2), put(2, 3, b"b", 3), cas(4, 5, 9, b"c", (False, 3, (b"a", 2)))]
    assert verdict(ops) == "illegal"


def test_deleting_an_absent_key_deletes_nothing():
    assert verdict([op("delete", 0, 1, (0, 1))]) == "ok"
    assert verdict([op("delete", 0, 1, (1, 2))]) == "illegal"


def test_keys_are_checked_apart():
    ops = [put(0, 1, b"a", 2, key=A), put(0, 1, b"x", 3, key=B), get(2, 3, b"a", 2, key=A),
           get(2, 3, b"x", 3, key=B)]
    result = check(model(), history(ops), timeout_s=10)
    assert result.verdict == "ok" and result.partitions == 2


def test_serializable_reads_are_left_out_of_the_search():
    ops = [put(0, 1, b"a", 2), put(2, 3, b"b", 3), op("sget", 4, 5, (b"a", 2))]
    assert verdict(ops) == "ok"  # stale, and allowed to be
    assert not phantom_serializable_reads(ops)
    assert phantom_serializable_reads(ops + [op("sget", 6, 7, (b"zz", 9))])


def test_a_revision_that_goes_back_in_real_time_is_found():
    ok = [put(0, 1, b"a", 5, key=A), get(2, 3, None, 0, key=B, header_rev=5)]
    assert not revision_order_violations(ok)
    # Each key's history is linearizable on its own; only the global check sees this.
    bad = [put(0, 1, b"a", 5, key=A), get(2, 3, None, 0, key=B, header_rev=4)]
    assert verdict(bad) == "ok"
    assert revision_order_violations(bad) == [(bad[0], bad[1])]
    # Overlapping operations are not ordered.
    assert not revision_order_violations([put(0, 3, b"a", 5, key=A),
                                          get(2, 4, None, 0, key=B, header_rev=4)])


def test_two_writes_with_one_revision_are_found():
    ops = [put(0, 1, b"a", 5, key=A), put(0, 1, b"b", 5, key=B), put(2, 3, b"c", 6, key=A)]
    assert set(duplicate_write_revisions(ops)) == {5}
    # A delete that deleted nothing and a failed cas make no revision of their own.
    ops = [put(0, 1, b"a", 5), op("delete", 2, 3, (0, 5), key=B),
           cas(4, 5, 9, b"x", (False, 5, (b"a", 5)))]
    assert not duplicate_write_revisions(ops)


def _watch(*segments):
    log = WatchLog(0)
    for start, events in segments:
        log.segments.append(WatchSegment(start, list(events)))
    return log


def _pe(rev, value, key=A):
    return (rev, "PUT", key, value)


def test_watchers_that_agree_with_the_history_pass():
    ops = [put(0, 1, b"a", 2), put(2, 3, b"b", 3), op("delete", 4, 5, (1, 4)),
           put(6, None, b"c", None)]  # unknown outcome: the watchers show it applied
    events = [_pe(2, b"a"), _pe(3, b"b"), (4, "DELETE", A, b""), _pe(5, b"c")]
    logs = [_watch((0, events)), _watch((3, events[1:])),
            _watch((2, events[:1]), (4, events[2:]))]  # compacted in between: a new segment
    assert watch_violations(logs, ops, 5) == []


def test_each_watch_anomaly_is_found():
    ops = [put(0, 1, b"a", 2), put(2, 3, b"b", 3), put(4, 5, b"c", 4)]
    good = [_pe(2, b"a"), _pe(3, b"b"), _pe(4, b"c")]

    def found(logs, final=4):
        return watch_violations(logs, ops, final)

    assert found([_watch((0, [good[0], good[2]]))])  # a gap
    assert found([_watch((0, [good[0], good[1], good[1], good[2]]))])  # a repeat
    assert found([_watch((0, [good[1], good[0], good[2]]))])  # out of order
    assert found([_watch((2, good[1:]))])  # asked from 2, got 3 first
    assert found([_watch((0, good[:2]))])  # never reached the last write
    assert found([_watch((0, good)), _watch((0, [good[0], _pe(3, b"c"), good[2]]))])
    assert found([_watch((0, [good[0], (3, "DELETE", A, b""), good[2]]))])  # not the ack
    assert found([_watch((0, good + [_pe(5, b"nobody")]))], final=5)
    assert not found([_watch((0, good))])
    # Asked from before the first write: the first event is the first write's.
    assert not found([_watch((1, good))])


def test_a_watch_resumed_at_a_compaction_on_a_delete_starts_after_it():
    """Compaction at R removes a delete made at R (etcd 3.4.23 too: a watch from R after
    `compact R` misses that tombstone), so a watch resumed from R after "compacted at R"
    starts at R + 1 when R was a delete; anything else still must start at R."""
    ops = [put(0, 1, b"a", 2), op("delete", 2, 3, (1, 3)), put(4, 5, b"c", 4)]
    events = [_pe(2, b"a"), (3, "DELETE", A, b""), _pe(4, b"c")]

    def segments(first_start, first, second_start, second):
        log = _watch((first_start, first), (second_start, second))
        log.segments[0].end = f"compacted at {second_start}"
        return [log, _watch((0, events))]

    assert watch_violations(segments(2, events[:1], 3, events[2:]), ops, 4) == []
    # Not after a compaction at R: the delete at R is still owed.
    assert watch_violations([_watch((2, events[:1]), (3, events[2:])), _watch((0, events))],
                            ops, 4)
    # Compacted at a put: it must be delivered.
    assert watch_violations(segments(2, events[:0], 2, events[1:]), ops, 4)
