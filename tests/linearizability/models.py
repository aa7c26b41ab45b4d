"""Models and parsers for the checker conformance corpus (Porcupine's test_data/, TESTING.md §4.3).

- `EtcdRegisterModel`: one register with read, write and compare-and-set, where an operation may
  time out (Porcupine's etcdModel in porcupine_test.go; TESTING.md §4.2 step 5). The jepsen/
  histories use it.
- `KvModel`: get, put and append on string values, partitioned by key (Porcupine's kvModel).
  The kv/ histories use it.
- `parse_jepsen_log()` and `parse_kv_log()` turn the two file formats into `Operation`s. Times
  are line numbers: the logs are in real-time order and carry no clock.

Inputs are tuples: ("read",), ("write", v), ("cas", expected, new) for the register and
("get", key), ("put", key, value), ("append", key, value) for the kv store. An output the client
never learned is `UNKNOWN`.
"""
from __future__ import annotations

import math
import re

from tests.linearizability.checker import Operation, partition_by_key


class _Unknown:
    """The type of UNKNOWN: an output the client never saw (a timeout, a crash)."""

    def __repr__(self):
        return "UNKNOWN"


UNKNOWN = _Unknown()


class EtcdRegisterModel:
    """A single register (None = nil) with read, write and cas, as Porcupine models etcd.

    Outputs: a read returns the value (None for nil), a write None, a cas True or False. Any of
    them may be UNKNOWN. A read with an unknown output is legal in any state (it has no effect);
    a cas with an unknown output takes effect if its precondition holds and is a no-op otherwise.
    """

    def init(self):
        return None

    def step(self, state, input, output):
        kind = input[0]
        if kind == "read":
            return output is UNKNOWN or output == state, state
        if kind == "write":
            return True, input[1]
        assert kind == "cas", input
        applies = state == input[1]
        ok = output is UNKNOWN or output == applies
        return ok, input[2] if applies else state

    def describe_operation(self, input, output):
        kind = input[0]
        if kind == "read":
            shown = "nil" if output is None else output
            return f"read() -> {shown}"
        if kind == "write":
            return f"write({input[1]})" + (" -> unknown" if output is UNKNOWN else "")
        if output is UNKNOWN:
            result = "unknown"
        else:
            result = "ok" if output else "fail"
        return f"cas({input[1]}, {input[2]}) -> {result}"


class KvModel:
    """A string per key, empty until written; get, put and append. Partitioned by key, so the
    state is one key's value (P-compositionality, as in Porcupine's kvModel)."""

    def init(self):
        return ""

    def step(self, state, input, output):
        kind = input[0]
        if kind == "get":
            return output is UNKNOWN or output == state, state
        if kind == "put":
            return True, input[2]
        assert kind == "append", input
        return True, state + input[2]

    def partition(self, ops):
        return partition_by_key(ops, lambda inp: inp[1])

    def describe_operation(self, input, output):
        kind, key = input[0], input[1]
        if kind == "get":
            return f"get({key!r}) -> {output!r}"
        return f"{kind}({key!r}, {input[2]!r})"


class _Pending:
    """Invocations waiting for their completion line, by process id."""

    def __init__(self, path):
        self.path = path
        self.calls = {}  # process -> (call time, input)
        self.ops = []

    def invoke(self, no, process, input):
        if process in self.calls:
            raise ValueError(f"{self.path}:{no}: process {process} invokes twice")
        self.calls[process] = (no, input)

    def complete(self, no, process, output, ret):
        if process not in self.calls:
            raise ValueError(f"{self.path}:{no}: process {process} completes nothing")
        call, input = self.calls.pop(process)
        self.ops.append(Operation(process, input, call, output, ret))

    def finish(self):
        """The operations, those never completed as unknown (they may or may not have applied)."""
        for process in list(self.calls):
            self.complete(None, process, UNKNOWN, math.inf)
        return sorted(self.ops, key=lambda op: op.call)


# "INFO  jepsen.util - 3\t:ok\t:cas\t[3 0]": process, type, function, value. Most files separate
# the fields by tabs, etcd_100..102 by spaces.
_JEPSEN_LINE = re.compile(r"INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)\s+(.*?)\s*")
_JEPSEN_CAS = re.compile(r"\[(\d+)\s+(\d+)\]")


def parse_jepsen_log(path):
    """The history in one jepsen/etcd_NNN.log, as Porcupine's parseJepsenLog reads it.

    - :invoke starts an operation; :ok completes it (a read's value, "nil" for none).
    - :fail on a cas is a completed cas that did not apply (output False).
    - :fail on a read (":timed-out") completes it with an UNKNOWN output.
    - :info (a timed-out write or cas) leaves the outcome unknown: ret = inf, output UNKNOWN.
      Jepsen never reuses the process of an :info, so this is the operation's only completion.
    Any other line is an error: the format must not drift silently.
    """
    pending = _Pending(path)
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            match = _JEPSEN_LINE.fullmatch(line)
            if match is None:
                raise ValueError(f"{path}:{no}: not a jepsen.util line: {line!r}")
            process, kind, fn, value = match.groups()
            process = int(process)
            if kind == "invoke":
                pending.invoke(no, process, _jepsen_input(path, no, fn, value))
            elif kind == "info":
                pending.complete(no, process, UNKNOWN, math.inf)
            else:
                pending.complete(no, process, _jepsen_output(path, no, kind, fn, value), no)
    return pending.finish()


def _jepsen_input(path, no, fn, value):
    if fn == "read" and value == "nil":
        return ("read",)
    if fn == "write" and value.isdigit():
        return ("write", int(value))
    cas = _JEPSEN_CAS.fullmatch(value)
    if fn == "cas" and cas is not None:
        return ("cas", int(cas[1]), int(cas[2]))
    raise ValueError(f"{path}:{no}: bad invocation :{fn} {value}")


def _jepsen_output(path, no, kind, fn, value):
    if kind == "ok" and fn == "read":
        return None if value == "nil" else int(value)
    if kind == "ok" and fn == "write":
        return None
    if fn == "cas" and kind in ("ok", "fail"):
        return kind == "ok"
    if kind == "fail" and fn == "read" and value == ":timed-out":
        return UNKNOWN
    raise ValueError(f"{path}:{no}: bad completion :{kind} :{fn} {value}")


# '{:process 0, :type :ok, :f :get, :key "5", :value ""}'; values never contain a quote.
_KV_LINE = re.compile(
    r'\{:process (\d+), :type :(\w+), :f :(\w+), :key "([^"]*)", :value (nil|"[^"]*")\}\s*')


def parse_kv_log(path):
    """The history in one kv/*.txt file, as Porcupine's parseKvLog reads it: every operation is
    an :invoke then an :ok; a get's :ok carries the value read."""
    pending = _Pending(path)
    with open(path, encoding="utf-8") as f:
        for no, line in enumerate(f, 1):
            match = _KV_LINE.fullmatch(line)
            if match is None:
                raise ValueError(f"{path}:{no}: not a kv line: {line!r}")
            process, kind, fn, key, value = match.groups()
            process = int(process)
            value = None if value == "nil" else value[1:-1]
            if fn not in ("get", "put", "append") or kind not in ("invoke", "ok"):
                raise ValueError(f"{path}:{no}: bad line: {line!r}")
            if kind == "invoke":
                pending.invoke(no, process, (fn, key) if fn == "get" else (fn, key, value))
            else:
                pending.complete(no, process, value if fn == "get" else None, no)
    return pending.finish()
