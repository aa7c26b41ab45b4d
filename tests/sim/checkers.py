"""Invariants the simulator checks continuously (Raft paper Figure 3, plus raftkv's extras).

Each failure raises InvariantViolation naming the seed and the command that replays it.

- Election Safety: at most one leader per term, over the whole run.
- Leader Append-Only: while a member leads term T, its log never loses or changes an entry.
- Log Matching: entries with the same (index, term) anywhere carry the same payload and follow
  the same (index - 1, term); by induction the logs are identical up to there.
- Leader Completeness: every committed entry is in the log of every leader of a later term
  (checked when a leader appears, and for live leaders when an entry commits).
- State Machine Safety: no two members apply different entries at one index.
- Durability (the Ready contract): persisted term, vote and commit never regress (across
  restarts too, since the disk survives); a message never carries a term newer than the sender's
  durable term, a granted vote is durable before it is sent, an append acknowledgement only
  covers durable entries, and a leader commits only what a quorum of voters holds durably.
- Reads: a ReadIndex answer at index i covers every write acknowledged before the read began,
  and the state machine that serves it holds those writes.
- Liveness (in cluster.py): after healing, a leader appears and writes commit within a bound.
"""
from __future__ import annotations

from raftkv.raft.errors import CompactedError, UnavailableError
from raftkv.raft.raft import StateType
from raftkv.raft.types import MsgType

_PRE_VOTE_TYPES = frozenset({MsgType.PRE_VOTE, MsgType.PRE_VOTE_RESP})


class InvariantViolation(AssertionError):
    pass


TICKS_MAX_DEFAULT = 400  # ticks of the fault phase, unless a run asks for more


def replay_command(seed, members, ticks_max=TICKS_MAX_DEFAULT):
    """The tools/vopr.py command that replays a run exactly (the fault phase's length is part
    of the run: the same seed with another --ticks-max is another run)."""
    ticks = f" --ticks-max {ticks_max}" if ticks_max != TICKS_MAX_DEFAULT else ""
    return f"python tools/vopr.py --seed {seed} --members {members}{ticks}"


def _term(log, i):
    """The term of entry i in a RaftLog or MemoryStorage, or None if compacted / absent."""
    try:
        return log.term(i)
    except (CompactedError, UnavailableError):
        return None


def _durable_holds(storage, index, term):
    """Whether a member's disk holds (index, term), or a snapshot covering index."""
    if storage.snap.metadata.index >= index:
        return True
    return _term(storage, index) == term


class Checker:
    def __init__(self, seed, members, ticks_max=TICKS_MAX_DEFAULT):
        self.seed = seed
        self.members = members
        self.ticks_max = ticks_max
        self.leaders = {}  # term -> leader id
        self.entries = {}  # (index, term) -> (prev term, type, data)
        self.committed = {}  # index -> term
        self.commit_max = 0
        self.applied = {}  # index -> (term, type, data)
        self.leader_logs = {}  # (id, term) -> (last index, its term) when last checked
        self.checks = 0
        self.live_leaders = lambda: ()  # the cluster installs: [(id, Raft)] leading right now

    def fail(self, what):
        raise InvariantViolation(
            f"seed {self.seed} ({self.members} members): {what}\n"
            f"replay: {replay_command(self.seed, self.members, self.ticks_max)}")

    # ---- elections ----
    def on_leader(self, mid, raft):
        """mid is leader of raft.term right now."""
        term = raft.term
        prev = self.leaders.setdefault(term, mid)
        if prev != mid:
            self.fail(f"election safety: term {term} has leaders {prev} and {mid}")
        key = (mid, term)
        if key in self.leader_logs:
            self._check_append_only(mid, raft, self.leader_logs[key])
            return
        # A new leader: it must hold every entry committed so far (leader completeness).
        log = raft.log
        first = log.first_index()
        for i, t in self.committed.items():
            if i < first or t >= term:
                continue
            if _term(log, i) != t:
                self.fail(f"leader completeness: leader {mid} of term {term} lacks committed "
                          f"entry {i} of term {t} (has {_term(log, i)})")
        self.leader_logs[key] = self._tail(log)

    @staticmethod
    def _tail(log):
        last = log.last_index()
        return last, log.term(last)

    def _check_append_only(self, mid, raft, tail):
        """O(1) per check: the last entry seen so far is still there with its term (a leader
        that truncated or rewrote its log would lose it or change its term)."""
        log = raft.log
        self.checks += 1
        last, term = tail
        if log.last_index() < last or (last >= log.first_index() and _term(log, last) != term):
            self.fail(f"leader append-only: leader {mid} of term {raft.term} had entry {last} "
                      f"of term {term}; now last index {log.last_index()}, term there "
                      f"{_term(log, last)}")
        if log.last_index() != last:
            self.leader_logs[(mid, raft.term)] = self._tail(log)

    # ---- logs ----
    def on_entries(self, mid, log, ents):
        """ents are about to be persisted by mid (Ready.entries); log is its RaftLog."""
        if not ents:
            return
        prev_term = _term(log, ents[0].index - 1)
        for e in ents:
            key = (e.index, e.term)
            got = (prev_term, e.type, e.data)
            seen = self.entries.get(key)
            if seen is None:
                self.entries[key] = got
            elif seen[1:] != got[1:] or (None not in (seen[0], prev_term)
                                         and seen[0] != prev_term):
                self.fail(f"log matching: member {mid} has entry {key} = {got}, "
                          f"another member had {seen}")
            prev_term = e.term

    def on_commit(self, mid, raft, storage_of, old, new):
        """mid persisted commit index new (was old); raft is its core."""
        log = raft.log
        lo = max(old + 1, log.first_index())
        for i in range(lo, new + 1):
            t = log.term(i)
            prev = self.committed.setdefault(i, t)
            if prev != t:
                self.fail(f"committed entry {i} of term {prev} became term {t} on member {mid}")
            if i > self.commit_max:
                self.commit_max = i
                self._check_live_leaders_hold(i, t)
        if raft.state == StateType.LEADER and new > old:  # quorum durability of its commit
            t = log.term(new)
            holders = [v for v in sorted(raft.voters)
                       if v in storage_of and _durable_holds(storage_of[v], new, t)]
            if len(holders) < len(raft.voters) // 2 + 1:
                self.fail(f"leader {mid} committed {new} (term {t}) but only {holders} of "
                          f"voters {sorted(raft.voters)} hold it durably")

    def _check_live_leaders_hold(self, i, t):
        for mid, raft in self.live_leaders():
            if raft.term > t and i >= raft.log.first_index() and _term(raft.log, i) != t:
                self.fail(f"leader completeness: entry {i} of term {t} committed while leader "
                          f"{mid} of term {raft.term} lacks it")

    def on_apply(self, mid, e):
        got = (e.term, e.type, e.data)
        prev = self.applied.setdefault(e.index, got)
        if prev != got:
            self.fail(f"state machine safety: member {mid} applied {got} at {e.index}, "
                      f"another applied {prev}")

    def on_install(self, mid, sm):
        """mid installed a snapshot state machine: its writes must be the applied ones."""
        for i, data in sm.writes:
            prev = self.applied.get(i)
            if prev is not None and prev[2] != data:
                self.fail(f"state machine safety: snapshot installed on member {mid} has {data!r}"
                          f" at {i}, applied elsewhere as {prev}")

    # ---- the Ready contract ----
    def on_hard_state(self, mid, old, new):
        """mid persists hard state new over old: term, vote and commit never regress (a vote
        changed within a term would be a second vote)."""
        if new.term < old.term or new.commit < old.commit or \
                (new.term == old.term and old.vote and new.vote != old.vote):
            self.fail(f"member {mid} persisted hard state {new} over {old}")

    def on_send(self, mid, m, storage, early):
        hs = storage.hard_state
        where = "early message" if early else "message"
        if m.term and m.type not in _PRE_VOTE_TYPES and m.term > hs.term:
            self.fail(f"{where} {m.type.name} {mid}->{m.to} carries term {m.term} but the "
                      f"durable term is {hs.term}")
        if m.type == MsgType.VOTE_RESP and not m.reject and \
                (hs.term != m.term or hs.vote != m.to):
            self.fail(f"vote for {m.to} in term {m.term} sent by {mid} before it was durable "
                      f"(durable {hs})")
        if m.type == MsgType.APP_RESP and not m.reject and m.index > storage.last_index():
            self.fail(f"member {mid} acknowledged index {m.index} but durably holds only up to "
                      f"{storage.last_index()}")

    # ---- reads ----
    def on_read_state(self, mid, ctx, index, acked_max):
        if index < acked_max:
            self.fail(f"read {ctx!r} on member {mid} released at index {index}, but a write "
                      f"acknowledged before it began is at index {acked_max}")

    def on_read_served(self, mid, ctx, sm, acked_max, acked_data):
        if acked_data is not None and sm.index_of.get(acked_data) != acked_max:
            self.fail(f"read {ctx!r} served on member {mid} at applied {sm.applied} misses the "
                      f"write {acked_data!r} acknowledged at index {acked_max} before it began")
