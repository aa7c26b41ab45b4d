"""The checker is tested before it tests anything (TESTING.md §7, row 2: the tests that test
the tests).

- Porcupine's corpus (../shared/data/linearizability-histories, TESTING.md §4.3): every jepsen/
  verdict equals Porcupine's own expectation, and the kv/ histories get theirs.
- Hand-written histories, one per anomaly a store can show.
- Hypothesis: histories linearizable by construction must pass; one planted anomaly must fail.
- The NondeterministicModel wrapper, the time and memory bounds, and the failure report.
"""
from __future__ import annotations

import math
import os
import pathlib

import pytest
from hypothesis import given, settings, strategies as st

from tests.linearizability.checker import (
    NondeterministicModel,
    Operation,
    check,
    format_failure,
)
from tests.linearizability.models import (
    UNKNOWN,
    EtcdRegisterModel,
    KvModel,
    parse_jepsen_log,
    parse_kv_log,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
CORPUS_SUBDIR = pathlib.Path("data") / "linearizability-histories"

# Porcupine's expectations (porcupine_test.go, TestEtcdJepsenNNN; restated in the corpus's
# SOURCE.md): these 23 histories are linearizable, every other one from 000 to 102 is not.
# etcd_095.log is empty ("etcd cluster failed to start up in test 95") and has no verdict.
JEPSEN_LINEARIZABLE = {2, 5, 7, 18, 25, 31, 38, 45, 48, 49, 51, 53, 56, 67, 75, 76, 80, 87, 92,
                       98, 100, 101, 102}
JEPSEN_EMPTY = 95
JEPSEN_EXPECTED = {n: "ok" if n in JEPSEN_LINEARIZABLE else "illegal"
                   for n in range(103) if n != JEPSEN_EMPTY}

# A guard, not a budget: a correct verdict takes at most about 1.5 s here (etcd_002). Hitting it
# gives "unknown", which fails the comparison with a clear message instead of hanging.
CORPUS_TIMEOUT_S = 60
# c50-bad: two of its ten partitions are beyond any reasonable search (TESTING.md §4.3), so it
# gets a small budget, and either verdict but "ok" is accepted.
C50_BAD_TIMEOUT_S = 5

REGISTER = EtcdRegisterModel()
KV = KvModel()


def resolve_corpus(repo=REPO, env=os.environ):
    """The corpus directory: <repo>/../shared first (as in CI), then $RAFTKV_SHARED_DIR.

    A missing corpus fails the test rather than skipping it: CI always has ../shared, so a skip
    would only hide a broken layout.
    """
    candidates = [repo.parent / "shared" / CORPUS_SUBDIR]
    if env.get("RAFTKV_SHARED_DIR"):
        candidates.append(pathlib.Path(env["RAFTKV_SHARED_DIR"]) / CORPUS_SUBDIR)
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    pytest.fail(f"linearizability corpus not found (looked in: {tried}); keep ../shared beside "
                f"the repository or set RAFTKV_SHARED_DIR to the directory holding "
                f"{CORPUS_SUBDIR}", pytrace=False)


def op(client, input, call, output, ret):
    return Operation(client, input, call, output, ret)


def read(client, call, value, ret):
    return op(client, ("read",), call, value, ret)


def write(client, value, call, ret, output=None):
    return op(client, ("write", value), call, output, ret)


def assert_verdict(model, ops, expected, **kwargs):
    result = check(model, ops, **kwargs)
    assert result.verdict == expected, format_failure(result, model)
    return result


# ---- the corpus ----

def test_a_missing_corpus_fails_naming_the_paths(tmp_path):
    with pytest.raises(pytest.fail.Exception) as failure:
        resolve_corpus(repo=tmp_path / "repo", env={"RAFTKV_SHARED_DIR": str(tmp_path / "x")})
    assert str(tmp_path / "shared" / CORPUS_SUBDIR) in str(failure.value)
    assert str(tmp_path / "x" / CORPUS_SUBDIR) in str(failure.value)


def test_the_jepsen_corpus_is_the_expected_one():
    logs = {int(p.stem[-3:]): p for p in (resolve_corpus() / "jepsen").glob("etcd_*.log")}
    assert logs[JEPSEN_EMPTY].stat().st_size == 0
    del logs[JEPSEN_EMPTY]
    assert sorted(logs) == sorted(JEPSEN_EXPECTED)


@pytest.mark.parametrize("number", sorted(JEPSEN_EXPECTED), ids=lambda n: f"etcd_{n:03d}")
def test_jepsen_etcd_verdict_matches_porcupine(number):
    ops = parse_jepsen_log(resolve_corpus() / "jepsen" / f"etcd_{number:03d}.log")
    assert ops
    assert_verdict(REGISTER, ops, JEPSEN_EXPECTED[number], timeout_s=CORPUS_TIMEOUT_S)


@pytest.mark.parametrize("name, expected", [
    ("c01-ok", "ok"), ("c10-ok", "ok"), ("c50-ok", "ok"),
    ("c01-bad", "illegal"), ("c10-bad", "illegal"),
])
def test_kv_verdict(name, expected):
    ops = parse_kv_log(resolve_corpus() / "kv" / f"{name}.txt")
    result = assert_verdict(KV, ops, expected, timeout_s=CORPUS_TIMEOUT_S)
    assert result.partitions == len({o.input[1] for o in ops})  # one per key


def test_kv_c50_bad_is_never_ok_and_is_bounded():
    ops = parse_kv_log(resolve_corpus() / "kv" / "c50-bad.txt")
    result = check(KV, ops, timeout_s=C50_BAD_TIMEOUT_S)
    assert result.verdict in ("illegal", "unknown"), format_failure(result, KV)
    assert result.elapsed_s < C50_BAD_TIMEOUT_S + 1


# ---- hand-written histories ----

def test_a_sequential_legal_history():
    assert_verdict(REGISTER, [
        read(0, 0, None, 1),
        write(0, 1, 2, 3),
        read(1, 4, 1, 5),
        op(1, ("cas", 1, 2), 6, True, 7),
        op(0, ("cas", 1, 3), 8, False, 9),
        read(0, 10, 2, 11),
    ], "ok")


def test_a_stale_read_after_a_completed_write_is_illegal():
    result = assert_verdict(REGISTER, [
        write(0, 1, 0, 1),
        write(0, 2, 2, 3),
        read(1, 4, 1, 5),
    ], "illegal")
    assert [o.input for o in result.linearization] == [("write", 1), ("write", 2)]


def test_a_lost_write_is_illegal():
    # The write completed, and a read that began afterwards does not see it.
    assert_verdict(REGISTER, [write(0, 1, 0, 1), read(1, 2, None, 3)], "illegal")


def test_a_duplicated_effect_is_illegal():
    # One append, seen twice: the store applied it twice (a retried request, say).
    ops = [op(0, ("append", "k", "x"), 0, None, 1), op(1, ("get", "k"), 2, "xx", 3)]
    assert_verdict(KV, ops, "illegal")
    # A write's effect coming back after it was overwritten is the same anomaly on a register.
    assert_verdict(REGISTER, [
        write(0, 1, 0, 1), write(0, 2, 2, 3), read(1, 4, 2, 5), read(1, 6, 1, 7),
    ], "illegal")


def test_concurrent_writes_legal_in_one_order_only():
    # The two writes overlap, and the reads force "2 then 1": the checker must find that order.
    writes = [write(0, 1, 0, 10), write(1, 2, 0, 10)]
    assert_verdict(REGISTER, writes + [read(2, 1, 2, 2), read(2, 11, 1, 12)], "ok")
    # Reads of 1, 2, 1 would need the value 1 written twice.
    assert_verdict(REGISTER, writes + [read(2, 1, 1, 2), read(2, 3, 2, 4), read(2, 11, 1, 12)],
                   "illegal")


def test_closed_intervals_sharing_an_endpoint_are_concurrent():
    # The read returns at 5, the instant the write is invoked: it may still see the write.
    assert_verdict(REGISTER, [write(0, 1, 5, 6), read(1, 0, 1, 5)], "ok")
    assert_verdict(REGISTER, [write(0, 1, 5, 6), read(1, 0, 1, 4.9)], "illegal")


def test_an_unknown_write_may_have_applied():
    unknown = write(0, 2, 2, math.inf, UNKNOWN)
    assert_verdict(REGISTER, [write(1, 1, 0, 1), unknown, read(1, 5, 2, 6)], "ok")
    # It never shows: also fine, it may never have applied.
    assert_verdict(REGISTER, [write(1, 1, 0, 1), unknown, read(1, 5, 1, 6), read(1, 7, 1, 8)],
                   "ok")
    # But once seen it cannot be undone.
    assert_verdict(REGISTER, [write(1, 1, 0, 1), unknown, read(1, 5, 2, 6), read(1, 7, 1, 8)],
                   "illegal")
    # Nor can it apply before it was invoked.
    assert_verdict(REGISTER, [write(1, 1, 0, 1), read(1, 1.5, 2, 1.8), unknown], "illegal")


def test_an_unknown_cas_applies_only_if_its_precondition_held():
    cas = op(0, ("cas", 1, 3), 2, UNKNOWN, math.inf)
    assert_verdict(REGISTER, [write(1, 1, 0, 1), cas, read(1, 4, 3, 5)], "ok")
    assert_verdict(REGISTER, [write(1, 2, 0, 1), cas, read(1, 4, 3, 5)], "illegal")


def hard_history(writes, key="k"):
    """`writes` concurrent puts, then a get of a value nobody wrote: illegal, but only after
    trying every order of the puts (about writes * 2**(writes - 1) cache entries)."""
    puts = [op(i, ("put", key, str(i)), 0, None, 10) for i in range(writes)]
    return puts + [op(writes, ("get", key), 11, "never written", 12)]


def test_the_timeout_gives_unknown():
    result = assert_verdict(KV, hard_history(16), "unknown", timeout_s=0.05)
    assert "timeout" in result.reason
    assert result.elapsed_s < 2
    assert_verdict(KV, hard_history(8), "illegal", timeout_s=CORPUS_TIMEOUT_S)


def test_the_cache_cap_gives_unknown():
    # Key "a" hits the cap, key "b" (searched after it) is fine: the verdict is "a"'s.
    fine = [op(0, ("append", "b", "x"), i, None, i + 0.5) for i in range(12)]
    result = assert_verdict(KV, fine + hard_history(8, key="a"), "unknown",
                            cache_entries_max=100)
    assert "cache_entries_max=100" in result.reason
    assert result.partition_index == 0
    assert result.partitions_checked == 2
    assert len(result.linearization) == 8  # every put, in some order; the get never fits


def test_partitions_smallest_first_and_a_refutation_beats_an_unknown():
    # Key "a" (9 operations) is undecidable within the cap, key "b" (10) is refuted, key "c"
    # (12) is fine. "a" is searched first and gives up; "b" still decides the verdict.
    stale = [op(0, ("put", "b", str(i)), 2 * i, None, 2 * i + 1) for i in range(9)]
    stale.append(op(1, ("get", "b"), 100, "0", 101))
    fine = [op(2, ("append", "c", "x"), i, None, i + 0.5) for i in range(12)]
    ops = fine + stale + hard_history(8, key="a")
    result = check(KV, ops, cache_entries_max=100)
    assert result.verdict == "illegal", format_failure(result, KV)
    assert result.partition_index == 1  # "b", in the model's (sorted by key) order
    assert result.partitions_checked == 2
    assert result.partitions == 3


def test_the_failure_report_marks_where_the_linearization_stops():
    model = REGISTER
    result = check(model, [write(0, 1, 0, 1), write(0, 2, 2, 3), read(1, 4, 1, 5)])
    report = format_failure(result, model)
    lines = report.splitlines()
    assert lines[0].startswith("illegal: ")
    stops = [line for line in lines if "the linearization stops here" in line]
    stuck = [line for line in lines if "stuck" in line]
    assert len(stops) == 1 and "write(2)" in stops[0]
    assert len(stuck) == 1 and "read() -> 1" in stuck[0]
    assert lines[-1] == "state after the longest linearization: 2"
    assert format_failure(check(model, []), model).startswith("linearizable")


# ---- the NondeterministicModel wrapper ----

class Counter(NondeterministicModel):
    """A counter whose increment may fail without telling: an UNKNOWN output forks the state
    into "applied" and "not applied". A read returns the count."""

    def init_states(self):
        return [0]

    def step_set(self, state, input, output):
        if input == "incr":
            return [state, state + 1] if output is UNKNOWN else [state + 1]
        return [state] if output == state else []


def test_a_fork_is_legal_through_one_branch_only():
    model = Counter()
    incr = op(0, "incr", 0, UNKNOWN, 1)  # returned, with an error that leaves it unknown
    assert_verdict(model, [incr, op(1, "read", 2, 1, 3), op(1, "read", 4, 1, 5)], "ok")
    assert_verdict(model, [incr, op(1, "read", 2, 0, 3)], "ok")
    # Once a read has chosen a branch, the other one is gone.
    result = assert_verdict(model, [incr, op(1, "read", 2, 0, 3), op(1, "read", 4, 1, 5)],
                            "illegal")
    assert result.linearization_state == frozenset({0})
    assert format_failure(result, model).endswith("longest linearization: {0}")


def test_the_lifted_model_merges_equal_branches():
    model = Counter()
    states = model.init()
    for _ in range(3):
        ok, states = model.step(states, "incr", UNKNOWN)
        assert ok
    assert states == frozenset({0, 1, 2, 3})
    assert model.step(states, "read", 7) == (False, frozenset())


# ---- histories linearizable by construction, and one planted anomaly ----

NEVER_WRITTEN = 10_000
GAP = 10  # time between two consecutive linearization points
SLACK_MAX = 3 * GAP  # how far an interval may stretch on either side of its point


@st.composite
def register_histories(draw):
    """A random sequential register execution, then an interval around each operation's
    linearization point. Writes and cas write fresh values, so every value is unique. Some reads
    time out (output UNKNOWN); some writes and cas time out too (ret = inf, output UNKNOWN), and
    of those some never applied."""
    ops, state, fresh = [], None, 1
    for k in range(draw(st.integers(1, 30))):
        point = GAP * (k + 1)
        call = point - draw(st.integers(0, SLACK_MAX))
        ret = point + draw(st.integers(0, SLACK_MAX))
        kind = draw(st.sampled_from(["read", "read", "timed-out read", "write", "cas"]))
        if kind.endswith("read"):
            ops.append(read(k, call, UNKNOWN if kind == "timed-out read" else state, ret))
            continue
        if kind == "write":
            input = ("write", fresh)
        else:
            input = ("cas", draw(st.sampled_from([state, fresh - 1, None])), fresh)
        fresh += 1
        applies = kind == "write" or state == input[1]
        timed_out, lost = draw(st.integers(0, 3)) == 0, draw(st.booleans())
        if timed_out:
            ops.append(op(k, input, call, UNKNOWN, math.inf))
            if lost:
                continue
        else:
            ops.append(op(k, input, call, None if kind == "write" else applies, ret))
        if applies:
            state = input[-1]
    return ops


def known_reads(ops):
    return [i for i, o in enumerate(ops) if o.input == ("read",) and o.output is not UNKNOWN]


@settings(max_examples=100, deadline=None)
@given(register_histories())
def test_a_history_linearizable_by_construction_passes(ops):
    assert_verdict(REGISTER, ops, "ok", timeout_s=CORPUS_TIMEOUT_S)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_read_of_a_value_never_written_fails(data):
    ops = data.draw(register_histories().filter(known_reads))
    i = data.draw(st.sampled_from(known_reads(ops)))
    ops[i] = read(ops[i].client_id, ops[i].call, NEVER_WRITTEN, ops[i].ret)
    assert_verdict(REGISTER, ops, "illegal", timeout_s=CORPUS_TIMEOUT_S)


def stale_candidates(ops):
    """(read, old write) pairs where the write was overwritten by another completed write that
    began after it returned and returned before the read began: no order lets the read see it."""
    writes = [i for i, o in enumerate(ops) if o.input[0] == "write" and o.ret != math.inf]
    return [(r, w1) for r in known_reads(ops) for w1 in writes
            if any(ops[w1].ret < ops[w2].call and ops[w2].ret < ops[r].call for w2 in writes)]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_a_read_of_an_overwritten_value_fails(data):
    ops = data.draw(register_histories().filter(stale_candidates))
    r, w1 = data.draw(st.sampled_from(stale_candidates(ops)))
    ops[r] = read(ops[r].client_id, ops[r].call, ops[w1].input[1], ops[r].ret)
    assert_verdict(REGISTER, ops, "illegal", timeout_s=CORPUS_TIMEOUT_S)
