"""RaftLog and Unstable: the stable log (MemoryStorage) plus the unpersisted tail (Figure 2's
log[], §5.3 log matching), with a hypothesis model of append / persist / compact."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.raft import ConfState, Entry, MemoryStorage, Snapshot, SnapshotMetadata
from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.log import RaftLog, Unstable
from tests.unit.raft.conftest import ents


def snap(index, term):
    return Snapshot(metadata=SnapshotMetadata(ConfState(voters=[1]), index, term))


def stored_log(*terms, compact=0):
    s = MemoryStorage()
    s.append(ents(*terms))
    if compact:
        s.compact(compact)
    return RaftLog(s)


# ---------------------------------------------------------------- Unstable
def test_unstable_indexes_and_terms():
    u = Unstable(5)
    assert u.maybe_first_index() is None and u.maybe_last_index() is None
    u.entries = ents(1, 1, start=5)
    assert u.maybe_last_index() == 6 and u.maybe_term(6) == 1
    assert u.maybe_term(4) is None and u.maybe_term(7) is None
    u.snapshot = snap(4, 1)
    assert u.maybe_first_index() == 5 and u.maybe_term(4) == 1


@pytest.mark.parametrize("first,want_offset,want", [
    (7, 5, [(5, 1), (6, 1), (7, 2)]),  # append after the tail
    (6, 5, [(5, 1), (6, 2)]),  # truncate inside the tail
    (5, 5, [(5, 2)]),  # replace the whole tail
    (3, 3, [(3, 2)]),  # replace below the offset (already persisted entries)
])
def test_unstable_truncate_and_append(first, want_offset, want):
    u = Unstable(5)
    u.entries = ents(1, 1, start=5)
    u.truncate_and_append(ents(2, start=first))
    assert u.offset == want_offset
    assert [(e.index, e.term) for e in u.entries] == want


@pytest.mark.parametrize("i,t,want_offset,left", [
    (5, 1, 6, 1), (6, 1, 7, 0), (6, 2, 5, 2), (4, 1, 5, 2), (9, 1, 5, 2),
])
def test_unstable_stable_to(i, t, want_offset, left):
    """stable_to ignores stale reports (wrong term: the entries were replaced meanwhile)."""
    u = Unstable(5)
    u.entries = ents(1, 1, start=5)
    u.stable_to(i, t)
    assert (u.offset, len(u.entries)) == (want_offset, left)


def test_unstable_restore_and_stable_snap_to():
    u = Unstable(5)
    u.entries = ents(1, start=5)
    u.restore(snap(10, 3))
    assert (u.offset, u.entries, u.maybe_last_index()) == (11, [], 10)
    u.stable_snap_to(9)
    assert u.snapshot is not None
    u.stable_snap_to(10)
    assert u.snapshot is None


# ---------------------------------------------------------------- RaftLog
def test_log_spans_storage_and_unstable():
    log = stored_log(1, 1, 2)
    log.append(ents(3, 3, start=4))
    assert (log.first_index(), log.last_index(), log.last_term()) == (1, 5, 3)
    assert [e.index for e in log.slice(2, 6)] == [2, 3, 4, 5]
    assert [e.term for e in log.entries_from(3)] == [2, 3, 3]


def test_log_term_out_of_range():
    log = stored_log(1, 1, 2, 2, compact=2)
    assert log.term(2) == 1  # the dummy entry keeps the compacted index's term
    with pytest.raises(CompactedError):
        log.term(1)
    with pytest.raises(UnavailableError):
        log.term(5)
    assert log.term_or_zero(1) == 0 and not log.match_term(5, 2)
    with pytest.raises(CompactedError):
        log.slice(2, 4)


def test_log_slice_max_size_at_least_one():
    log = stored_log(1, 1)
    log.append([Entry(1, 3, data=b"x" * 100), Entry(1, 4, data=b"y")])
    assert len(log.slice(1, 5, max_size=0)) == 1
    assert [e.index for e in log.slice(1, 5, max_size=60)] == [1, 2]
    assert [e.index for e in log.slice(3, 5, max_size=10)] == [3]
    assert len(log.slice(1, 5)) == 4


@pytest.mark.parametrize("index,log_term,committed,new,want_last,want_terms,want_commit", [
    (0, 0, 0, [], 0, [1, 2, 3], 0),  # heartbeat-like probe at the start
    (3, 3, 3, [], 3, [1, 2, 3], 3),
    (3, 3, 9, [(4, 4)], 4, [1, 2, 3, 4], 4),  # commit clamps to the last new entry
    (2, 2, 3, [(3, 4)], 3, [1, 2, 4], 3),  # conflict at 3 replaced
    (1, 1, 1, [(2, 2)], 2, [1, 2, 3], 1),  # matching entries kept, suffix not truncated
    (3, 2, 3, [], None, [1, 2, 3], 0),  # term mismatch: rejected
    (4, 3, 3, [], None, [1, 2, 3], 0),  # beyond the log: rejected
])
def test_maybe_append(index, log_term, committed, new, want_last, want_terms, want_commit):
    """Figure 2, AppendEntries receiver rules 2-5."""
    log = stored_log(1, 2, 3)
    es = [Entry(t, i) for i, t in new]
    assert log.maybe_append(index, log_term, committed, es) == want_last
    assert [log.term(i) for i in range(1, log.last_index() + 1)] == want_terms
    assert log.committed == want_commit


def test_maybe_append_refuses_to_overwrite_committed():
    """Log Matching / Leader Completeness: a committed entry is never replaced."""
    log = stored_log(1, 2, 3)
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.maybe_append(1, 1, 3, [Entry(9, 2)])


@pytest.mark.parametrize("index,term,want", [
    (7, 9, (7, 4)), (7, 4, (7, 4)), (7, 3, (4, 3)), (7, 2, (2, 2)), (7, 1, (1, 1)),
    (7, 0, (0, 0)), (3, 2, (2, 2)),
])
def test_find_conflict_by_term(index, term, want):
    """§5.3 optimisation: the largest index <= index whose term is <= term."""
    log = stored_log(1, 2, 3, 3, 4, 4, 4)
    assert log.find_conflict_by_term(index, term) == want


def test_find_conflict_by_term_stops_at_compaction():
    log = stored_log(1, 2, 3, 3, 4, compact=3)
    assert log.find_conflict_by_term(5, 1) == (2, 0)  # below the dummy entry: term unknown


@pytest.mark.parametrize("lasti,term,ok", [
    (3, 3, True), (4, 3, True), (2, 3, False), (1, 4, True), (9, 2, False),
])
def test_is_up_to_date(lasti, term, ok):
    """§5.4.1: compare last terms, then last indexes."""
    assert stored_log(1, 2, 3).is_up_to_date(lasti, term) is ok


def test_maybe_commit_only_current_term():
    """§5.4.2: commit by counting only for entries of the current term."""
    log = stored_log(1, 2, 3)
    assert not log.maybe_commit(2, 3)
    assert not log.maybe_commit(3, 4)
    assert log.maybe_commit(3, 3) and log.committed == 3
    assert not log.maybe_commit(2, 2)  # never backwards


def test_commit_beyond_last_index_is_refused():
    log = stored_log(1)
    with pytest.raises(AssertionError):
        log.commit_to(2)


def test_next_committed_ents_and_applied():
    log = stored_log(1, 1, 1)
    log.commit_to(2)
    assert [e.index for e in log.next_committed_ents()] == [1, 2]
    log.applied_to(2)
    assert not log.has_next_committed_ents()
    with pytest.raises(AssertionError):
        log.applied_to(3)  # not committed


def test_restore_snapshot_resets_log():
    log = stored_log(1, 1, 1)
    log.restore(snap(10, 2))
    assert (log.first_index(), log.last_index(), log.committed, log.last_term()) == (11, 10, 10, 2)
    assert not log.has_next_committed_ents()  # the snapshot is applied first
    assert log.snapshot().metadata.index == 10


# ---------------------------------------------------------------- model-based
OPS = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 12), st.integers(1, 4), st.integers(1, 4)),
    st.tuples(st.just("persist"), st.integers(0, 30)),
    st.tuples(st.just("commit"), st.integers(0, 30)),
    st.tuples(st.just("compact"), st.integers(0, 30)),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_log_matches_model(ops):
    """RaftLog over MemoryStorage behaves as one list of terms under appends (with conflicts
    after the commit point), persistence of any prefix and compaction below the applied
    index: indexes, terms and slices agree with the model and invariants hold."""
    storage = MemoryStorage()
    log = RaftLog(storage)
    model = []  # model[i - 1] = term of entry i
    term = 1
    for op in ops:
        if op[0] == "append":
            _, back, n, dt = op
            term += dt - 1
            after = max(log.committed, len(model) - back)
            new = [Entry(term, after + 1 + k) for k in range(n)]
            log.append(new)
            model = model[:after] + [term] * n
        elif op[0] == "persist":
            i = min(op[1], log.last_index())
            if i >= log.unstable.offset:
                storage.append(log.unstable.slice(log.unstable.offset, i + 1))
                log.stable_to(i, model[i - 1])
        elif op[0] == "commit":
            log.commit_to(min(op[1], len(model)))
            log.applied_to(log.committed)
        else:
            i = min(op[1], log.applied, log.unstable.offset - 1)
            if i > storage.first_index() - 1:
                storage.compact(i)
        log.check_invariants()
        assert log.last_index() == len(model)
        first = log.first_index()
        for i in range(first - 1 if first > 1 else 1, len(model) + 1):
            assert log.term(i) == model[i - 1], (i, model)
        got = [e.term for e in log.entries_from(first)]
        assert got == model[first - 1:]
