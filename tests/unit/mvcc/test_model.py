"""Random op sequences against a simple reference model: every response must match."""
import tempfile

from hypothesis import given, settings, strategies as st, HealthCheck

from raftkv.errors import RaftkvError
from tests.unit.mvcc.helpers import Harness

KEYS = [b"a", b"ab", b"b", b"c", b"d"]
ENDS = [b"", b"", b"\0", b"b", b"c", b"e"]
SORT_FIELD = {0: "key", 1: "version", 2: "create_revision", 3: "mod_revision", 4: "value"}


class Model:
    """The whole store state per revision (copy on write): obviously right, slow."""

    def __init__(self):
        # compact: etcd's compactMainRev, -1 until the first compaction (Compact(0) on a
        # fresh store succeeds)
        self.rev, self.compact = 1, -1
        self.states = {1: {}}

    def _commit(self, state):
        self.rev += 1
        self.states[self.rev] = state

    @staticmethod
    def _in(key, start, end):
        if not end:
            return key == start
        return key >= start and (end == b"\0" or key < end)

    def put(self, state, body, rev):
        key, old = body["key"], state.get(body["key"])
        state[key] = {"key": key, "value": body.get("value", b""), "lease": 0,
                      "create_revision": old["create_revision"] if old else rev,
                      "mod_revision": rev, "version": old["version"] + 1 if old else 1}

    def range(self, body, state=None, header=None):
        rev = body.get("revision", 0)
        if state is None:
            if rev > self.rev:
                return RaftkvError("FUTURE_REV")
            if 0 < rev < self.compact:
                return RaftkvError("COMPACTED")
            state = self.states[rev if rev > 0 else self.rev]
        kvs = [dict(v) for k, v in sorted(state.items())
               if self._in(k, body["key"], body.get("range_end", b""))]
        count = len(kvs)
        order, target = body.get("sort_order", 0), body.get("sort_target", 0)
        if target and not order:
            order = 1
        if order:
            kvs.sort(key=lambda kv: kv[SORT_FIELD[target]], reverse=order == 2)
        limit, more = body.get("limit", 0), False
        if limit and len(kvs) > limit:
            kvs, more = kvs[:limit], True
        if body.get("count_only"):
            kvs, more = [], False
        return {"header": {"revision": header or self.rev}, "kvs": kvs, "more": more,
                "count": count}

    def delete(self, state, body):
        gone = [k for k in state if self._in(k, body["key"], body.get("range_end", b""))]
        for k in gone:
            del state[k]
        return len(gone)

    def txn(self, body):
        state = dict(self.states[self.rev])
        ok = all(state.get(c["key"], {"version": 0})["version"] == c["version"]
                 for c in body["compare"])
        ops = body["success" if ok else "failure"]
        puts = [o["request_put"]["key"] for o in ops if "request_put" in o]
        dels = [o["request_delete_range"] for o in ops if "request_delete_range" in o]
        # etcd's checkIntervals takes range_end literally: "\0" (from key) holds no key
        if len(set(puts)) < len(puts) or any(
                self._in(k, d["key"], d.get("range_end", b"")) and d.get("range_end") != b"\0"
                for k in puts for d in dels):
            return RaftkvError("DUPLICATE_KEY")
        # the real check covers both branches
        # etcd 3.4 sub-response headers: the revision as of that op (the starting one until
        # the first change, then the txn's own)
        changed, resps = False, []
        for op in ops:
            if "request_put" in op:
                self.put(state, op["request_put"], self.rev + 1)
                changed = True
                resps.append({"response_put": {"header": {"revision": self.rev + 1}}})
            else:
                n = self.delete(state, op["request_delete_range"])
                changed = changed or n > 0
                resps.append({"response_delete_range": {
                    "header": {"revision": self.rev + 1 if changed else self.rev},
                    "deleted": n}})
        if changed:
            self._commit(state)
        return {"header": {"revision": self.rev}, "succeeded": ok, "responses": resps}

    def apply(self, op, body):
        if op == "range":
            return self.range(body)
        if op == "put":
            state = dict(self.states[self.rev])
            self.put(state, body, self.rev + 1)
            self._commit(state)
            return {"header": {"revision": self.rev}}
        if op == "delete_range":
            state = dict(self.states[self.rev])
            n = self.delete(state, body)
            if n:
                self._commit(state)
            return {"header": {"revision": self.rev}, "deleted": n}
        if op == "txn":
            return self.txn(body)
        rev = body["revision"]
        if rev <= self.compact:
            return RaftkvError("COMPACTED")
        if rev > self.rev:
            return RaftkvError("FUTURE_REV")
        self.compact = rev
        return {"header": {"revision": self.rev}}


def _txn_check_both(body):
    """DUPLICATE_KEY is decided on both branches before the compares: mirror it."""
    for name in ("success", "failure"):
        sub = dict(body, compare=[], success=body[name], failure=[])
        if isinstance(Model().txn(sub), RaftkvError):
            return True
    return False


keys = st.sampled_from(KEYS)
values = st.binary(max_size=3)
revs = st.integers(min_value=0, max_value=30)
put_s = st.builds(lambda k, v: ("put", {"key": k, "value": v}), keys, values)
del_s = st.builds(lambda k, e: ("delete_range", {"key": k, "range_end": e}), keys,
                  st.sampled_from(ENDS))
range_s = st.builds(
    lambda k, e, r, lim, o, t, co: ("range", {"key": k, "range_end": e, "revision": r,
                                              "limit": lim, "sort_order": o, "sort_target": t,
                                              "count_only": co}),
    keys, st.sampled_from(ENDS), revs, st.integers(0, 3), st.integers(0, 2),
    st.sampled_from([0, 0, 1, 2, 3]), st.booleans())
txn_op = st.one_of(
    st.builds(lambda k, v: {"request_put": {"key": k, "value": v}}, keys, values),
    st.builds(lambda k, e: {"request_delete_range": {"key": k, "range_end": e}}, keys,
              st.sampled_from(ENDS)))
txn_s = st.builds(
    lambda cmps, succ, fail: ("txn", {"compare": cmps, "success": succ, "failure": fail}),
    st.lists(st.builds(lambda k, v: {"key": k, "target": 0, "result": 0, "version": v},
                       keys, st.integers(0, 2)), max_size=2),
    st.lists(txn_op, max_size=3), st.lists(txn_op, max_size=3))
compact_s = st.builds(lambda r: ("compact", {"revision": r}), revs)
step = st.one_of(put_s, put_s, del_s, range_s, range_s, txn_s, compact_s,
                 st.just(("reopen", None)))


def _norm(resp):
    if isinstance(resp, RaftkvError):
        return resp.code
    return resp


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(step, min_size=1, max_size=3), max_size=25))
def test_random_ops_match_model(batches):
    model = Model()
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(tmp + "/d", compaction_batch=2)
        try:
            for batch in batches:
                _run_batch(h, model, batch)
            for rev in range(max(model.compact, 1), model.rev + 1):
                body = {"key": b"\0", "range_end": b"\0", "revision": rev}
                assert h.store.range(body) == model.range(body)
        finally:
            h.close()


def _run_batch(h, model, batch):
    if batch[0][0] == "reopen":
        h.reopen()
        return
    reqs = [(op, body) for op, body in batch if op != "reopen"]
    got = h.apply(reqs)
    for (op, body), resp in zip(reqs, got):
        if op == "txn" and _txn_check_both(body):
            want = RaftkvError("DUPLICATE_KEY")
        else:
            want = model.apply(op, body)
        assert _norm(resp) == _norm(want), (op, body)
