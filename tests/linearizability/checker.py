"""A linearizability checker: Wing & Gong's search with Lowe's cache, per partition.

The algorithm is the one Porcupine implements (anishathalye/porcupine checker.go; TESTING.md
§4.2); the facts below carry over, the code does not.

- A history is a list of `Operation`s: each one is an interval [call, ret] with an input and an
  output. Intervals are closed, so two operations that share an endpoint are concurrent: at equal
  times calls sort before returns. `ret = math.inf` means the outcome is unknown (the client
  timed out, or crashed): the operation may have taken effect at any point after its call, or
  never.
- A model is duck-typed:
    init() -> state                               hashable; states compare with ==
    step(state, input, output) -> (ok, new_state) pure: never mutates `state`
    partition(ops) -> [[Operation]]               optional (P-compositionality, e.g. per key)
    describe_operation(input, output) -> str      optional, for reports
    describe_state(state) -> str                  optional, for reports
  `NondeterministicModel` lifts a model whose steps may fork (an unknown outcome that either
  applied or did not) into this interface.
- `check()` splits the history with `partition()` and checks each part on its own,
  smallest first, stopping at the first part that is not linearizable. Linearizability is
  local (Herlihy & Wing 1990, the locality theorem; Horn & Kroening, arXiv 1504.00204), so the
  history is linearizable iff every part is.
- The search for one part is depth-first. Call and return entries sit in one doubly linked list
  in time order; a prefix of calls before the first return are the candidates to linearize next.
  Linearizing an operation unlinks its call and return (dancing links); meeting a return whose
  operation is not yet linearized means the current order cannot be extended, so the search
  backtracks. Lowe's cache remembers every (set of linearized operations, state) pair reached:
  reaching one again cannot lead anywhere new, so the branch is cut.
- An operation with `ret = math.inf` has no return entry. Once every operation with a finite
  return is linearized the part is linearizable, whatever became of the unknown ones: in
  Herlihy & Wing's definition a pending invocation is either given a response or dropped.
  (Porcupine's tests instead give such an operation an unknown return at the end of the
  history; the verdicts agree whenever the model accepts an unknown output in every state, as
  the models here do.)

Verdicts are "ok", "illegal" or "unknown". "unknown" means the search hit its time budget
(`timeout_s`) or its memory budget (`cache_entries_max`) before deciding; refuting a bad history
can need gigabytes (TESTING.md §4.3), so the memory cap is on by default.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Iterable

VERDICT_OK = "ok"
VERDICT_ILLEGAL = "illegal"
VERDICT_UNKNOWN = "unknown"

# Lowe's cache grows by one entry per new (linearized set, state) pair: a tuple, an int bitset, a
# set slot and the state. Measured on kv/c50-bad (partitions of about 200 operations): two
# million entries took about 7 s to fill and peaked at about 0.6 GB RSS, so one check stays well
# under 1 GB on a 24 GiB machine shared with other tests (TESTING.md §4.3 saw an uncapped search
# pass 2 GB).
CACHE_ENTRIES_MAX_DEFAULT = 2_000_000

# How often (in search steps) to look at the clock. A step costs about a microsecond, so the
# deadline is overrun by at most a few milliseconds, and time.monotonic() stays off the hot path.
_DEADLINE_CHECK_STEPS = 4096


@dataclasses.dataclass(frozen=True)
class Operation:
    """One client operation: invoked at `call`, answered at `ret` with `output`.

    Invariant: call <= ret. `ret = math.inf` marks an unknown outcome; such an operation is
    only stepped if the search linearizes it, so its `output` should be whatever the model reads
    as "unknown" (models.UNKNOWN for the models in this package).
    """

    client_id: Any
    input: Any
    call: float
    output: Any
    ret: float

    def __post_init__(self):
        assert math.isfinite(self.call), self
        assert not math.isnan(self.ret), self
        assert self.call <= self.ret, self


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of `check()`.

    verdict:          "ok", "illegal" or "unknown".
    reason:           one line on why the verdict is not "ok"; "" when it is.
    partition:        the operations of the part that was refuted (or left undecided), in the
                      order the model's partition() gave them; () when the verdict is "ok".
    partition_index:  that part's index in the model's partition() list; -1 when "ok".
    linearization:    the longest partial linearization found in that part, in linearization
                      order: where a human should start reading; () when "ok".
    linearization_state: the model state after `linearization`.
    partitions:       how many parts the history was split into.
    partitions_checked: how many of them were searched before the verdict (all of them unless
                      one was refuted; a part reached after the deadline counts, unsearched).
    elapsed_s:        wall time spent in check().
    """

    verdict: str
    reason: str
    partition: tuple
    partition_index: int
    linearization: tuple
    linearization_state: Any
    partitions: int
    partitions_checked: int
    elapsed_s: float

    @property
    def ok(self):
        return self.verdict == VERDICT_OK


class NondeterministicModel:
    """Base class for a model whose step may lead to several states.

    Subclass it and define:
        init_states() -> iterable of initial states          (hashable, at least one)
        step_set(state, input, output) -> iterable of states  (empty: the step is illegal)
    and, if useful, partition() and describe_operation() as for any model. describe_state()
    receives the whole set; the default lists its states.

    The instance is then an ordinary deterministic model whose state is the frozenset of all the
    states the object could be in (the power-set construction, as Porcupine's
    NondeterministicModel.ToModel does). A step is legal iff at least one branch survives.
    Equal branches merge in the set, so the number of states stays bounded by the number of
    distinct ones, not by the number of paths.

    Example: a register whose writes may fail with an unknown outcome (UNKNOWN from models.py).
    Such a write forks into "applied" and "not applied"; a later read keeps only the branches
    it agrees with:

        class Register(NondeterministicModel):
            def init_states(self):
                return [None]

            def step_set(self, state, input, output):
                if input[0] == "write":
                    return [input[1], state] if output is UNKNOWN else [input[1]]
                return [state] if output == state else []

    Note the difference with `ret = math.inf`: an infinite return already lets the checker place
    the effect anywhere after the call (or nowhere). A fork is for an outcome that is unknown
    although the operation did return (an error reply after the write may have committed), or
    for an effect the model cannot predict (a write applied with a revision nobody saw).

    Keep the branches few: every distinct state multiplies the cache keys. Fork only on what
    the output leaves open, and prefer one placeholder state (say, "applied, revision not yet
    seen", pinned down by the first read that shows it) to one branch per possible value.
    """

    def init_states(self) -> Iterable:
        raise NotImplementedError

    def step_set(self, state, input, output) -> Iterable:
        raise NotImplementedError

    def init(self):
        states = frozenset(self.init_states())
        assert states, "init_states() must give at least one state"
        return states

    def step(self, states, input, output):
        assert isinstance(states, frozenset), states
        after = frozenset(s for state in states for s in self.step_set(state, input, output))
        return bool(after), after

    def describe_state(self, states):
        return "{" + " | ".join(sorted(repr(s) for s in states)) + "}"


def partition_by_key(ops, key_of):
    """ops split by key_of(op.input), in key order: a model's partition() for per-key state."""
    by_key = {}
    for op in ops:
        by_key.setdefault(key_of(op.input), []).append(op)
    return [by_key[key] for key in sorted(by_key)]


def check(model, ops, timeout_s=None, cache_entries_max=CACHE_ENTRIES_MAX_DEFAULT):
    """Whether the history `ops` is linearizable with respect to `model`.

    timeout_s bounds the whole check (None: no bound); cache_entries_max bounds each part's
    cache. Either bound being hit makes that part "unknown"; the remaining parts are still
    checked (within the time left), so a refutation elsewhere still gives "illegal".
    """
    assert timeout_s is None or timeout_s >= 0, timeout_s
    assert cache_entries_max > 0, cache_entries_max
    started = time.monotonic()
    deadline = math.inf if timeout_s is None else started + timeout_s
    ops = list(ops)
    parts = [list(p) for p in model.partition(ops)] if hasattr(model, "partition") else [ops]
    assert sum(len(p) for p in parts) == len(ops), "partition() must keep every operation"
    # Smallest first: small parts are cheap to search, so a refutation among them is found
    # before one big part can use up the time budget (refuting a bad part can blow up:
    # TESTING.md §4.3, lesson 1).
    order = sorted(range(len(parts)), key=lambda i: len(parts[i]))
    undecided = None  # (outcome, index) of the first part left undecided
    checked = 0
    for index in order:
        checked += 1
        if time.monotonic() > deadline:
            outcome = _Outcome(VERDICT_UNKNOWN, "timeout before this partition was searched",
                               [], model.init())
        else:
            outcome = _check_part(model, parts[index], deadline, cache_entries_max)
        if outcome.verdict == VERDICT_ILLEGAL:
            return _result(outcome, parts, index, checked, started)
        if outcome.verdict == VERDICT_UNKNOWN and undecided is None:
            undecided = (outcome, index)
    assert checked == len(parts), (checked, len(parts))
    if undecided is not None:
        outcome, index = undecided
        return _result(outcome, parts, index, checked, started)
    return CheckResult(VERDICT_OK, "", (), -1, (), None, len(parts), checked,
                       time.monotonic() - started)


def _result(outcome, parts, index, checked, started):
    part = parts[index]
    return CheckResult(
        verdict=outcome.verdict,
        reason=outcome.reason,
        partition=tuple(part),
        partition_index=index,
        linearization=tuple(part[i] for i in outcome.linearization),
        linearization_state=outcome.state,
        partitions=len(parts),
        partitions_checked=checked,
        elapsed_s=time.monotonic() - started,
    )


@dataclasses.dataclass
class _Outcome:
    """One part's verdict, with the longest partial linearization (indices into the part)."""

    verdict: str
    reason: str
    linearization: list
    state: Any


class _Entries:
    """The part's call and return entries as a doubly linked list over array indices.

    Entry 0 is the head sentinel and entry `tail` the tail sentinel; entries 1..tail-1 are the
    calls and returns in time order (calls before returns at equal times, so that closed
    intervals sharing an endpoint overlap).

    op_of[e]:   the operation a call entry invokes; RETURN for a return entry; TAIL for the tail.
    ret_of[i]:  the return entry of operation i, or NO_RETURN when its ret is infinite.
    nxt, prv:   the links. Invariant: nxt[prv[e]] == e and prv[nxt[e]] == e for every linked e.
    """

    RETURN = -1
    TAIL = -2
    NO_RETURN = -1

    def __init__(self, ops):
        events = []
        for i, op in enumerate(ops):
            events.append((op.call, 0, i))
            if op.ret != math.inf:
                events.append((op.ret, 1, i))
        events.sort()
        self.tail = len(events) + 1
        self.op_of = [self.TAIL] * (self.tail + 1)
        self.ret_of = [self.NO_RETURN] * len(ops)
        for e, (_, is_return, i) in enumerate(events, 1):
            if is_return:
                self.op_of[e] = self.RETURN
                self.ret_of[i] = e
            else:
                self.op_of[e] = i
        self.nxt = list(range(1, self.tail + 2))
        self.prv = list(range(-1, self.tail))
        self.finite = sum(1 for r in self.ret_of if r != self.NO_RETURN)


def _check_part(model, ops, deadline, cache_entries_max):
    """Wing & Gong's search over one part, iteratively, with Lowe's cache (TESTING.md §4.2)."""
    entries = _Entries(ops)
    nxt, prv, op_of, ret_of = entries.nxt, entries.prv, entries.op_of, entries.ret_of
    inputs = [op.input for op in ops]
    outputs = [op.output for op in ops]
    step = model.step
    state = model.init()
    linearized = 0  # bit i set: operation i is in the current linearization
    calls = []  # the current linearization: (call entry, state before it)
    cache = set()  # (linearized, state) pairs already reached
    finite_left = entries.finite  # operations with a finite return not yet linearized
    longest, longest_state = [], state
    steps = 0
    entry = nxt[0]
    while finite_left:
        steps += 1
        if steps % _DEADLINE_CHECK_STEPS == 0 and time.monotonic() > deadline:
            return _Outcome(VERDICT_UNKNOWN, f"timeout after {steps} search steps",
                            longest, longest_state)
        i = op_of[entry]
        if i >= 0:
            ok, new_state = step(state, inputs[i], outputs[i])
            if ok:
                key = (linearized | (1 << i), new_state)
                if key not in cache:
                    if len(cache) >= cache_entries_max:
                        return _Outcome(VERDICT_UNKNOWN,
                                        f"cache reached cache_entries_max={cache_entries_max}",
                                        longest, longest_state)
                    cache.add(key)
                    calls.append((entry, state))
                    linearized, state = key
                    # Lift: unlink the call and its return, in this order (unlift reverses it).
                    nxt[prv[entry]] = nxt[entry]
                    prv[nxt[entry]] = prv[entry]
                    r = ret_of[i]
                    if r >= 0:
                        nxt[prv[r]] = nxt[r]
                        prv[nxt[r]] = prv[r]
                        finite_left -= 1
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue
        # A return whose operation is not linearized: this order cannot be extended.
        assert i == _Entries.RETURN, "ran off the list with operations left to linearize"
        if len(calls) > len(longest):
            longest, longest_state = [op_of[e] for e, _ in calls], state
        if not calls:
            # Every lift was undone in reverse order, so the list is whole again.
            assert nxt == list(range(1, entries.tail + 2)), "dancing links out of step"
            return _Outcome(VERDICT_ILLEGAL, _illegal_reason(ops, longest), longest,
                            longest_state)
        entry, state = calls.pop()
        i = op_of[entry]
        assert linearized >> i & 1, "backtracking an operation that is not linearized"
        linearized ^= 1 << i
        r = ret_of[i]
        if r >= 0:
            nxt[prv[r]] = r
            prv[nxt[r]] = r
            finite_left += 1
        nxt[prv[entry]] = entry
        prv[nxt[entry]] = entry
        entry = nxt[entry]
    assert linearized.bit_count() == len(calls), "linearized set and stack disagree"
    return _Outcome(VERDICT_OK, "", [op_of[e] for e, _ in calls], state)


def _illegal_reason(ops, longest):
    done = set(longest)
    stuck = min((op.ret, i) for i, op in enumerate(ops) if i not in done)[1]
    return (f"no linearization: the longest has {len(longest)} of {len(ops)} operations and "
            f"cannot be extended to include the one returning at {ops[stuck].ret}")


def _describe(model, op):
    describe = getattr(model, "describe_operation", None)
    if describe is not None:
        return describe(op.input, op.output)
    return f"{op.input!r} -> {op.output!r}"


def _describe_state(model, state):
    describe = getattr(model, "describe_state", None)
    return describe(state) if describe is not None else repr(state)


def format_failure(result, model):
    """A text timeline of the part `result` refuted (or left undecided), for a human.

    One row per operation in call order: its position in the longest partial linearization
    (blank if it is not in it), client, call and return times, and the model's description.
    The last linearized operation and the operation the search got stuck on (the earliest
    return left out of the linearization) are marked.
    """
    if result.ok:
        return f"linearizable ({result.partitions} partitions, {result.elapsed_s:.3f} s)"
    position = {id(op): n for n, op in enumerate(result.linearization, 1)}
    left_out = [op for op in result.partition if id(op) not in position]
    stuck = min(left_out, key=lambda op: op.ret) if left_out else None
    last = result.linearization[-1] if result.linearization else None
    lines = [
        f"{result.verdict}: {result.reason}",
        f"partition {result.partition_index} ({len(result.partition)} operations; "
        f"{result.partitions_checked} of {result.partitions} partitions checked); "
        f"longest linearization: {len(result.linearization)} operations",
        f"{'lin':>5}  {'client':>8}  {'call':>12}  {'return':>12}  operation",
    ]
    for op in sorted(result.partition, key=lambda op: (op.call, op.ret)):
        n = position.get(id(op))
        mark = ""
        if op is last:
            mark = "   <- the linearization stops here"
        elif op is stuck:
            mark = "   <- stuck: no legal order fits this one in before it returns"
        lines.append(f"{'' if n is None else n:>5}  {op.client_id!s:>8}  {op.call:>12g}  "
                     f"{op.ret:>12g}  {_describe(model, op)}{mark}")
    lines.append("state after the longest linearization: "
                 + _describe_state(model, result.linearization_state))
    return "\n".join(lines)
