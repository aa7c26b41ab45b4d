"""Group commit: many writers, one LMDB write transaction and one sync per round.

`await committer.submit(fn)` queues fn(txn) from an asyncio loop. A single storage thread takes
everything queued, runs each fn in its own child transaction of ONE write transaction, commits it
(one fsync; py-lmdb releases the GIL in commit, so the loop keeps running) and then resolves each
submitter's future with fn's result. While one commit runs, new submissions queue for the next.

Failure isolation:
  - fn raises: only its child transaction is aborted; that submitter gets the exception and the
    other functions of the round still commit.
  - the commit itself fails (disk error, map full at commit): nothing of the round is stored and
    every submitter whose fn had succeeded gets a CommitError.

After-commit hooks: code running inside fn may call `after_commit(txn, hook)`; the committer
runs hook() in the storage thread right after the commit succeeds, before any future of the
round is resolved (so a submitter that resumes already sees the caches the hooks update). Hooks
of a failed fn or a failed commit are dropped. LogStore.save uses this to publish its caches.

Counters for metrics: txns, fns, failed_txns, failed_fns, sync_seconds_total and the recent
per-commit durations (sync_seconds, a bounded deque: feed it to a histogram), batch_sizes.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time

import lmdb

from raftkv.storage.errors import StorageError

HISTORY_MAX_DEFAULT = 4096  # recent commit durations and batch sizes kept for metrics
# How long a round of only lazy functions waits for company before it commits. Off by default:
# it measured no gain for one sequential client on a 2-core box (RAFTKV_APPLY_LINGER_S tunes it
# in the member); with 0 a lazy round still takes in whatever is already queued.
LAZY_WAIT_S_DEFAULT = 0.0

_log = logging.getLogger(__name__)
_local = threading.local()  # .frame: the _Frame of the fn running in this thread, if any


class CommitError(StorageError):
    """The round's write transaction could not be committed; nothing of it is stored."""


class CommitterClosedError(StorageError):
    """submit() or run_sync() after close()."""


class _Frame:
    __slots__ = ("txn", "hooks", "before")

    def __init__(self, txn):
        self.txn = txn
        self.hooks = []
        self.before = []


class _Item:
    __slots__ = ("fn", "loop", "future", "result", "error", "lazy")

    def __init__(self, fn, loop, future, lazy=False):
        self.fn = fn
        self.loop = loop  # None: future is a concurrent.futures.Future (run_sync)
        self.future = future
        self.result = None
        self.error = None
        self.lazy = lazy


def after_commit(txn, hook) -> bool:
    """Run hook() once txn's round commits, if txn is the one a GroupCommitter gave to the
    function running in this thread; returns False (and does nothing) otherwise."""
    return _add_hook(txn, "hooks", hook)


def before_commit(txn, hook) -> bool:
    """Run hook() in the storage thread just before txn's round commits (after every function
    of the round ran); if it raises, the round is not committed and its submitters get a
    CommitError. The member uses it to wait until the WAL holds what the round reflects."""
    return _add_hook(txn, "before", hook)


def _add_hook(txn, kind, hook):
    """Append hook to the running function's frame list kind, if txn is that frame's."""
    frame = getattr(_local, "frame", None)
    if frame is None or frame.txn is not txn:
        return False
    getattr(frame, kind).append(hook)
    return True


class GroupCommitter:
    """One storage thread that coalesces queued write functions into one durable txn each round."""

    def __init__(self, engine, *, history_max=HISTORY_MAX_DEFAULT):
        assert history_max > 0
        self._env = engine.env
        self._path = engine.path
        self._cond = threading.Condition()
        self._queue = []
        self._closing = False
        self._kicked = False
        self.lazy_wait_s = LAZY_WAIT_S_DEFAULT
        self.txns = 0  # committed rounds
        self.fns = 0  # functions committed
        self.failed_txns = 0
        self.failed_fns = 0  # functions that raised (their submitters got the exception)
        self.sync_seconds_total = 0.0
        self.sync_seconds = collections.deque(maxlen=history_max)
        self.batch_sizes = collections.deque(maxlen=history_max)
        self._thread = threading.Thread(
            target=self._run, name="raftkv-group-commit", daemon=True
        )
        self._thread.start()

    async def submit(self, fn):
        """Queue fn(txn); return its result once the txn holding it is durable."""
        return await self.submit_nowait(fn)

    def submit_nowait(self, fn, lazy=False):
        """Queue fn(txn) now (order with later submissions is kept) and return the asyncio
        future of its result, resolved once the txn holding it is durable.

        lazy=True: fn runs at once, but a round holding only lazy functions waits up to
        lazy_wait_s for more work before it commits, so that its sync is shared with the next
        round's (e.g. the apply of committed entries with the next entries to persist).
        kick() ends the wait early (someone needs the result to be visible now)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._enqueue(_Item(fn, loop, future, lazy))
        return future

    def kick(self):
        """Commit a waiting lazy round now."""
        with self._cond:
            self._kicked = True
            self._cond.notify()

    def run_sync(self, fn):
        """submit() for threads without a loop (tests, tools): blocks until durable."""
        if threading.current_thread() is self._thread:
            raise StorageError("run_sync() from inside a committed function would deadlock")
        future = concurrent.futures.Future()
        self._enqueue(_Item(fn, None, future))
        return future.result()

    def stats(self) -> dict:
        return {
            "txns": self.txns, "fns": self.fns, "failed_txns": self.failed_txns,
            "failed_fns": self.failed_fns, "sync_seconds_total": self.sync_seconds_total,
        }

    def close(self):
        """Commit everything already queued, then stop the thread. Idempotent."""
        if threading.current_thread() is self._thread:
            raise StorageError("close() from inside a committed function would deadlock")
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    async def aclose(self):
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def _enqueue(self, item):
        with self._cond:
            if self._closing:
                raise CommitterClosedError("the group committer is closed")
            self._queue.append(item)
            self._cond.notify()

    def _run(self):
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
                self._kicked = False
            self._commit_round(batch)
            _resolve(batch)

    def _more_for_lazy_round(self, deadline):
        """Items that joined a round of only lazy ones before its deadline ([] = commit)."""
        with self._cond:
            while not self._queue and not self._closing and not self._kicked:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            more, self._queue = self._queue, []
            self._kicked = False
            return more

    def _commit_round(self, batch):
        try:
            txn = self._env.begin(write=True)
        except lmdb.Error as exc:
            self._fail(batch, exc)
            return
        hooks, before = [], []
        done = []
        todo = list(batch)
        deadline = time.monotonic() + self.lazy_wait_s
        while todo:
            for item in todo:
                if _run_one(self._env, txn, item, hooks, before):
                    done.append(item)
                else:
                    self.failed_fns += 1
            if not all(item.lazy for item in batch):
                break
            todo = self._more_for_lazy_round(deadline)
            batch.extend(todo)
        if not done:
            txn.abort()
            return
        try:
            for hook in before:
                hook()
        except Exception as exc:  # noqa: BLE001 -- the round's submitters get it
            txn.abort()
            self._fail(done, exc)
            return
        start = time.perf_counter()
        try:
            txn.commit()
        except lmdb.Error as exc:
            self._fail(done, exc)
            return
        elapsed = time.perf_counter() - start
        self.txns += 1
        self.fns += len(done)
        self.sync_seconds_total += elapsed
        self.sync_seconds.append(elapsed)
        self.batch_sizes.append(len(done))
        for hook in hooks:
            try:
                hook()
            except Exception:  # a broken hook must not strand the round's submitters
                _log.exception("after-commit hook failed")

    def _fail(self, items, exc):
        self.failed_txns += 1
        for item in items:
            error = CommitError(f"{self._path}: write transaction failed: {exc}")
            error.__cause__ = exc
            item.error = error


def _run_one(env, txn, item, hooks, before) -> bool:
    """Run item.fn in a child txn of txn; keep its writes and hooks only if it succeeds."""
    try:
        child = env.begin(write=True, parent=txn)
    except lmdb.Error as exc:
        item.error = exc
        return False
    frame = _Frame(child)
    _local.frame = frame
    try:
        item.result = item.fn(child)
        child.commit()
    except Exception as exc:  # the submitter gets it; the rest of the round goes on
        child.abort()
        item.error = exc
        return False
    finally:
        _local.frame = None
    hooks.extend(frame.hooks)
    before.extend(frame.before)
    return True


def _resolve(batch):
    by_loop = {}
    for item in batch:
        if item.loop is None:
            _settle_one(item)
        else:
            by_loop.setdefault(item.loop, []).append(item)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


def _settle(items):
    for item in items:
        _settle_one(item)


def _settle_one(item):
    if item.future.done():  # cancelled by its submitter
        return
    if item.error is not None:
        item.future.set_exception(item.error)
    else:
        item.future.set_result(item.result)
