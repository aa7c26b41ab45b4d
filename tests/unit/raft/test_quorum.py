"""Quorum arithmetic: committed_index (Raft §5.3, §5.4) and vote_result (§5.2), compared
with simple reference definitions by hypothesis."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.raft.progress import committed_index, vote_result


def ref_committed(matches):
    """The largest index that a strict majority of the voters hold (0 if none)."""
    n = len(matches)
    best = 0
    for i in set(matches) | {0}:
        if sum(1 for m in matches if m >= i) > n // 2:
            best = max(best, i)
    return best


def ref_vote(n, granted, rejected):
    q = n // 2 + 1
    if granted >= q:
        return "won"
    if n - rejected < q:
        return "lost"
    return "pending"


@pytest.mark.parametrize("matches,want", [
    ([5], 5), ([5, 3], 3), ([5, 3, 1], 3), ([1, 3, 5, 7], 3), ([2, 2, 2, 9, 9], 2),
    ([0, 0, 9], 0), ([9, 9, 0], 9), ([4, 4, 4, 0, 0, 0], 0), ([4, 4, 4, 4, 0, 0], 4),
    ([4, 4, 4, 4, 0, 0, 0], 4),
])
def test_committed_index_table(matches, want):
    """§5.3: an index is committed when a majority of voters hold it."""
    voters = list(range(1, len(matches) + 1))
    assert committed_index(voters, lambda v: matches[v - 1]) == want


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=9))
def test_committed_index_matches_reference(matches):
    """§5.3: committed_index equals the majority-held maximum, for any voter set."""
    voters = list(range(1, len(matches) + 1))
    assert committed_index(voters, lambda v: matches[v - 1]) == ref_committed(matches)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=9),
       st.lists(st.integers(min_value=1, max_value=1000), max_size=3))
def test_committed_index_ignores_non_voters(matches, extra):
    """§4.1: learners and unknown members never count toward a commit quorum."""
    voters = list(range(1, len(matches) + 1))
    mm = {v: matches[v - 1] for v in voters}
    for k, e in enumerate(extra):
        mm[100 + k] = e  # not in voters
    assert committed_index(voters, lambda v: mm.get(v, 0)) == ref_committed(matches)


def test_committed_index_empty_config_is_unbounded():
    """An empty configuration commits everything (etcd's convention)."""
    assert committed_index([], lambda v: 0) >= 2 ** 62


@given(st.integers(min_value=1, max_value=9), st.data())
def test_vote_result_matches_reference(n, data):
    """§5.2: won with a majority of grants; lost when a majority can no longer be reached."""
    voters = list(range(1, n + 1))
    votes = {}
    for v in voters:
        choice = data.draw(st.sampled_from([None, True, False]))
        if choice is not None:
            votes[v] = choice
    votes[n + 7] = True  # a non-voter's vote counts for nothing
    granted = sum(1 for v in voters if votes.get(v) is True)
    rejected = sum(1 for v in voters if votes.get(v) is False)
    assert vote_result(voters, votes) == ref_vote(n, granted, rejected)


@pytest.mark.parametrize("n,granted,rejected,want", [
    (1, 1, 0, "won"), (1, 0, 1, "lost"), (1, 0, 0, "pending"),
    (3, 2, 0, "won"), (3, 1, 1, "pending"), (3, 1, 2, "lost"),
    (4, 2, 2, "lost"), (4, 2, 1, "pending"), (4, 3, 0, "won"),
    (5, 3, 2, "won"), (5, 2, 2, "pending"), (5, 2, 3, "lost"),
])
def test_vote_result_table(n, granted, rejected, want):
    voters = list(range(1, n + 1))
    votes = {v: True for v in voters[:granted]}
    votes.update({v: False for v in voters[granted:granted + rejected]})
    assert vote_result(voters, votes) == want
