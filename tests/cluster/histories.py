"""Jepsen-style runs against real member processes: a recorded client history under faults,
checked for linearizability (TESTING.md §7 rows 4 and 8).

Clients (asyncio, one AsyncClient each; most pinned to one member, some given every member)
send linearizable gets, serializable gets, puts of unique values, deletes and compare-and-swap
transactions on mod_revision over a few keys, and record each operation's call and return
times (time.monotonic) with its result. Meanwhile a nemesis thread, seeded, kills (SIGKILL) and
restarts members, pauses them (SIGSTOP / SIGCONT), cuts one off from the others while it keeps
running (the partition failpoint, RAFTKV_FAILPOINT_DIR), the leader among them, or kills a
majority for a while; a compactor compacts the store behind the writers. Then every fault is
healed and each member is read alone.

What is checked afterwards (check_run):
- per key, the linearizable operations form a linearizable history of a versioned register
  (tests/linearizability/raftkv_model.py; the Wing-Gong search in checker.py). A write that
  failed has an unknown outcome: it may have taken effect at any point after its call;
- revisions respect real time: an operation that began after another returned never reports
  an older store revision;
- every successful write has a revision of its own;
- a serializable get returns only values some client wrote;
- after the heal, every member holds the same keys, values and revisions, and writes are
  accepted again within HEAL_WRITE_BOUND_S.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import random
import signal
import threading
import time

from raftkv.api import wire
from raftkv.client import AsyncClient, RevisionCompactedError
from raftkv.client.txn import txn_body
from tests.linearizability.checker import check
from tests.linearizability.raftkv_model import (
    Op,
    WatchLog,
    WatchSegment,
    duplicate_write_revisions,
    history,
    model,
    phantom_serializable_reads,
    revision_order_violations,
    watch_violations,
)

KEY_PREFIX = b"/lin/"
CLIENT_TIMEOUT_S = 2.0  # per request: a few election timeouts of the fast test timings
HEAL_WRITE_BOUND_S = 5.0  # writes accepted again this soon after every fault is healed
CHECK_TIMEOUT_S = 60.0
COMPACT_EVERY_S = 1.0
COMPACT_KEEP_REVS = 2000  # the compactor keeps this many revisions behind the newest
WATCH_STAGGER_S = 1.5  # watcher i starts i times this after the clients
WATCH_BACK_REVS_MAX = 1500  # a watcher may start this far behind the newest revision
WATCH_CATCHUP_S = 15.0  # after the heal, every watcher must reach the last write this soon

# Operation mix (cumulative thresholds of one random draw).
MIX = (("get", 0.30), ("sget", 0.40), ("put", 0.70), ("delete", 0.80), ("cas", 1.0))


@dataclasses.dataclass
class Fault:
    start: float
    end: float
    what: str


@dataclasses.dataclass
class Run:
    ops: list
    faults: list
    heal_write_s: float
    final_states: dict  # member name -> sorted [(key, value, mod_revision)]
    watches: list  # WatchLog per watcher
    final_revision: int  # the revision of the write after the heal


# ------------------------------------------------------------------ the workload
class Recorder:
    def __init__(self):
        self.ops = []

    def begin(self, client, kind, key, arg=None):
        op = Op(client, kind, key, arg, time.monotonic())
        self.ops.append(op)
        return op


def _kv_of(resp):
    kvs = resp.get("kvs") or []
    if not kvs:
        return None, 0
    return kvs[0].get("value", b""), kvs[0]["mod_revision"]


ERRORS = (wire.RaftkvError, ConnectionError, OSError, asyncio.TimeoutError)


async def _one_op(client, rec, cid, rng, keys, seen, counter):
    """One random operation, recorded; a failed one keeps out None (unknown outcome)."""
    ops = []
    try:
        await _random_op(client, rec, cid, rng, keys, seen, counter, ops)
    except ERRORS as exc:
        ops[0].error = f"{type(exc).__name__}: {exc}"
        return False
    return True


async def _random_op(client, rec, cid, rng, keys, seen, counter, ops):
    key = rng.choice(keys)
    draw = rng.random()
    kind = next(k for k, bound in MIX if draw < bound)
    value = b"%d-%d" % (cid, next(counter))
    if kind in ("get", "sget"):
        op = rec.begin(cid, kind, key)
        ops.append(op)
        body = {"key": key, "serializable": kind == "sget"}
        resp = await client.call("range", body)
        op.out = _kv_of(resp)
        seen[key] = op.out[1]
    elif kind == "put":
        op = rec.begin(cid, kind, key, value)
        ops.append(op)
        resp = await client.call("put", {"key": key, "value": value})
        op.out = resp["header"]["revision"]
    elif kind == "delete":
        op = rec.begin(cid, kind, key)
        ops.append(op)
        resp = await client.call("delete_range", {"key": key})
        op.out = (resp.get("deleted", 0), resp["header"]["revision"])
    else:
        expect = seen.get(key, 0)
        op = rec.begin(cid, kind, key, (expect, value))
        ops.append(op)
        cmp = [{"result": 0, "target": 2, "key": key, "mod_revision": expect}]
        body = txn_body(cmp, [{"request_put": {"key": key, "value": value}}],
                        [{"request_range": {"key": key}}])
        resp = await client.call("txn", body)
        ok = bool(resp.get("succeeded"))
        got = (value, resp["header"]["revision"]) if ok else \
            _kv_of(resp["responses"][0]["response_range"])
        op.out = (ok, resp["header"]["revision"], None if ok else got)
        seen[key] = got[1]
    op.ret = time.monotonic()
    op.header_rev = resp["header"]["revision"]


def _connect(endpoints, creds, **kw):
    """An AsyncClient with the run's credentials ({} without auth, else user and password:
    the client authenticates, and again after a restart ended its token)."""
    return AsyncClient(endpoints, **kw, **creds)


async def _client_loop(endpoints, prefer_leader, cid, seed, keys, rec, stop_at, creds):
    rng = random.Random(seed)
    seen = {}
    counter = iter(range(1 << 62))
    # Every other client lets members hold its requests while they know no leader (the path
    # etcd's clients take); the rest are refused and fail over (raftkv's client's default).
    async with _connect(endpoints, creds, timeout=CLIENT_TIMEOUT_S,
                        prefer_leader=prefer_leader, wait_for_leader=bool(cid % 2)) as client:
        while time.monotonic() < stop_at:
            if not await _one_op(client, rec, cid, rng, keys, seen, counter):
                await asyncio.sleep(0.02)


async def _compactor(endpoints, stop_at, creds):
    last = 0
    async with _connect(endpoints, creds, timeout=CLIENT_TIMEOUT_S) as client:
        while time.monotonic() < stop_at:
            await asyncio.sleep(COMPACT_EVERY_S)
            try:
                rev = (await client.status())["header"]["revision"] - COMPACT_KEEP_REVS
                if rev > last:
                    await client.compact(rev)
                    last = rev
            except ERRORS:
                pass  # compaction is best effort here; the writers' history is what counts


async def _watcher(endpoints, wlog, wid_delay_s, back, all_eps, creds):
    """Watch the whole prefix from now, or from `back` revisions ago, until cancelled; a
    broken stream is opened again from the revision after the last event."""
    await asyncio.sleep(wid_delay_s)
    start = 0
    while back and not start:
        try:
            async with _connect(all_eps, creds, timeout=CLIENT_TIMEOUT_S) as c:
                start = max(1, (await c.status())["header"]["revision"] - back)
        except ERRORS:
            await asyncio.sleep(0.1)
    seg = WatchSegment(start)
    wlog.segments.append(seg)
    next_rev = start
    while True:
        try:
            async with _connect(endpoints, creds, timeout=CLIENT_TIMEOUT_S,
                                prefer_leader=False) as c:
                events, _ = await c.watch(KEY_PREFIX, prefix=True, start_revision=next_rev)
                async for ev in events:
                    value = ev.value if ev.type == "PUT" else b""
                    seg.events.append((ev.mod_revision, ev.type, ev.key, value))
                    next_rev = ev.mod_revision + 1
        except RevisionCompactedError as exc:
            seg.end = f"compacted at {exc.compacted_revision}"
            next_rev = exc.compacted_revision
            seg = WatchSegment(next_rev)
            wlog.segments.append(seg)
        except ERRORS:
            pass
        wlog.resumes += 1
        await asyncio.sleep(0.1)


async def _wait_watchers(logs, revision):
    deadline = time.monotonic() + WATCH_CATCHUP_S
    while time.monotonic() < deadline and \
            any(w.last_revision() < revision for w in logs):
        await asyncio.sleep(0.05)


# ------------------------------------------------------------------ the nemesis
def isolation(ids, name):
    """The partition cutting member `name` off from every other (ids: name -> member ID), as
    write_partition takes it: each side's file names the other."""
    cut = {other: {ids[name]} for other in ids if other != name}
    cut[name] = {i for other, i in ids.items() if other != name}
    return cut


def write_partition(failpoint_dir, names, cut):
    """Write each member's partition failpoint file (RAFTKV_FAILPOINT_DIR): cut maps a member
    name to the member IDs it is cut off from; the others are cut off from nobody. Each file
    is replaced whole, so a member polling it never reads half of one."""
    for name in names:
        path = os.path.join(failpoint_dir, f"{name}.partition")
        with open(path + ".tmp", "w") as f:
            json.dump(sorted(cut.get(name, ())), f)
        os.replace(path + ".tmp", path)


class Nemesis:
    """Faults on the harness's member processes, one at a time, every few seconds."""

    FAULTS = ("kill-leader", "kill-follower", "pause-leader", "pause-follower",
              "kill-majority", "isolate-leader", "isolate-follower", "defrag-leader",
              "defrag-follower")
    DEFRAG_EVERY_S = 0.3  # a defrag fault asks its member for one this often while it lasts

    def __init__(self, h, seed, faults=FAULTS, failpoint_dir=None, admin=None):
        assert failpoint_dir or not any(f.startswith("isolate") for f in faults), \
            "partitions need the members started with RAFTKV_FAILPOINT_DIR"
        self.h = h
        self.failpoint_dir = failpoint_dir
        self.admin = admin or {}  # root's user and password with auth on (defragment)
        self._ids = {}
        self.rng = random.Random(seed)
        self.faults = faults
        self.log = []
        self._stop = threading.Event()
        self._paused = set()
        self._lock = threading.Lock()

    def _leader(self):
        try:
            return self.h.leader(timeout_s=2.0)
        except TimeoutError:
            return self.rng.choice(self.h.members)

    def _pick(self, fault):
        leader = self._leader()
        others = [m for m in self.h.members if m is not leader]
        if fault.endswith("leader"):
            return [leader]
        if fault.endswith("follower"):
            return [self.rng.choice(others)]
        return [leader, self.rng.choice(others)]

    def _pause(self, m):
        with self._lock:
            self.h.cluster.signal_member(m, signal.SIGSTOP)
            self._paused.add(m.name)

    def _resume(self, m):
        with self._lock:
            if m.name in self._paused:
                self.h.cluster.signal_member(m, signal.SIGCONT)
                self._paused.discard(m.name)

    def _member_id(self, m):
        if m.name not in self._ids:
            self._ids[m.name] = self.h.status(m)["header"]["member_id"]
        return self._ids[m.name]

    def _partition(self, cut):
        write_partition(self.failpoint_dir, [m.name for m in self.h.members], cut)

    def _defrags(self, m, hold_s):
        """Online defrags of m's store (the native defragment op) while the fault lasts:
        writes wait during each, reads and Raft go on. Returns how many answered OK and how
        many failed otherwise (a member may be between leaders; any error is recorded)."""
        ok, failed = 0, []
        until = time.monotonic() + hold_s

        async def once():
            async with AsyncClient([m.native_endpoint], timeout=CLIENT_TIMEOUT_S,
                                   prefer_leader=False, **self.admin) as c:
                await c.defragment()
        while not self._stop.is_set() and time.monotonic() < until:
            try:
                asyncio.run(once())
                ok += 1
            except ERRORS as exc:
                failed.append(getattr(exc, "code", type(exc).__name__))
            self._stop.wait(self.DEFRAG_EVERY_S)
        return ok, failed

    def one(self, fault, hold_s):
        victims = self._pick(fault)
        start = time.monotonic()
        note = ""
        if fault.startswith("defrag"):
            (v,) = victims
            ok, failed = self._defrags(v, hold_s)
            note = f" ({ok} done{', failed: ' + ','.join(failed) if failed else ''})"
        elif fault.startswith("isolate"):
            (v,) = victims
            self._partition(isolation(
                {m.name: self._member_id(m) for m in self.h.members}, v.name))
            self._stop.wait(hold_s)
            self._partition({})
        elif fault.startswith("pause"):
            for m in victims:
                self._pause(m)
            self._stop.wait(hold_s)
            for m in victims:
                self._resume(m)
        else:
            for m in victims:
                self.h.kill(m)
            self._stop.wait(hold_s)
            for m in victims:
                self.h.start_member(m)
        self.log.append(Fault(start, time.monotonic(),
                              f"{fault} {','.join(m.name for m in victims)}{note}"))

    def run(self, until):
        while not self._stop.is_set() and time.monotonic() < until:
            self._stop.wait(self.rng.uniform(1.0, 2.5))
            if self._stop.is_set() or time.monotonic() >= until:
                break
            self.one(self.rng.choice(self.faults), self.rng.uniform(1.0, 3.0))

    def heal(self):
        """Resume every paused member, restart every dead one, end every partition."""
        self._stop.set()
        if self.failpoint_dir:
            self._partition({})
        for m in self.h.members:
            self._resume(m)
        for m in self.h.members:
            if not m.alive():
                self.h.start_member(m)


# ------------------------------------------------------------------ one run
ROOT_CREDS = {"user": "root", "password": "rootpw"}  # enable_auth's root (the nemesis's defrags)


def enable_auth(h):
    """Turn auth on for a run: a root user, and a user that may read and write the workload's
    keys and nothing else. Returns that user's credentials for run(creds=...)."""
    async def setup():
        async with AsyncClient([m.native_endpoint for m in h.members],
                               timeout=CLIENT_TIMEOUT_S) as c:
            await c.user_add(ROOT_CREDS["user"], ROOT_CREDS["password"])
            await c.user_grant_role("root", "root")
            await c.user_add("lin", "linpw")
            await c.role_add("workload")
            await c.role_grant_permission("workload", "readwrite", KEY_PREFIX, prefix=True)
            await c.user_grant_role("lin", "workload")
            await c.auth_enable()
    asyncio.run(setup())
    return {"user": "lin", "password": "linpw"}


def run(h, seed, seconds, clients=8, keys=5, watchers=4, faults=Nemesis.FAULTS,
        heal_s=4.0, failpoint_dir=None, creds=None):
    """Drive the workload, the watchers and the nemesis on harness h for `seconds`, heal, and
    read every member; returns a Run. The partition faults need failpoint_dir: the
    RAFTKV_FAILPOINT_DIR the members started with. creds: every client's user and password
    (auth on: see enable_auth)."""
    creds = creds or {}
    names = [KEY_PREFIX + b"%d" % i for i in range(keys)]
    rec = Recorder()
    nemesis = Nemesis(h, seed, faults, failpoint_dir, ROOT_CREDS if creds else None)
    rng = random.Random(seed)
    start = time.monotonic()
    stop_at = start + seconds
    thread = threading.Thread(target=nemesis.run, args=(stop_at - heal_s,), daemon=True)
    endpoints = [m.native_endpoint for m in h.members]
    logs = [WatchLog(wid) for wid in range(watchers)]
    healed = {}

    async def drive():
        tasks = []
        for cid in range(clients):
            if cid % 4 == 3:  # every fourth client may use any member
                eps, prefer = endpoints, True
            else:
                eps, prefer = [endpoints[cid % len(endpoints)]], False
            tasks.append(_client_loop(eps, prefer, cid, seed * 1000 + cid, names, rec,
                                      stop_at, creds))
        tasks.append(_compactor(endpoints, stop_at - heal_s, creds))
        loop = asyncio.get_running_loop()
        watching = [loop.create_task(_watcher(
            [endpoints[w.wid % len(endpoints)]], w, wid_delay_s=w.wid * WATCH_STAGGER_S,
            back=rng.choice((0, rng.randint(1, WATCH_BACK_REVS_MAX))), all_eps=endpoints,
            creds=creds))
            for w in logs]
        try:
            await asyncio.gather(*tasks)
            await loop.run_in_executor(None, _heal, thread, nemesis)
            healed.update(await _write_after_heal(endpoints, rec, creds))
            await _wait_watchers(logs, healed["revision"])
        finally:
            for t in watching:
                t.cancel()
            await asyncio.gather(*watching, return_exceptions=True)

    thread.start()
    try:
        asyncio.run(drive())
    finally:
        _heal(thread, nemesis)
    finals = _final_reads(h, rec, names, creds)
    return Run(rec.ops, nemesis.log, healed.get("seconds", math.inf), finals, logs,
               healed.get("revision", 0))


def _heal(thread, nemesis):
    thread.join(timeout=60.0)
    nemesis.heal()


async def _write_after_heal(endpoints, rec, creds):
    """One put through any member right after the heal (recorded like the others); its
    revision is the last one every watcher must reach."""
    t0 = time.monotonic()
    async with _connect(endpoints, creds, timeout=HEAL_WRITE_BOUND_S * 2) as c:
        op = rec.begin(999, "put", KEY_PREFIX + b"healed", b"healed")
        resp = await c.call("put", {"key": op.key, "value": op.arg})
        op.ret = time.monotonic()
        op.out = op.header_rev = resp["header"]["revision"]
    return {"seconds": op.ret - t0, "revision": op.out}


def _final_reads(h, rec, names, creds):
    """Each member alone: a linearizable get of every key (added to the history) and a
    linearizable range of the prefix."""
    finals = {}

    async def go(i, m):
        async with _connect([m.native_endpoint], creds, timeout=10.0,
                            prefer_leader=False) as c:
            for key in names:
                op = rec.begin(1000 + i, "get", key)
                resp = await c.call("range", {"key": key})
                op.out, op.ret = _kv_of(resp), time.monotonic()
                op.header_rev = resp["header"]["revision"]
            resp = await c.call("range", {"key": KEY_PREFIX,
                                          "range_end": KEY_PREFIX[:-1] + b"0"})
            finals[m.name] = sorted((kv["key"], kv.get("value", b""), kv["mod_revision"])
                                    for kv in resp.get("kvs") or [])

    for i, m in enumerate(h.members):
        asyncio.run(go(i, m))
    return finals


def check_run(result, timeout_s=CHECK_TIMEOUT_S):
    """Every check above; returns a list of problems (empty when all hold) and the WGL
    result."""
    problems = []
    lin = check(model(), history(result.ops), timeout_s=timeout_s)
    if lin.verdict != "ok":
        problems.append(f"linearizability: {lin.verdict}")
    for a, b in revision_order_violations(result.ops)[:5]:
        problems.append(f"revision went back in real time: {a} then {b}")
    for rev, group in list(duplicate_write_revisions(result.ops).items())[:5]:
        problems.append(f"revision {rev} reported by {len(group)} writes: {group}")
    for op in phantom_serializable_reads(result.ops)[:5]:
        problems.append(f"serializable read of a value never written: {op}")
    problems.extend(watch_violations(result.watches, result.ops, result.final_revision)[:10])
    states = list(result.final_states.values())
    if any(s != states[0] for s in states):
        problems.append(f"members differ after the heal: {result.final_states}")
    if result.heal_write_s > HEAL_WRITE_BOUND_S:
        problems.append(f"writes resumed {result.heal_write_s:.1f}s after the heal")
    return problems, lin


def summary(result):
    ok = sum(op.out is not None for op in result.ops)
    unknown = sum(op.out is None and op.kind in ("put", "delete", "cas") for op in result.ops)
    kinds = {}
    for op in result.ops:
        if op.out is not None:
            kinds[op.kind] = kinds.get(op.kind, 0) + 1
    watched = [(sum(len(seg.events) for seg in w.segments), len(w.segments), w.resumes)
               for w in result.watches]
    return (f"{len(result.ops)} ops, {ok} ok ({kinds}), {unknown} writes of unknown outcome; "
            f"faults: {[f.what for f in result.faults]}; writes resumed "
            f"{result.heal_write_s:.2f}s after the heal; watchers (events, segments, "
            f"re-opens): {watched}")
