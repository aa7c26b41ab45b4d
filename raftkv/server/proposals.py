"""Client requests on their way into the Raft log, and the futures that wait for their results.

A Raft entry written by raftkv carries a batch of client requests (STYLE: batching everywhere):

    msgpack([BATCH_FORMAT, [[member_id, seq, op, body], ...]])

(member_id, seq) names the request on the member that proposed it, so that whichever member
applies the entry, only the proposer resolves a waiting future. Bodies are opaque here; the
applier hands them to the MVCC store.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time

import msgpack

log = logging.getLogger(__name__)

BATCH_FORMAT = 1
# One Raft entry carries at most this many bytes of requests: big enough that a burst of small
# puts costs one entry, small enough that an entry never nears the peer frame limit.
ENTRY_BYTES_MAX = 1 << 20
# And at most this many requests, so one entry's apply never stalls the loop for long.
ENTRY_REQUESTS_MAX = 4096


def encode_batch(requests):
    """requests: list of (member_id, seq, op, body) -> entry payload bytes."""
    assert requests, "an empty batch is never proposed"
    return msgpack.packb([BATCH_FORMAT, [list(r) for r in requests]], use_bin_type=True)


def decode_batch(data):
    """Entry payload bytes -> list of (member_id, seq, op, body). Empty data: a leader's no-op."""
    if not data:
        return []
    fmt, reqs = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    if fmt != BATCH_FORMAT:
        raise ValueError(f"unknown request batch format {fmt}")
    return [tuple(r) for r in reqs]


class Batcher:
    """Queues encoded requests and cuts them into entry-sized batches. While the member knows
    no leader the queue is held (RaftLoop): sift() drops the requests that must not wait."""

    def __init__(self, entry_bytes_max=ENTRY_BYTES_MAX, entry_requests_max=ENTRY_REQUESTS_MAX):
        assert entry_bytes_max > 0 and entry_requests_max > 0
        self.entry_bytes_max = entry_bytes_max
        self.entry_requests_max = entry_requests_max
        # list of (request tuple, approximate encoded size, refused rather than held)
        self._queue = []

    def __len__(self):
        return len(self._queue)

    def add(self, request, size, fail_fast=False):
        """Queue request (member_id, seq, op, body, rid). fail_fast: its caller is refused
        rather than held while there is no leader (server/leaderless.py)."""
        self._queue.append((request, size, fail_fast))

    def sift(self, keep, start=0):
        """Drop the queued requests from position start on for which keep(request, fail_fast)
        is false (in queue order; they are never proposed). Returns how many stay queued."""
        queue = self._queue
        queue[start:] = [item for item in queue[start:] if keep(item[0], item[2])]
        return len(queue)

    def seqs(self):
        """The seqs of the queued requests (not proposed yet)."""
        return {item[0][1] for item in self._queue}

    def cut(self):
        """All queued requests as a list of entry payloads, each within the limits."""
        out, batch, batch_bytes = [], [], 0
        for req, size, _ in self._queue:
            full = (len(batch) >= self.entry_requests_max
                    or batch_bytes + size > self.entry_bytes_max)
            if batch and full:
                out.append(encode_batch(batch))
                batch, batch_bytes = [], 0
            batch.append(req)
            batch_bytes += size
        if batch:
            out.append(encode_batch(batch))
        self._queue.clear()
        return out


class Reply:
    """A future-like waiter that calls done(response, exc) synchronously when resolved, so
    that a response can leave inside the apply instead of a loop turn later (the registry
    resolves on the event loop thread). cancel(): forget it; done() is then never called."""
    __slots__ = ("_fn", "_done")

    def __init__(self, fn):
        self._fn = fn
        self._done = False

    def done(self):
        return self._done

    def cancel(self):
        self._done = True

    def set_result(self, response):
        self._finish(response, None)

    def set_exception(self, exc):
        self._finish(None, exc)

    def _finish(self, response, exc):
        if self._done:
            return
        self._done = True
        try:
            self._fn(response, exc)
        except Exception:  # noqa: BLE001 -- must not break the apply that resolved it
            log.exception("a reply callback failed")


class Registry:
    """(member_id, seq) -> future of the request's response, for requests proposed here."""

    def __init__(self, member_id):
        assert member_id != 0
        self.member_id = member_id
        # A fresh random base per process: after a restart, entries proposed by the previous
        # incarnation may still commit, and their seqs must never match a new request's.
        self._seq = itertools.count(int.from_bytes(os.urandom(7), "big") << 8)
        self._pending = {}  # seq -> (future, deadline on the monotonic clock)

    def __len__(self):
        return len(self._pending)

    def register(self, timeout_s, waiter=None):
        """A new request id and the future its response will resolve (waiter, if given: an
        object with a future's done/set_result/set_exception, such as a Reply)."""
        seq = next(self._seq)
        fut = asyncio.get_running_loop().create_future() if waiter is None else waiter
        self._pending[seq] = (fut, time.monotonic() + timeout_s)
        return seq, fut

    def resolve(self, member_id, seq, response):
        """Called on apply for every request; ignores other members' requests and late ones."""
        if member_id != self.member_id:
            return
        item = self._pending.pop(seq, None)
        if item is not None and not item[0].done():
            item[0].set_result(response)

    def fail(self, seq, exc):
        item = self._pending.pop(seq, None)
        if item is not None and not item[0].done():
            item[0].set_exception(exc)

    def expire(self, exc_factory):
        """Fail every request past its deadline; returns how many."""
        now = time.monotonic()
        late = [seq for seq, (_, deadline) in self._pending.items() if deadline <= now]
        for seq in late:
            self.fail(seq, exc_factory())
        return len(late)

    def waiting(self, seq):
        """Whether seq's caller still waits for its answer: registered here and not answered,
        failed, timed out or cancelled (its caller went away; forgotten now)."""
        item = self._pending.get(seq)
        if item is None:
            return False
        if item[0].done():
            del self._pending[seq]
            return False
        return True

    def fail_all(self, exc_factory, keep=()):
        """Fail every request but those whose seq is in keep."""
        for seq in list(self._pending):
            if seq not in keep:
                self.fail(seq, exc_factory())
