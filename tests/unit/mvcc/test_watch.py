"""Watch: ordering, replay from history, filters, prev_kv, compaction, slow watchers."""
from tests.unit.mvcc.helpers import Harness


def events(w):
    out = []
    while True:
        got = w.take()
        if not got:
            return out
        for resp in got:
            out.extend(resp["events"])


def revs(evs):
    return [(e["type"], e["kv"]["key"], e["kv"]["mod_revision"]) for e in evs]


def test_key_and_range_watchers(h):
    wa = h.store.watch(b"a")
    wr = h.store.watch(b"a", b"c")
    wall = h.store.watch(b"\0", b"\0")
    h.put(b"a")
    h.put(b"b")
    h.put(b"c")
    h.delete(b"a")
    assert revs(events(wa)) == [(0, b"a", 2), (1, b"a", 5)]
    assert revs(events(wr)) == [(0, b"a", 2), (0, b"b", 3), (1, b"a", 5)]
    assert len(events(wall)) == 4


def test_on_ready_called_once_per_transition(h):
    ready = []
    w = h.store.watch(b"a", on_ready=ready.append)
    h.put(b"a")
    h.put(b"a")
    assert ready == [w]
    assert len(events(w)) == 2
    h.put(b"b")
    assert ready == [w]
    h.put(b"a")
    assert ready == [w, w]


def test_txn_events_are_one_revision_in_one_response(h):
    w = h.store.watch(b"\0", b"\0")
    h.one("txn", {"success": [{"request_put": {"key": b"x"}},
                              {"request_put": {"key": b"y"}}]})
    (resp,) = w.take()
    assert resp["header"]["revision"] == 2
    assert [(e["kv"]["key"], e["kv"]["mod_revision"]) for e in resp["events"]] == \
        [(b"x", 2), (b"y", 2)]


def test_filters_and_prev_kv(h):
    noput = h.store.watch(b"a", filters=[0])
    nodel = h.store.watch(b"a", filters=[1], prev_kv=True)
    h.put(b"a", b"1")
    h.put(b"a", b"2")
    h.delete(b"a")
    assert revs(events(noput)) == [(1, b"a", 4)]
    evs = events(nodel)
    assert revs(evs) == [(0, b"a", 2), (0, b"a", 3)]
    assert "prev_kv" not in evs[0] and evs[1]["prev_kv"]["value"] == b"1"


def test_replay_from_past_revision_then_live(h):
    for i in range(5):
        h.put(b"k", b"%d" % i)  # revs 2..6
    ready = []
    w = h.store.watch(b"k", start_revision=4, prev_kv=True, on_ready=ready.append)
    assert ready == [w]
    evs = events(w)
    assert [e["kv"]["mod_revision"] for e in evs] == [4, 5, 6]
    assert evs[0]["prev_kv"]["mod_revision"] == 3
    h.put(b"k")
    assert [e["kv"]["mod_revision"] for e in events(w)] == [7]


def test_future_start_revision(h):
    w = h.store.watch(b"k", start_revision=4)
    for _ in range(4):
        h.put(b"k")
    assert [e["kv"]["mod_revision"] for e in events(w)] == [4, 5]


def test_compacted_start_cancels_with_compact_revision(h):
    for _ in range(5):
        h.put(b"k")
    h.one("compact", {"revision": 4})
    w = h.store.watch(b"k", start_revision=2)
    (resp,) = w.take()
    assert resp["canceled"] and resp["compact_revision"] == 4 and resp["events"] == []
    assert resp["header"] == {"revision": 0}  # as etcd 3.4's: no store revision on it
    assert w.canceled and w.take() == []
    ok = h.store.watch(b"k", start_revision=4)
    assert [e["kv"]["mod_revision"] for e in events(ok)] == [4, 5, 6]


def test_slow_watcher_never_loses_events(tmp_path):
    h = Harness(tmp_path / "d", watch_queue_events=10)
    w = h.store.watch(b"k", b"l")
    for i in range(50):
        h.apply([("put", {"key": b"k%d" % (i % 7)}), ("put", {"key": b"zz"})])
    assert not w.synced
    h.store.hub.catchup_events = 8
    got = events(w)
    assert [e["kv"]["mod_revision"] for e in got] == list(range(2, 102, 2))
    assert w.synced
    h.put(b"k1")
    assert [e["kv"]["mod_revision"] for e in events(w)] == [102]
    h.close()


def test_slow_watcher_compacted_while_unsynced(tmp_path):
    h = Harness(tmp_path / "d", watch_queue_events=2)
    w = h.store.watch(b"k")
    for _ in range(6):
        h.put(b"k")
    first = w.take()
    assert [e["kv"]["mod_revision"] for r in first for e in r["events"]] == [2, 3]
    h.one("compact", {"revision": 6})
    (resp,) = w.take()
    assert resp["canceled"] and resp["compact_revision"] == 6
    h.close()


def test_cancel_and_many_watchers(h):
    ws = [h.store.watch(b"k") for _ in range(1000)]
    for w in ws[::2]:
        w.cancel()
    h.put(b"k")
    assert sum(len(events(w)) for w in ws) == 500
    assert len(h.store.hub) == 500
    assert ws[0].take() == []


def test_events_only_after_commit(h):
    w = h.store.watch(b"k")
    with h.engine.env.begin(write=True) as txn:
        h.store.apply(txn, 1, [("put", {"key": b"k"})])
        assert w.take() == []
    assert w.take() == []
    h.store.committed()
    assert len(events(w)) == 1


def test_progress(h):
    w = h.store.watch(b"k", progress=True)
    h.put(b"x")
    assert w.progress_response() == {"watch_id": w.id, "header": {"revision": 2},
                                     "events": []}
    h.put(b"k")
    assert w.progress_response() is None


def test_prev_kv_is_the_key_before_the_txn(h):
    """etcd reads an event's prev_kv at its revision - 1: when one txn puts a key and then
    deletes it (a from-key delete, which etcd's duplicate check lets by), the delete's prev_kv
    is the key as it was before the txn, not the put of the same txn (differential watch
    test, seed 4)."""
    h.put(b"c", b"old")  # rev 2
    live = h.store.watch(b"c", prev_kv=True)
    h.one("txn", {"success": [
        {"request_put": {"key": b"c", "value": b"new"}},
        {"request_delete_range": {"key": b"b", "range_end": b"\0"}}]})
    replay = h.store.watch(b"c", start_revision=3, prev_kv=True)
    for w in (live, replay):
        evs = events(w)
        assert revs(evs) == [(0, b"c", 3), (1, b"c", 3)]
        assert [e["prev_kv"]["value"] for e in evs] == [b"old", b"old"]
        assert [e["prev_kv"]["mod_revision"] for e in evs] == [2, 2]


def test_prev_kv_absent_when_the_txn_created_the_key(h):
    """A key created and deleted by one txn had no value at revision - 1."""
    w = h.store.watch(b"c", prev_kv=True)
    h.one("txn", {"success": [
        {"request_put": {"key": b"c", "value": b"new"}},
        {"request_delete_range": {"key": b"c", "range_end": b"\0"}}]})
    evs = events(w)
    assert revs(evs) == [(0, b"c", 2), (1, b"c", 2)]
    assert ["prev_kv" in e for e in evs] == [False, False]


def test_create_event_has_no_prev_kv(h):
    """etcd gives a create event (a PUT whose create_revision is its mod_revision) no prev_kv,
    even when one txn deleted the key and then put it again (differential watch test, seed
    106: raftkv's replay gave the put the key from before the txn)."""
    h.put(b"c", b"old")  # rev 2
    live = h.store.watch(b"c", prev_kv=True)
    h.one("txn", {"success": [
        {"request_delete_range": {"key": b"b", "range_end": b"\0"}},
        {"request_put": {"key": b"c", "value": b"new"}}]})
    replay = h.store.watch(b"c", start_revision=3, prev_kv=True)
    for w in (live, replay):
        evs = events(w)
        assert revs(evs) == [(1, b"c", 3), (0, b"c", 3)]
        assert evs[0]["prev_kv"]["value"] == b"old"
        assert "prev_kv" not in evs[1]
