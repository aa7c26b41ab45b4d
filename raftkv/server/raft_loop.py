"""The Ready loop: the only code in the member that calls the RawNode.

Handlers (peer messages, client proposals, reads, the tick timer) only enqueue into the inbox
and wake the loop (STYLE habit 2). The loop runs at its own pace and batches:

1. drain the inbox into the node (steps, ticks, one proposal per entry-sized batch of client
   requests, one ReadIndex round for every linearizable read queued since the last round;
   while the node knows no leader, requests and reads wait in line for one);
2. for each Ready, in the order its contract requires: send a leader's own appends
   (early_messages, Raft thesis §10.2.1), persist entries + hard state (+ snapshot) and queue
   the apply of committed entries (both off the event loop), send the other messages once the
   persist is durable, resolve reads whose index is applied, advance.

Messages other than a leader's appends are sent only after the Ready's own writes are durable.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref

from raftkv.errors import RaftkvError
from raftkv.raft import EntryType
from raftkv.raft.errors import LogDivergedError, ProposalDroppedError, RaftError
from raftkv.server.proposals import Batcher, Registry, decode_batch

log = logging.getLogger("raftkv.raft_loop")

INBOX_ITEMS_MAX = 100_000  # beyond this, handlers are told to back off (TooManyRequests)
READ_TIMEOUT_S = 5.0
# A ReadIndex round not confirmed this long after it started is asked again (etcd's
# readIndexRetryTime): its request or the answer may have been lost with a peer connection, or
# gone to a leader that has since lost its place, and Raft itself never repeats it.
READ_INDEX_RETRY_S = 0.5
# A peer message the core refuses for a reason other than a dropped proposal (which is routine:
# a follower forwarded it just as leadership moved) means a confused or damaged peer: it is
# logged as a warning, once per this many seconds for each message type and error class, with
# the count of the refusals not logged since.
DROPPED_WARN_EVERY_S = 60.0


class RaftLoop:
    """Drives one RawNode. io/send are the member's I/O adapters.

    io(ready, pipelined) -> (durable, applied), their writes queued before io returns (so
        Readys are made durable and applied in order). durable (None: nothing to persist) is an
        awaitable that completes once ready.snapshot, ready.entries and hard_state are durable;
        applied (None: no committed entries) a future of (results, conf_changes) that completes
        once ready.committed_entries are applied and visible to readers. results are
        (member_id, seq, response) for applied client requests (the member may also release
        them earlier through resolve_results); conf_changes the ConfChangeV2s among them.
        pipelined: the Ready's hard state changed only its commit index (nothing to persist).
    send(messages): enqueue to the peer transport (never blocks).
    on_conf_change(cc, conf_state): called after the core applied a configuration change.
    """

    def __init__(self, node, member_id, *, io, send, tick_s, batcher=None, on_conf_change=None,
                 on_tick=None):
        assert tick_s > 0
        self.node = node
        self.member_id = member_id
        self._io, self._send = io, send
        self._on_conf_change = on_conf_change
        self._on_tick = on_tick
        self.conf_state = None
        self._durable_term_vote = (node.raft.term, node.raft.vote)
        self.on_soft_state = None  # fn(SoftState) after a leader/role change
        self.flush = None  # fn(): make pending applies visible now (a read waits for them)
        self.tick_s = tick_s
        self.registry = Registry(member_id)
        self.batcher = batcher or Batcher()
        # how many requests at the batcher's head wait for a leader, each looked at (_hold)
        self._held = 0
        self.applied_index = 0  # visible to readers (the store's round holding it committed)
        self._submitted_index = 0  # the last committed entry handed to io() for its apply
        self.leader_id = 0
        self.term = 0
        self.role = None
        self._inbox = collections.deque()
        self._read_waiters = []  # futures of linearizable reads waiting for the next round
        # those of them (and of the rounds) that fail rather than wait for another leader
        self._fail_fast_reads = weakref.WeakSet()
        # ctx -> (when the round was asked, time.monotonic(); the futures its ReadState releases)
        self._read_rounds = {}
        self._ready_reads = []  # (index, futures) confirmed, waiting for applied >= index
        self._read_ctx = 0
        self._wake = asyncio.Event()
        # (message type, error class) -> [when last logged, refusals since not logged]
        self._dropped_warned = {}
        self._stopped = False
        self.leader_changes = 0

    # ---- handlers: enqueue only ----
    def step(self, msg):
        self._enqueue(("step", msg))

    def propose(self, op, body, size, timeout_s, rid=None, waiter=None, fail_fast=False):
        """Queue one client request; returns the future of its response (waiter, if given:
        see Registry.register). rid: the client's idempotency id (a retried write with the
        same rid is applied once). While the node knows no leader the request waits in line
        for one, then is proposed, unless timeout_s passes first (TIMEOUT) or its caller goes
        away (the future cancelled, or the waiter's cancel()): then it is never proposed.
        fail_fast (a client that fails over itself, server/leaderless.py): NO_LEADER instead
        of waiting."""
        seq, fut = self.registry.register(timeout_s, waiter)
        self.batcher.add((self.member_id, seq, op, body, rid), size, fail_fast)
        self._wake.set()
        return fut

    def read_barrier(self, fail_fast=False):
        """A future that completes once a linearizable read may be served locally. It never
        fails: while this member knows no leader the read waits in line, and a round lost with
        a leader is asked again of the next one; the caller bounds the wait (Service's
        --request-timeout, a client's deadline) by cancelling the future. fail_fast (a client
        that fails over itself, server/leaderless.py): NO_LEADER at once without a leader, and
        LEADER_CHANGED when the leader its round was asked of is lost."""
        fut = asyncio.get_running_loop().create_future()
        if fail_fast:
            if self.leader_id == 0:
                fut.set_exception(RaftkvError("NO_LEADER"))
                return fut
            self._fail_fast_reads.add(fut)
        self._read_waiters.append(fut)
        self._wake.set()
        return fut

    def local_barrier(self):
        """A future that completes once every entry this member has applied so far is visible
        to readers: a serializable read then sees every write this member acknowledged before
        it (as in etcd, whose apply makes a write visible before answering it). Responses
        leave as soon as the apply computed them, before the store's LMDB round commits."""
        fut = asyncio.get_running_loop().create_future()
        if self._submitted_index <= self.applied_index:
            fut.set_result(self.applied_index)
            return fut
        self._ready_reads.append((self._submitted_index, [fut]))
        if self.flush is not None:
            self.flush()
        return fut

    def call(self, fn):
        """Run fn(node) inside the loop (conf changes, leader transfer, campaign)."""
        fut = asyncio.get_running_loop().create_future()
        self._enqueue(("call", (fn, fut)))
        return fut

    def _enqueue(self, item):
        if len(self._inbox) >= INBOX_ITEMS_MAX:
            raise RaftkvError("TOO_MANY_REQUESTS")
        self._inbox.append(item)
        self._wake.set()

    # ---- the loop ----
    async def run(self):
        ticker = asyncio.get_running_loop().create_task(self._tick_forever())
        try:
            while not self._stopped:
                await self._wake.wait()
                self._wake.clear()
                self._drain_inbox()
                while self.node.has_ready():
                    await self._handle_ready(self.node.ready())
                    self._drain_inbox()
        finally:
            ticker.cancel()

    def stop(self):
        self._stopped = True
        self._wake.set()

    async def _tick_forever(self):
        next_at = time.monotonic()
        while not self._stopped:
            next_at = next_tick(next_at, time.monotonic(), self.tick_s)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            self._inbox.append(("tick", None))
            self._wake.set()
            self.registry.expire(lambda: RaftkvError("TIMEOUT"))
            if self._on_tick is not None:
                self._on_tick()

    def _drain_inbox(self):
        ticked = False
        while self._inbox:
            kind, item = self._inbox.popleft()
            if kind == "tick":
                ticked = True
                self.node.tick()
                self._retry_read_rounds(time.monotonic())
                if self.leader_id == 0 and self._read_waiters:
                    self._forget_abandoned_reads()
            elif kind == "step":
                try:
                    self.node.step(item)
                except LogDivergedError:
                    raise  # the member must stop (Member._on_raft_loop_done)
                except ProposalDroppedError as exc:
                    log.debug("dropped peer message %s: %s", item.type, exc)
                except RaftError as exc:
                    self._warn_dropped(item, exc)
            elif kind == "call":
                fn, fut = item
                try:
                    res = fn(self.node)
                except Exception as exc:  # noqa: BLE001 -- the caller gets the error
                    if not fut.done():
                        fut.set_exception(exc)
                else:
                    if not fut.done():
                        fut.set_result(res)
        self._propose_batches(ticked)
        self._start_read_round()

    def _warn_dropped(self, m, exc, now=None):
        now = time.monotonic() if now is None else now
        key = (m.type, type(exc))
        seen = self._dropped_warned.get(key)
        if seen is not None and now - seen[0] < DROPPED_WARN_EVERY_S:
            seen[1] += 1
            return
        quiet = f" ({seen[1]} more like it since the last warning)" if seen and seen[1] else ""
        log.warning("refused a %s from member %x (term %d): %s: %s%s", m.type.name, m.frm,
                    m.term, type(exc).__name__, exc, quiet)
        self._dropped_warned[key] = [now, 0]

    def _propose_batches(self, ticked=False):
        if not len(self.batcher):
            return
        if self.node.raft.lead == 0:
            self._hold(ticked)
            return
        if self._held:
            # The first turn with a leader: a held request that timed out or whose caller
            # went away since it was last looked at is dropped here, never proposed.
            self._held = 0
            if not self.batcher.sift(self._still_waiting):
                return
        payloads = self.batcher.cut()
        try:
            self.node.propose_many(payloads)
        except ProposalDroppedError as exc:
            err = RaftkvError("NO_LEADER", f"etcdserver: no leader ({exc})")
            for payload in payloads:
                self._fail_batch(payload, err)

    def _hold(self, ticked):
        """The node knows no leader (its core would drop a proposal): the queued requests wait
        in the batcher for one, in arrival order, as etcd's raft node reads no proposal while
        it knows no leader; the first turn that knows one proposes them. A request of a
        client that fails over itself is refused (NO_LEADER). Each turn looks at the requests
        queued since the last; a tick's turn at all of them, dropping those whose caller
        stopped waiting (its registry deadline, --request-timeout, passed; it went away)."""
        self._held = self.batcher.sift(self._holdable, 0 if ticked else self._held)

    def _holdable(self, request, fail_fast):
        seq = request[1]
        if not self.registry.waiting(seq):
            return False
        if fail_fast:
            self.registry.fail(seq, RaftkvError("NO_LEADER"))
            return False
        return True

    def _still_waiting(self, request, fail_fast):
        return self.registry.waiting(request[1])

    def _fail_batch(self, payload, exc):
        for member_id, seq, *_ in decode_batch(payload):
            assert member_id == self.member_id
            self.registry.fail(seq, exc)

    def _start_read_round(self):
        # Without a leader the core would drop the round: the reads wait in line, and the
        # first loop turn that knows a leader (its Ready's soft state) asks for them.
        if not self._read_waiters or self.leader_id == 0:
            return
        self._read_ctx += 1
        # Unique across members: the leader keys pending reads by ctx.
        ctx = self.member_id.to_bytes(8, "big") + self._read_ctx.to_bytes(8, "big")
        self._read_rounds[ctx] = (time.monotonic(), self._read_waiters)
        self._read_waiters = []
        self.node.read_index(ctx)

    def _retry_read_rounds(self, now):
        """Put the reads of every round unconfirmed for READ_INDEX_RETRY_S back in line for
        the next round (a later ReadState for an old round finds nothing to release). Safe: a
        read index obtained after a read began serves it linearizably too."""
        for ctx, (started, futs) in list(self._read_rounds.items()):
            if now - started < READ_INDEX_RETRY_S:
                continue
            del self._read_rounds[ctx]
            waiting = [f for f in futs if not f.done()]
            if waiting:
                log.debug("ReadIndex round unconfirmed after %.1fs: asking again for %d "
                          "read(s)", now - started, len(waiting))
                self._read_waiters.extend(waiting)

    def _forget_abandoned_reads(self):
        """Drop the reads waiting for a leader whose caller gave up (its timeout or deadline
        cancelled the future): without a leader for long, they would pile up."""
        self._read_waiters = [f for f in self._read_waiters if not f.done()]

    async def _handle_ready(self, rd):
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state)
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
        early = rd.early_messages
        if early and rd.entries:
            self._send(early)  # thesis 10.2.1: replicate while we write
            early = None
        pipelined = self._may_pipeline(rd)
        # Both writes are queued now (each in Ready order); the apply's LMDB commit may linger
        # to share its sync with later Readys' applies.
        durable, applied = self._io(rd, pipelined)
        if rd.committed_entries:
            self._submitted_index = max(self._submitted_index, rd.committed_entries[-1].index)
        if early:
            self._send(early)  # no entries of ours to write: the apply's responses went first
        for rs in rd.read_states:
            _, futs = self._read_rounds.pop(rs.request_ctx, (0.0, None))
            if futs:
                self._ready_reads.append((rs.index, futs))
        if pipelined:
            # Nothing here must be durable before its messages: send, advance and go on with
            # the next Ready while this one's apply commits (reads wait for applied_index).
            assert durable is None
            if rd.messages:
                self._send(rd.messages)
            if applied is not None:
                self._track(applied, rd)
            self._release_reads()
            self.node.advance(rd)
            return
        if durable is not None:
            await durable
        if rd.hard_state is not None:
            self._durable_term_vote = (rd.hard_state.term, rd.hard_state.vote)
        conf_changes = []
        if applied is not None and (rd.snapshot is not None or self._has_conf_change(rd)):
            # The core must not see a configuration change before the store holds it.
            results, conf_changes = await applied
            if rd.committed_entries:
                self.applied_index = max(self.applied_index, rd.committed_entries[-1].index)
            self.resolve_results(results)
        elif applied is not None:
            self._track(applied, rd)
        if rd.messages:
            self._send(rd.messages)
        for cc in conf_changes:
            self.conf_state = self.node.apply_conf_change(cc)
            if self._on_conf_change is not None:
                self._on_conf_change(cc, self.conf_state)
        if rd.snapshot is not None:
            self.applied_index = max(self.applied_index, rd.snapshot.metadata.index)
        self._release_reads()
        self.node.advance(rd)

    @staticmethod
    def _has_conf_change(rd):
        return any(e.type == EntryType.CONF_CHANGE for e in rd.committed_entries)

    def _may_pipeline(self, rd):
        """A Ready that only applies committed entries (and maybe moves the commit index) needs
        nothing durable before its messages or advance(); conf changes and snapshots wait."""
        if rd.entries or rd.snapshot is not None:
            return False
        hs = rd.hard_state
        if hs is not None and (hs.term, hs.vote) != self._durable_term_vote:
            return False
        return not self._has_conf_change(rd)

    def _track(self, io, rd):
        last = rd.committed_entries[-1].index if rd.committed_entries else 0

        def done(fut):
            if fut.cancelled() or fut.exception() is not None:
                return  # the member stops on a failed write (Member._io_failed)
            results, conf_changes = fut.result()
            assert not conf_changes, "conf changes are never pipelined"
            self.applied_index = max(self.applied_index, last)
            self.resolve_results(results)
            self._release_reads()
        io.add_done_callback(done)

    def resolve_results(self, results):
        """Resolve the futures of applied requests: [(member_id, seq, response)]."""
        for member_id, seq, response in results:
            self.registry.resolve(member_id, seq, response)

    def _release_reads(self):
        if not self._ready_reads:
            return
        keep = []
        for index, futs in self._ready_reads:
            if index <= self.applied_index:
                for f in futs:
                    if not f.done():
                        f.set_result(index)
            else:
                keep.append((index, futs))
        self._ready_reads = keep
        if keep and self.flush is not None:
            self.flush()  # a read waits for an apply: do not let its commit linger

    def _on_soft_state(self, ss):
        if ss.lead != self.leader_id:
            self.leader_changes += 1
            log.info("leader is now %x (was %x)", ss.lead, self.leader_id)
            # Reads waiting on a round the old leader never confirmed would hang: they go back
            # in line for a round with the new leader (at once if one is known, else once one
            # is), which serves them linearizably too, as it is asked after they began. etcd
            # 3.4.23 fails them with `etcdserver: leader changed` and leaves the retry to its
            # client; etcdctl's does, a bare gRPC client's does not.
            lost = [f for _, futs in self._read_rounds.values() for f in futs if not f.done()]
            self._read_rounds.clear()
            for f in lost:
                if f in self._fail_fast_reads:
                    f.set_exception(RaftkvError("LEADER_CHANGED"))
                else:
                    self._read_waiters.append(f)
            # Writes proposed here under the old leader may have been forwarded to a leader
            # that is gone (its MsgProp lost): fail them now rather than at --request-timeout.
            # The client retries under the same idempotency id, so a write that does commit
            # after all is applied once (member dedup). Those still held for a leader (in the
            # batcher, never proposed) wait on.
            if self.leader_id != 0:
                held = self.batcher.seqs() if len(self.batcher) else ()
                self.registry.fail_all(lambda: RaftkvError("LEADER_CHANGED"), held)
        self.leader_id = ss.lead
        self.role = ss.role
        if self.on_soft_state is not None:
            self.on_soft_state(ss)


def next_tick(last_at, now, tick_s):
    """When the tick after the one due at last_at (which fires at now) is due. On schedule, one
    period after last_at; when the loop fell a whole period or more behind (a stall: the process
    starved of CPU, a long sync), one period after now, the schedule starting again there.
    Missed ticks are dropped, as Go's time.Ticker (etcd's ticker) drops them: firing them all
    at once would let a stalled member see its election timeout expire, and a stalled leader
    fail its check-quorum, on time it never waited while the messages that would have kept it
    in place sat unread."""
    due = last_at + tick_s
    return now + tick_s if now - due >= tick_s else due
