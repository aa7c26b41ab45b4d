"""The model and checks for raftkv's recorded client histories (tests/cluster/histories.py).

An operation is recorded as an `Op`: kind get (linearizable), sget (serializable), put, delete
or cas (a txn: compare mod_revision == expected, put on success, get on failure), with its call
and return times and what the client saw (`out`; None for a failed operation, whose outcome is
unknown):

    get, sget   (value or None, mod_revision or 0)
    put         the put's revision
    delete      (deleted count, the response's revision)
    cas         (succeeded, the response's revision, None or the failure branch's (value,
                mod_revision))

Per key, the linearizable operations must form a linearizable history of RegisterModel (the
Wing-Gong search in checker.py). Outside that search, cheap global checks use the store's
revisions, which a per-key check cannot see (TESTING.md §4.2): revisions never go back in real
time, each successful write has its own revision, and a serializable read returns only values
some client wrote.
"""
from __future__ import annotations

import dataclasses
import math

from tests.linearizability.checker import NondeterministicModel, Operation, partition_by_key


@dataclasses.dataclass
class Op:
    """One client operation as recorded; out is None when it failed (outcome unknown)."""
    client: int
    kind: str  # get | sget | put | delete | cas
    key: bytes
    arg: object  # put: the value written; cas: (expected mod_revision, value)
    call: float
    ret: float = math.inf
    out: object = None
    header_rev: int = 0  # the response header's store revision
    error: str = ""


class RegisterModel(NondeterministicModel):
    """One key as a versioned register: a state is (value,
    mod_revision), value None for an absent key, and mod_revision None when a write of unknown
    outcome may have set it (a later read tells which). Inputs are (kind, arg, key); outputs
    are what the client saw (None: unknown)."""

    def init_states(self):
        return [(None, 0)]

    def step_set(self, state, inp, out):
        kind, arg, _key = inp
        value, rev = state
        if kind == "get":
            got_value, got_rev = out
            if got_value != value:
                return []
            if value is None:
                return [state]
            return [(value, got_rev)] if rev is None or rev == got_rev else []
        if kind == "put":
            if out is None:
                return [(arg, None)]
            return [(arg, out)] if _later(out, rev) else []
        if kind == "delete":
            if out is None:
                return [state] if value is None else [(None, None)]
            deleted, hdr = out
            if value is None:
                return [state] if deleted == 0 else []
            return [(None, hdr)] if deleted == 1 and _later(hdr, rev) else []
        if kind == "cas":
            expect, new_value = arg
            may_hold, may_fail = _cas_outcomes(value, rev, expect)
            if out is None:
                return ([(new_value, None)] if may_hold else []) + ([state] if may_fail else [])
            succeeded, hdr, seen = out
            if succeeded:
                return [(new_value, hdr)] if may_hold and _later(hdr, rev) else []
            if not may_fail:
                return []
            # The failure branch read the key at the same linearization point.
            return self.step_set(state, ("get", None, _key), seen)
        raise AssertionError(f"unknown operation kind {kind!r}")

    @staticmethod
    def partition(ops):
        return partition_by_key(ops, lambda inp: inp[2])

    @staticmethod
    def describe_operation(inp, out):
        kind, arg, key = inp
        shown = "?" if out is None else repr(out)
        return f"{kind}({key.decode(errors='replace')}, {arg!r}) -> {shown}"


def model():
    return RegisterModel()


def _later(new_rev, rev):
    """A write's revision must be later than the one it overwrites (when that is known)."""
    return rev is None or new_rev > rev


def _cas_outcomes(value, rev, expect):
    """(the compare mod_revision == expect may hold, it may fail) in state (value, rev)."""
    if value is None:
        holds = expect == 0  # an absent key's mod_revision is 0
        return holds, not holds
    if rev is None:
        return expect != 0, True
    return rev == expect, rev != expect


def history(ops):
    """The linearizable operations as checker Operations (failed reads dropped; a failed
    write has an unknown outcome and no return)."""
    out = []
    for op in ops:
        if op.kind == "sget" or (op.out is None and op.kind == "get"):
            continue
        out.append(Operation(op.client, (op.kind, op.arg, op.key), op.call, op.out,
                             op.ret if op.out is not None else math.inf))
    return out


def revision_order_violations(ops):
    """Pairs (a, b) of completed linearizable operations where a returned before b was called
    but b reports an older store revision than a."""
    done = sorted((op for op in ops if op.out is not None and op.kind != "sget"),
                  key=lambda op: op.ret)
    bad = []
    best = None  # the op with the highest revision among those returned before the cursor
    i = 0
    for op in sorted((op for op in ops if op.out is not None and op.kind != "sget"),
                     key=lambda op: op.call):
        while i < len(done) and done[i].ret < op.call:
            if best is None or done[i].header_rev > best.header_rev:
                best = done[i]
            i += 1
        if best is not None and op.header_rev < best.header_rev:
            bad.append((best, op))
    return bad


def duplicate_write_revisions(ops):
    """Successful writes that report the same revision (each write makes its own)."""
    by_rev = {}
    for op in ops:
        if op.out is None:
            continue
        if op.kind == "put" or (op.kind == "delete" and op.out[0] == 1) or \
                (op.kind == "cas" and op.out[0]):
            by_rev.setdefault(op.header_rev, []).append(op)
    return {rev: group for rev, group in by_rev.items() if len(group) > 1}


def phantom_serializable_reads(ops):
    """Serializable gets that returned a value no client ever tried to write."""
    written = {op.arg for op in ops if op.kind == "put"}
    written |= {op.arg[1] for op in ops if op.kind == "cas"}
    return [op for op in ops if op.kind == "sget" and op.out is not None
            and op.out[0] is not None and op.out[0] not in written]




@dataclasses.dataclass
class WatchSegment:
    """What one watcher received between two (re)starts that had to give up continuity."""
    start: int  # the revision asked for (0: from now, no constraint on the first event)
    events: list = dataclasses.field(default_factory=list)  # (revision, type, key, value)
    end: str = ""  # why the segment ended ("compacted at N"); "" while it was open


@dataclasses.dataclass
class WatchLog:
    wid: int
    segments: list = dataclasses.field(default_factory=list)
    resumes: int = 0  # re-opened from the revision after the last event (same segment)

    def last_revision(self):
        for seg in reversed(self.segments):
            if seg.events:
                return seg.events[-1][0]
        return 0


def watch_violations(logs, ops, final_revision, dense=True):
    """etcd's watch guarantees (ordered, unique, reliable, resumable; validate/watch.go) for
    watchers of the whole key space the ops write. dense: every revision changed exactly one
    watched key, so a segment's events must have consecutive revisions. Every watcher must
    reach final_revision, watchers must agree on each revision's event, and the events must
    match the acknowledged writes and carry only values some client wrote."""
    bad = []
    truth = {}
    # The first revision that changed a watched key: a watch from before it starts there.
    firsts = [seg.events[0][0] for w in logs for seg in w.segments if seg.events]
    firsts += [ev[0] for ev in map(_event_of, ops) if ev is not None]
    floor = min(firsts, default=0)
    # Compaction at R removes a delete made at R (its tombstone; etcd 3.4.23 does the same):
    # a watch resumed from R after "compacted at R" then starts at R + 1.
    deletes = {ev[0] for ev in map(_event_of, ops) if ev is not None and ev[1] == "DELETE"}
    deletes |= {ev[0] for w in logs for seg in w.segments for ev in seg.events
                if ev[1] == "DELETE"}
    for w in logs:
        for i, seg in enumerate(w.segments):
            prev = None
            after_compaction = i > 0 and w.segments[i - 1].end == f"compacted at {seg.start}"
            for ev in seg.events:
                rev = ev[0]
                if prev is None:
                    expected = max(seg.start, floor)
                    if after_compaction and seg.start in deletes:
                        expected = seg.start + 1
                    if seg.start and dense and rev != expected:
                        bad.append(f"watcher {w.wid}: asked from {seg.start}, first event at "
                                   f"{rev}")
                elif rev <= prev or (dense and rev != prev + 1):
                    bad.append(f"watcher {w.wid}: event at {rev} right after {prev}")
                prev = rev
                seen = truth.setdefault(rev, ev)
                if seen != ev:
                    bad.append(f"revision {rev}: watcher {w.wid} saw {ev}, another {seen}")
        if final_revision and w.last_revision() < final_revision:
            bad.append(f"watcher {w.wid} stopped at revision {w.last_revision()}, never "
                       f"reaching {final_revision}")
    written = set()
    for op in ops:
        if op.kind in ("put", "cas"):
            written.add((op.key, op.arg if op.kind == "put" else op.arg[1]))
        expect = _event_of(op)
        if expect is not None and expect[0] in truth and truth[expect[0]] != expect:
            bad.append(f"{op} was acknowledged, but watchers saw {truth[expect[0]]}")
    for rev, ev in sorted(truth.items()):
        if ev[1] == "PUT" and (ev[2], ev[3]) not in written:
            bad.append(f"revision {rev}: {ev} puts a value no client wrote")
    return bad


def _event_of(op):
    """The watch event an acknowledged write must have made, or None."""
    if op.out is None:
        return None
    if op.kind == "put":
        return (op.out, "PUT", op.key, op.arg)
    if op.kind == "delete" and op.out[0] == 1:
        return (op.out[1], "DELETE", op.key, b"")
    if op.kind == "cas" and op.out[0]:
        return (op.out[1], "PUT", op.key, op.arg[1])
    return None
