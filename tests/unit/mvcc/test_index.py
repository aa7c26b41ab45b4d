"""KeyIndex, a key's revision history: the C twin (raftkv.mvcc._cindex) against the pure one
(raftkv.mvcc._pyindex), operation by operation, plus the pure twin's own semantics."""
import gc

import pytest
from hypothesis import given, settings, strategies as st

from raftkv.mvcc import _pyindex

SHIFT = 33


def entry(main, sub=0, tomb=False):
    return ((main << 32 | sub) << 1) | int(tomb)


def twins():
    out = [_pyindex.KeyIndex]
    try:
        from raftkv.mvcc import _cindex
    except ImportError:  # a pure build: the C twin is skipped below
        return out
    return out + [_cindex.KeyIndex]


@pytest.fixture(params=["pure", "c"])
def KeyIndex(request):
    if request.param == "pure":
        return _pyindex.KeyIndex
    return pytest.importorskip("raftkv.mvcc._cindex").KeyIndex


def test_history_queries(KeyIndex):
    ki = KeyIndex()
    assert ki.empty() and ki.entries() == [] and ki.at(10) is None and ki.before(entry(3)) is None
    assert ki.compact(10) == []
    for e in (entry(2), entry(2, 1), entry(5, 0, True), entry(7), entry(9)):
        ki.push(e)
    assert not ki.empty() and ki.last() == entry(9)
    assert [ki.at(m) for m in range(1, 11)] == [
        None, entry(2, 1), entry(2, 1), entry(2, 1), None, None, entry(7), entry(7), entry(9),
        entry(9)]
    assert ki.before(entry(2, 1)) == entry(2)
    assert ki.before(entry(7)) is None  # the tombstone ends the generation
    assert ki.before(entry(9)) == entry(7)
    assert ki.before(entry(2)) is None
    assert ki.compact(6) == [entry(2), entry(2, 1), entry(5, 0, True)]  # tombstone dropped too
    assert ki.entries() == [entry(7), entry(9)]
    assert ki.compact(9) == [entry(7)]
    assert ki.entries() == [entry(9)] and ki.at(9) == entry(9)
    ki.push(entry(10, 0, True))
    assert ki.compact(11) == [entry(9), entry(10, 0, True)] and ki.empty()


def test_cached_fields_and_bad_pushes(KeyIndex):
    ki = KeyIndex()
    ki.create, ki.version, ki.lease = 2 ** 40, 3, 7
    assert (ki.create, ki.version, ki.lease) == (2 ** 40, 3, 7)
    ki.push(entry(4))
    for bad in (entry(4), entry(3), -1):
        with pytest.raises(ValueError):
            ki.push(bad)
    assert ki.entries() == [entry(4)]  # a refused push changes nothing
    big = entry(2 ** 40, 5, True)  # main beyond 31 bits: the entry needs more than 64 bits
    ki.push(big)
    assert ki.last() == big and ki.at(2 ** 40) is None and ki.before(big) == entry(4)


def test_c_key_index_is_small_and_untracked():
    cindex = pytest.importorskip("raftkv.mvcc._cindex")
    import sys

    ki = cindex.KeyIndex()
    ki.push(entry(1))
    assert not gc.is_tracked(ki)
    assert sys.getsizeof(ki) <= 80


ops = st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(0, 3), st.integers(0, 2), st.booleans()),
    st.tuples(st.just("at"), st.integers(-1, 40)),
    st.tuples(st.just("before"), st.integers(0, 40), st.integers(0, 3)),
    st.tuples(st.just("compact"), st.integers(-1, 40)),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops, st.sampled_from([0, 2 ** 31 - 20, 2 ** 40]))
def test_twins_agree(seq, base):
    """Every twin gives the same answers and ends with the same history."""
    kinds = twins()
    if len(kinds) < 2:
        pytest.skip("the C twin is not built")
    keys = [k() for k in kinds]
    main = base
    for op in seq:
        if op[0] == "push":
            main += op[1]
            e = entry(main, op[2], op[3])
            got = []
            for ki in keys:
                try:
                    ki.push(e)
                    got.append("ok")
                except ValueError:
                    got.append("refused")
        elif op[0] == "at":
            got = [ki.at(base + op[1]) for ki in keys]
        elif op[0] == "before":
            got = [ki.before(entry(base + op[1], op[2])) for ki in keys]
        else:
            got = [ki.compact(base + op[1]) for ki in keys]
        assert got[0] == got[1], op
        assert keys[0].entries() == keys[1].entries()
        assert keys[0].empty() == keys[1].empty()
        if not keys[0].empty():
            assert keys[0].last() == keys[1].last()
