"""Randomized differential test of etcd's v3 Watch API: one seeded random sequence of watch
requests (create, cancel, progress) on a few Watch streams per server, interleaved with random
writes (puts, deletes, txns, compactions, lease grants and revokes), goes to a real etcd 3.4.23
and to raftkv; every watcher must see the same responses.

    python -m tests.etcdctl.differential_watch --seed 7 --seeds 5 --examples 30

It reuses tests/etcdctl/differential.py: the servers (started with --max-request-bytes
MAX_REQUEST_BYTES, so that watch responses of a few large values are fragmented, and a
progress notify interval of PROGRESS_INTERVAL), the Targets, tree() (header reduced to its
revision, lease IDs symbolic) and OpGen for the writes, whose answers are compared as that
module does. Each example opens 1 to 3 fresh streams per server and closes them at its end.
The raftkv member is a follower or the leader as the seed falls (seed % 3).

What etcd guarantees is compared as it is; what is normalised, and why:

* Interleaving of different watchers on one stream: it depends on timing (etcd's send loop
  picks between its control channel and the event channel at random), so each stream's
  responses are split by watch_id and compared per watcher, in order. Responses with
  watch_id -1 (a refused create, an answer to a WatchProgressRequest) are compared in their
  order among themselves.
* Grouping of revisions into responses: a watcher catching up from history gets several
  revisions in one response, and how many is an implementation limit (etcd: 1000 revisions,
  raftkv: about 1000 events) and depends on writes racing the catch-up. Each event response
  is compared as its per-revision groups, each with its response's header revision. Checked
  on each server: the events of one revision are never split between two responses
  (fragments aside), a header revision is at least its newest event's revision.
* Fragments (a watcher created with fragment=true whose response exceeds the request limit):
  where the cut falls depends on the header's size, and the headers' member and cluster IDs
  differ, so fragments are merged before comparing. Checked on each server: every fragment
  but the last has fragment=true, each holds at least one event, and one of two or more
  events is under the limit; on raftkv also that no response of two or more events at or
  over the limit goes whole to such a watcher (etcd 3.4 sends whole the responses it held
  back until the created response was out: a catch-up that beat it is not cut).
* Progress notifications (progress_notify): sent on a timer. They are removed from the
  comparison; checked on each server: only watchers created with progress_notify get them, a
  notification's revision is at least that of every event sent to the watcher before it and
  at most the store's revision.

Timing is taken out of the rest by when requests are sent: a watcher created at a past
revision is caught up (both servers settled) before anything else is sent, so a compaction
or write cannot race its catch-up; and a cancel is sent only once both servers settled,
because etcd drops events still queued for a canceled watcher. "Settled" means etcd sent
nothing for ETCD_IDLE_S and raftkv's view equals etcd's; the views are compared again at the
end of each example, after a settle. A view differing after SETTLE_TIMEOUT_S is a mismatch.

One base seed determines the whole run (the generator depends only on the seed and etcd's
answers to the writes); the failure message lists the last requests and the differing watcher.
"""
from __future__ import annotations

import queue
import random
import sys
import threading
import time

import grpc

from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
from tests.etcdctl import differential as diff

MAX_REQUEST_BYTES = 200_000  # both servers (etcd's default is 1.5 MiB)
# etcd 3.4 fragments a watch response at --max-request-bytes plus its 512 KiB gRPC overhead.
FRAGMENT_BYTES = MAX_REQUEST_BYTES + 512 * 1024
PROGRESS_INTERVAL = "1s"  # --experimental-watch-progress-notify-interval on both servers
SERVER_ARGS = ("--max-request-bytes", str(MAX_REQUEST_BYTES),
               "--experimental-watch-progress-notify-interval", PROGRESS_INTERVAL)
BIG_VALUE_BYTES = 190_000  # some puts: four such events make a response to be fragmented
RECEIVE_BYTES_MAX = 1 << 30
STEPS_PER_EXAMPLE = 40
ETCD_IDLE_S = 0.3  # etcd syncs unsynced watchers every 100 ms
SETTLE_TIMEOUT_S = 10.0
POLL_S = 0.02
EXPLICIT_WATCH_IDS = (1, 2, 3, 7, 100)
UNKNOWN_WATCH_ID = 4242
NOPUT, NODELETE = 0, 1
WRITE_KINDS = {"put": 30, "delete": 8, "txn": 12, "compact": 1, "grant": 3, "revoke": 3}


# ------------------------------------------------------------------------------ streams
class Streams:
    """One server's Watch streams: requests go in through a queue each, and a thread per
    stream collects the responses (a gRPC error ending a stream as ("error", code, details))."""

    def __init__(self, target, count):
        self.target = target
        # A catch-up response holds every event since its start revision, many MB with large
        # values (gRPC's default limit is 4 MiB).
        self.channel = grpc.insecure_channel(target.endpoint, options=[
            ("grpc.max_receive_message_length", RECEIVE_BYTES_MAX)])
        self.stub = rpc_pb2_grpc.WatchStub(self.channel)
        self.lock = threading.Lock()
        self.queues = [queue.Queue() for _ in range(count)]
        self.got = [[] for _ in range(count)]
        self.calls, self.threads = [], []
        self.last_s = time.monotonic()  # when the last response arrived
        for i, q in enumerate(self.queues):
            call = self.stub.Watch(iter(q.get, None))
            thread = threading.Thread(target=self._read, args=(call, i), daemon=True)
            thread.start()
            self.calls.append(call)
            self.threads.append(thread)

    def _read(self, call, i):
        try:
            for resp in call:
                with self.lock:
                    self.got[i].append(resp)
                    self.last_s = time.monotonic()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                with self.lock:
                    self.got[i].append(("error", exc.code().name, exc.details()))
                    self.last_s = time.monotonic()

    def send(self, i, request):
        self.queues[i].put(request)

    def responses(self):
        with self.lock:
            return [list(g) for g in self.got], self.last_s

    def close(self):
        for q in self.queues:
            q.put(None)
        for call in self.calls:
            call.cancel()
        for thread in self.threads:
            thread.join(5.0)
        self.channel.close()


# ------------------------------------------------------------------------------ views
def view(responses, creates, to_sym, current_rev, own_fragments=False):
    """One stream's responses in the compared form (module docstring), and the guarantees it
    breaks. creates: the stream's create requests in order (a stream answers them in order,
    each with one created response); current_rev: the store's revision now; own_fragments:
    check raftkv's own promise that a large response to a fragment watcher is cut (etcd 3.4
    sends whole the responses it held back until the created response went out)."""
    watchers, control, problems = {}, [], []
    requests = list(creates)
    by_id = {}  # watch_id -> its create request
    last_rev = {}  # watch_id -> revision of the newest event sent
    partial = {}  # watch_id -> fragments so far
    for resp in responses:
        if isinstance(resp, tuple):
            control.append(resp)
            continue
        wid = resp.watch_id
        if resp.created:
            request = requests.pop(0) if requests else None
            if not resp.canceled:
                by_id[wid] = request
                last_rev[wid] = 0
        if (own_fragments and not resp.fragment and wid not in partial and len(resp.events) > 1
                and resp.ByteSize() >= FRAGMENT_BYTES and by_id.get(wid) is not None
                and by_id[wid].fragment):
            problems.append(f"watcher {wid}: {resp.ByteSize()} bytes sent whole although "
                            f"it asked for fragments")
        if wid in partial or resp.fragment:
            merged = partial.setdefault(wid, [])
            merged.append(resp)
            problems.extend(_fragment_problems(resp, wid))
            if resp.fragment:
                continue
            resp = _merge(partial.pop(wid))
        t = diff.tree(resp, to_sym)
        t.pop("fragment", None)
        if wid == -1:
            control.append(t)
            continue
        items = watchers.setdefault(wid, [])
        if resp.created or resp.canceled or resp.compact_revision:
            items.append(t)
            continue
        header_rev = resp.header.revision
        if not resp.events:
            request = by_id.get(wid)
            if request is None or not request.progress_notify:
                problems.append(f"watcher {wid}: progress notification without progress_notify")
            if not last_rev.get(wid, 0) <= header_rev <= current_rev:
                problems.append(f"watcher {wid}: progress notification at {header_rev} after "
                                f"an event at {last_rev.get(wid)} (store at {current_rev})")
            continue
        groups = _groups(t["events"])
        first, newest = min(groups), max(groups)
        if first <= last_rev.get(wid, 0):
            problems.append(f"watcher {wid}: events of revision {first} after revision "
                            f"{last_rev.get(wid)}'s (split or repeated)")
        if header_rev < newest:
            problems.append(f"watcher {wid}: header revision {header_rev} < event {newest}")
        last_rev[wid] = newest
        for rev, events in groups.items():
            items.append({"revision": rev, "header": header_rev, "events": events})
    for wid in partial:
        watchers.setdefault(wid, []).append("unfinished fragments")
    return {"watchers": watchers, "control": control}, problems


def _groups(events):
    """Events by mod revision, in order (a dict keeps insertion order)."""
    out = {}
    for ev in events:
        out.setdefault(ev["kv"].get("mod_revision", 0), []).append(ev)
    return out


def _fragment_problems(resp, wid):
    out = []
    if not resp.events:
        out.append(f"watcher {wid}: an empty fragment")
    if len(resp.events) > 1 and resp.ByteSize() >= FRAGMENT_BYTES:
        out.append(f"watcher {wid}: a fragment of {len(resp.events)} events and "
                   f"{resp.ByteSize()} bytes (limit {FRAGMENT_BYTES})")
    return out


def _merge(parts):
    whole = rpc_pb2.WatchResponse()
    whole.CopyFrom(parts[-1])
    del whole.events[:]
    for part in parts:
        whole.events.extend(part.events)
    return whole


# ------------------------------------------------------------------------------ generator
class WatchGen:
    """Random steps: ("write", Op), ("create", stream, WatchCreateRequest),
    ("cancel", stream, watch_id), ("progress", stream). Writes come from an OpGen limited to
    WRITE_KINDS, which follows etcd's answers (observe)."""

    def __init__(self, rng):
        self.rng = rng
        self.ops = diff.OpGen(rng)
        self.streams = 1
        self.ids = []  # per stream: watch ids etcd gave (created, not canceled by a request)

    def new_example(self):
        self.ops.new_example()
        self.ops.weights = {k: max(1, round(w * self.rng.choice((0.3, 1, 2))))
                            for k, w in WRITE_KINDS.items()}
        self.streams = self.rng.randint(1, 3)
        self.ids = [[] for _ in range(self.streams)]

    def next_step(self):
        r = self.rng.random()
        stream = self.rng.randrange(self.streams)
        if r < 0.02:
            return ("burst", self.burst())
        if r < 0.62:
            op = self.ops.next_op()
            if op.method == "Put" and self.rng.random() < 0.25:
                op.request.value = (op.request.value or b"v")[:1] * BIG_VALUE_BYTES
            return ("write", op)
        if r < 0.85:
            return ("create", stream, self.create_request())
        if r < 0.95:
            return ("cancel", stream, self.cancel_id(stream))
        return ("progress", stream)

    def burst(self):
        """Writes that make one revision large enough to be fragmented: BIG_VALUE_BYTES values
        under a prefix, then a delete of the prefix (its events carry them as prev_kv)."""
        prefix = self.rng.choice((b"a", b"b", b"c"))
        keys = [k for k in diff.KEYS if k.startswith(prefix)] * 2
        ops = [diff.Op("KV", "Put", rpc_pb2.PutRequest(key=k, value=b"B" * BIG_VALUE_BYTES))
               for k in keys[:4]]
        return ops + [diff.Op("KV", "DeleteRange", rpc_pb2.DeleteRangeRequest(
            key=prefix, range_end=diff._prefix_end(prefix)))]

    def create_request(self):
        rng, ops = self.rng, self.ops
        key, end = ops.key_range()
        if rng.random() < 0.05:
            key = b""
        req = rpc_pb2.WatchCreateRequest(key=key, range_end=end,
                                         start_revision=self.start_revision(),
                                         prev_kv=rng.random() < 0.4,
                                         progress_notify=rng.random() < 0.2,
                                         fragment=rng.random() < 0.3)
        if rng.random() < 0.25:
            req.filters.extend(rng.choice(((NOPUT,), (NODELETE,), (NOPUT, NODELETE),
                                           (NODELETE, NODELETE))))
        if rng.random() < 0.3:
            req.watch_id = rng.choice(EXPLICIT_WATCH_IDS)
        return req

    def start_revision(self):
        rng, rev, compact = self.rng, self.ops.rev, self.ops.compact
        if rng.random() < 0.45:
            return 0
        return max(0, rng.choice((rev, rev + 1, rev + 3, rng.randint(1, max(1, rev)), 1,
                                  compact - 1, compact, compact + 1)))

    def cancel_id(self, stream):
        ids = self.ids[stream]
        if ids and self.rng.random() < 0.85:
            return self.rng.choice(ids)
        return self.rng.choice((UNKNOWN_WATCH_ID, 0, -1))

    def observe_create(self, stream, resp):
        """etcd's created response to a create on stream."""
        if resp.created and not resp.canceled:
            self.ids[stream].append(resp.watch_id)

    def observe_cancel(self, stream, watch_id):
        if watch_id in self.ids[stream]:
            self.ids[stream].remove(watch_id)


# ------------------------------------------------------------------------------ runner
class Run:
    """One seed against two servers (etcd, raftkv Targets)."""

    def __init__(self, etcd, raftkv, seed, log=None, trace=None):
        self.targets = (etcd, raftkv)
        self.seed = seed
        self.gen = WatchGen(random.Random(seed))
        self.history = []
        self.log, self.trace = log, trace
        self.streams = None  # (etcd's Streams, raftkv's)
        self.creates = None  # per stream: create requests sent
        self.where = ""

    def fail(self, text):
        shown = "\n  ".join(self.history[-diff.HISTORY_SHOWN:])
        raise diff.Mismatch(f"seed {self.seed}, {self.where}: {text}\n"
                            f"last requests:\n  {shown}")

    def example(self, index, steps):
        gen = self.gen
        gen.new_example()
        self.streams = tuple(Streams(t, gen.streams) for t in self.targets)
        self.creates = [[] for _ in range(gen.streams)]
        try:
            for step in range(steps):
                self.where = f"example {index}, step {step}"
                self.step(gen.next_step())
            self.where = f"example {index}, end"
            self.settle()
            got, _ = self.streams[0].responses()
        finally:
            for s in self.streams:
                s.close()
        if self.log:
            self.log(f"example {index + 1}: revision {gen.ops.rev}, compacted at "
                     f"{gen.ops.compact}, {gen.streams} streams, "
                     f"{sum(len(c) for c in self.creates)} watchers; etcd sent "
                     f"{_counts([r for g in got for r in g])}")

    def step(self, step):
        kind = step[0]
        if kind == "burst":
            for op in step[1]:
                self.step(("write", op))
            return
        if kind == "write":
            op = step[1]
            want_raw, want, got = diff.ask_both(*self.targets, self.gen.ops, op)
            self.note(op.describe(), want, got)
            if not diff.same(op, want, got):
                self.fail(f"write answers differ\nrequest: {op.describe()}\n"
                          f"etcd:   {want}\nraftkv: {got}")
            self.gen.ops.observe(op, want_raw)
            return
        # Each answer is awaited before the next write: its header revision (and a created
        # watcher's start) would otherwise depend on whether the write came first.
        stream = step[1]
        if kind == "create":
            request = step[2]
            self.creates[stream].append(request)
            answer = self.request(stream, rpc_pb2.WatchRequest(create_request=request),
                                  f"create {_describe(request)}", _is_created)
            self.gen.observe_create(stream, answer)
            if 0 < request.start_revision <= self.gen.ops.rev:
                self.settle()  # caught up before a write or compaction could race it
        elif kind == "cancel":
            self.settle()  # etcd drops what is still queued for a canceled watcher
            wid = step[2]
            cancel = rpc_pb2.WatchRequest(
                cancel_request=rpc_pb2.WatchCancelRequest(watch_id=wid))
            if wid in self.gen.ids[stream]:
                self.request(stream, cancel, f"cancel {wid}",
                             lambda r: _is_cancel_answer(r) and r.watch_id == wid)
            else:  # etcd answers nothing: any answer shows in the next settle
                self.send(stream, cancel, f"cancel {wid} (unknown)")
            self.gen.observe_cancel(stream, wid)
        else:
            self.request(stream, rpc_pb2.WatchRequest(
                progress_request=rpc_pb2.WatchProgressRequest()), "progress",
                lambda r: r.watch_id == -1 and not r.created)

    def note(self, text, want=None, got=None):
        self.history.append(text)
        if self.trace:
            self.trace(f"{self.where} {text}" + ("" if want is None else
                                                 f"\n  etcd:   {want}\n  raftkv: {got}"))

    def send(self, stream, request, text):
        self.note(f"stream {stream}: {text}")
        for s in self.streams:
            s.send(stream, request)

    def request(self, stream, request, text, is_answer):
        """Send request on stream to both servers and wait for each one's answer (the next
        response is_answer accepts); returns etcd's."""
        before = [self.answers(i, stream, is_answer) for i in (0, 1)]
        self.send(stream, request, text)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        for i, name in enumerate(("etcd", "raftkv")):
            while len(answers := self.answers(i, stream, is_answer)) <= len(before[i]):
                if time.monotonic() > deadline:
                    self.fail(f"{name} did not answer {text} on stream {stream}")
                time.sleep(POLL_S)
            if i == 0:
                answer = answers[len(before[0])]
        return answer

    def answers(self, index, stream, is_answer):
        got, _ = self.streams[index].responses()
        return [r for r in got[stream] if not isinstance(r, tuple) and is_answer(r)]

    def views(self, index):
        """(view, problems) of each stream on server index."""
        target = self.targets[index]
        got, last_s = self.streams[index].responses()
        out = [view(responses, creates, target.to_sym, self.gen.ops.rev, own_fragments=index)
               for responses, creates in zip(got, self.creates)]
        return out, last_s

    def settle(self):
        """Until etcd sent nothing for ETCD_IDLE_S and raftkv's views equal etcd's; fails with
        the difference after SETTLE_TIMEOUT_S, or at once on a broken guarantee."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            want, etcd_last = self.views(0)
            got, _ = self.views(1)
            for name, views in (("etcd", want), ("raftkv", got)):
                for i, (_, problems) in enumerate(views):
                    if problems:
                        self.fail(f"{name}, stream {i}: " + "; ".join(problems))
            idle = time.monotonic() - etcd_last >= ETCD_IDLE_S
            if idle and [v for v, _ in want] == [v for v, _ in got]:
                return
            if time.monotonic() > deadline:
                self.fail(_difference([v for v, _ in want], [v for v, _ in got], self.creates))
            time.sleep(POLL_S)


def _is_created(resp):
    return resp.created


def _is_cancel_answer(resp):
    return resp.canceled and not resp.created and not resp.compact_revision


def _counts(responses):
    """What kinds of responses a server sent (how much of the API a run covered)."""
    kinds = {"events": 0, "fragments": 0, "notifications": 0, "compacted": 0, "refused": 0,
             "canceled": 0}
    for r in responses:
        if isinstance(r, tuple):
            continue
        kind = ("fragments" if r.fragment else "events" if r.events else
                "compacted" if r.compact_revision else
                "refused" if r.created and r.canceled else "canceled" if r.canceled else
                None if r.created or r.watch_id == -1 else "notifications")
        if kind:
            kinds[kind] += 1
    return ", ".join(f"{n} {k}" for k, n in kinds.items())


def _describe(request):
    return diff.Op("Watch", "Create", request).describe()


def _difference(want, got, creates):
    """The first differing watcher (or watch_id -1 list) of the first differing stream."""
    for i, (w, g) in enumerate(zip(want, got)):
        if w == g:
            continue
        if w["control"] != g["control"]:
            return (f"stream {i}, responses with watch_id -1 differ\n"
                    f"etcd:   {w['control']}\nraftkv: {g['control']}\n"
                    f"watchers: etcd: {w['watchers']}\nraftkv: {g['watchers']}")
        for wid in sorted(set(w["watchers"]) | set(g["watchers"])):
            a, b = w["watchers"].get(wid, []), g["watchers"].get(wid, [])
            if a == b:
                continue
            n = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return (f"stream {i}, watcher {wid}: responses differ from #{n}\n"
                    f"etcd:   {a[n:n + 4]}\nraftkv: {b[n:n + 4]}\n"
                    f"stream {i}'s creates: " + "; ".join(_describe(c) for c in creates[i]))
    return "views differ"


def run(etcd, raftkv, seed, examples, steps=STEPS_PER_EXAMPLE, log=None, trace=None):
    """Run examples of seed against both Targets; raise differential.Mismatch at the first
    difference. Returns how many steps were run."""
    r = Run(etcd, raftkv, seed, log, trace)
    for index in range(examples):
        r.example(index, steps)
    return examples * steps


def main(argv=None):
    return diff.seeds_main(argv, __doc__, "--examples", 10,
                           f"examples per seed, {STEPS_PER_EXAMPLE} steps each", run,
                           extra_args=SERVER_ARGS, what="steps, same watch responses")


if __name__ == "__main__":
    sys.exit(main())
