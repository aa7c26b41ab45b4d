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

Pausing: `await committer.pause()` commits the open (lingering) round and parks the storage
thread with no transaction open until `resume()`; functions queued meanwhile wait and run
after it, in order. The online defrag (Member.defragment) copies the store and swaps its file
in while the thread is parked; the thread takes the engine's environment anew for each round.

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


class _Round:
    """The open write txn of a round and what ran in it; while lendable, _try_lend may run a
    function in it from another thread (lent: one is running, the storage thread waits)."""
    __slots__ = ("txn", "first_at", "hooks", "before", "lendable", "lent", "lent_items")

    def __init__(self, txn, first_at):
        self.txn = txn
        self.first_at = first_at  # monotonic time of the round's first function, or None
        self.hooks = []
        self.before = []
        self.lendable = False
        self.lent = False
        self.lent_items = []


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
        self._engine = engine
        self._path = engine.path
        self._cond = threading.Condition()
        self._queue = []
        self._closing = False
        self._kicked = False
        self.lazy_wait_s = LAZY_WAIT_S_DEFAULT
        # Lend a lingering round's txn to submit_nowait(inline=True) callers, and keep a txn
        # open for them after a lingering round (see submit_nowait).
        self.lend = False
        self.lent_fns = 0  # of fns, those their submitters ran inside a lent round
        self._round = None  # the round lingering now (guarded by _cond)
        # (loop, future) of the pause() asked for, until resume(); the storage thread parks
        # between rounds while it is set (guarded by _cond)
        self._pause = None
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

    def submit_nowait(self, fn, lazy=False, inline=False):
        """Queue fn(txn) now (order with later submissions is kept) and return the asyncio
        future of its result, resolved once the txn holding it is durable.

        lazy=True: fn runs at once, but a round holding only lazy functions waits up to
        lazy_wait_s for more work before it commits, so that its sync is shared with the next
        round's (e.g. the apply of committed entries with the next entries to persist).
        kick() ends the wait early (someone needs the result to be visible now).

        inline=True (with self.lend): if a round is lingering and nothing is queued, fn runs
        right here, in this thread, in a child txn of that round, before this returns; the
        future still resolves only once the round commits. This saves the two thread hand-offs
        when fn's side effects (a client's response) matter before the commit. fn must not
        block on the storage thread. Otherwise fn is queued as usual."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        item = _Item(fn, loop, future, lazy)
        if not (inline and self.lend and self._try_lend(item)):
            self._enqueue(item)
        return future

    def kick(self):
        """Commit a waiting lazy round now."""
        with self._cond:
            self._kicked = True
            self._cond.notify()

    async def pause(self):
        """Commit the open round, then park the storage thread between rounds, with no
        transaction open, until resume(); returns once it is parked. Submissions meanwhile
        queue (inline ones too: no round is lent). The caller must call resume(), also when
        this is cancelled."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._closing:
                raise CommitterClosedError("the group committer is closed")
            assert self._pause is None, "pause() while paused"
            self._pause = (loop, future)
            self._kicked = True  # a lingering round commits now
            self._cond.notify_all()
        await future

    @property
    def paused(self):
        """Between pause() and resume()."""
        return self._pause is not None

    def resume(self):
        """Let the storage thread go on after pause() (harmless if it has not parked yet)."""
        with self._cond:
            self._pause = None
            self._cond.notify_all()

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
            "lent_fns": self.lent_fns,
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
        warm = False  # the last round lingered: open the next txn at once, to lend it
        while True:
            with self._cond:
                while not warm and not self._queue and not self._closing and \
                        self._pause is None:
                    self._cond.wait()
                if self._pause is not None:
                    self._park()
                    warm = False
                    continue
                if not self._queue and self._closing:
                    return
                batch, self._queue = self._queue, []
                self._kicked = False
            warm = self._commit_round(batch)
            _resolve(batch)

    def _park(self):
        """Under _cond, between rounds: tell pause() and wait for resume() (close() waits
        for it too: the store may be being swapped)."""
        loop, future = self._pause
        try:
            loop.call_soon_threadsafe(_set_done, future)
        except RuntimeError:  # the loop is closed: nobody will resume
            self._pause = None
        while self._pause is not None:
            self._cond.wait()

    def _try_lend(self, item) -> bool:
        """Run item.fn now, in this thread, inside the round the storage thread holds open
        (lingering); False when there is no such round or it would reorder item."""
        with self._cond:
            rnd = self._round
            if rnd is None or not rnd.lendable or rnd.lent or self._queue or self._closing:
                return False
            rnd.lent = True  # the storage thread does not touch rnd.txn until this is False
        try:
            _run_one(self._engine.env, rnd.txn, item, rnd.hooks, rnd.before)
        finally:
            with self._cond:
                rnd.lent = False
                rnd.lent_items.append(item)
                if rnd.first_at is None:
                    rnd.first_at = time.monotonic()
                if not item.lazy:
                    self._kicked = True
                    self._cond.notify_all()
                elif not rnd.lendable:  # the storage thread waits for the txn back
                    self._cond.notify_all()
        return True

    def _linger(self, rnd):
        """Hold rnd open for lenders until work is queued, a kick, close(), or the deadline
        (lazy_wait_s after the round's first function; a round that has none yet gives up
        after lazy_wait_s). Returns (queued items, whether to stop lingering)."""
        opened = time.monotonic()
        with self._cond:
            rnd.lendable = self.lend
            while not self._queue and not self._closing and not self._kicked and \
                    self._pause is None:
                start = rnd.first_at if rnd.first_at is not None else opened
                left = start + self.lazy_wait_s - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            rnd.lendable = False
            while rnd.lent:
                self._cond.wait()
            more, self._queue = self._queue, []
            stop = not more
            self._kicked = False
            return more, stop

    def _commit_round(self, batch):
        """One write txn: run batch (and whatever joins a lazy round), commit, run the hooks.
        Returns True when the round lingered, so that the next one opens at once for lenders;
        the caller resolves batch (which the round extends with what joined it)."""
        env = self._engine.env  # read per round: the online defrag replaces it while parked
        try:
            txn = env.begin(write=True)
        except lmdb.Error as exc:
            self._fail(batch, exc)
            return False
        rnd = _Round(txn, time.monotonic() if batch else None)
        done, todo, lingered = [], list(batch), False
        lent_done = 0  # of done, the functions a lender ran (counted once committed)
        while True:
            if todo and rnd.first_at is None:
                rnd.first_at = time.monotonic()
            for item in todo:
                if _run_one(env, txn, item, rnd.hooks, rnd.before):
                    done.append(item)
                else:
                    self.failed_fns += 1
            if batch and not all(item.lazy for item in batch):
                break
            lingered = True
            with self._cond:
                self._round = rnd
            todo, stop = self._linger(rnd)
            with self._cond:
                self._round = None
                lent, rnd.lent_items = rnd.lent_items, []
            for item in lent:
                batch.append(item)
                if item.error is None:
                    done.append(item)
                    lent_done += 1
                else:
                    self.failed_fns += 1
            batch.extend(todo)
            if stop:
                break
        if not done:
            txn.abort()
            return False
        try:
            for hook in rnd.before:
                hook()
        except Exception as exc:  # noqa: BLE001 -- the round's submitters get it
            txn.abort()
            self._fail(done, exc)
            return False
        start = time.perf_counter()
        try:
            txn.commit()
        except lmdb.Error as exc:
            self._fail(done, exc)
            return False
        elapsed = time.perf_counter() - start
        self.txns += 1
        self.fns += len(done)
        self.lent_fns += lent_done  # with fns: never ahead of it, as the metric promises
        self.sync_seconds_total += elapsed
        self.sync_seconds.append(elapsed)
        self.batch_sizes.append(len(done))
        for hook in rnd.hooks:
            try:
                hook()
            except Exception:  # a broken hook must not strand the round's submitters
                _log.exception("after-commit hook failed")
        return lingered and self.lend

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


def _set_done(future):
    if not future.done():  # cancelled by its awaiter
        future.set_result(None)


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
