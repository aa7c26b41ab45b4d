"""StoreGate: who may use the LMDB environment from a worker thread while the member runs.

The member's own event loop reads the store synchronously (ranges, watch history, status), and
its storage thread (GroupCommitter) writes it; everything else that reads or writes the store
does so in a worker thread started from the loop: etcd's Hash and HashKV, the bbolt image of
Maintenance.Snapshot, the image spooled for a follower's MsgSnap, the restore of a leader's
image. Each of those runs through `await gate.run(fn, *args)`.

The online defrag (raftkv/server/member.py `Member.defragment`) holds the gate exclusively
(`async with gate.exclusive()`): from the moment it asks, new worker-thread users wait, and it
goes on only once every running one has *finished its thread* (not merely its awaiting task:
a cancelled caller does not release the gate while its thread still reads the environment,
which the defrag is about to close). So nothing but the defrag touches the environment from
another thread while it copies the store and swaps the file in. etcd's defrag takes its
backend's read-tx lock for the same reason.

Everything here runs on one event loop's thread, except each worker's fn; the count of
running workers is changed only on the loop thread.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading


class StoreGate:
    """Shared use by worker threads, exclusive use by the defrag (which is preferred: once it
    waits, new shared users queue behind it)."""

    def __init__(self):
        self.running = 0  # worker threads started through run() and not yet finished
        self.closed = False  # the defrag holds or wants the gate
        self._waiters = []  # futures of tasks waiting for a change of the two fields above

    async def _wait_until(self, ready):
        while not ready():
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    def _changed(self):
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def run(self, fn, *args):
        """fn(*args) in a new worker thread, once the defrag does not hold the gate; its result
        (or exception). The gate counts the thread as running until fn returns, even if the
        caller is cancelled meanwhile."""
        await self._wait_until(lambda: not self.closed)
        self.running += 1

        def finished():
            self.running -= 1
            assert self.running >= 0
            self._changed()
        try:
            fut, _ = start_thread(fn, args, "raftkv-store-worker", finished)
        except BaseException:
            finished()
            raise
        return await fut

    @contextlib.asynccontextmanager
    async def exclusive(self):
        """Hold the gate alone: wait for another holder, then for every running worker thread
        to finish; run() callers wait until the block is left."""
        await self._wait_until(lambda: not self.closed)
        self.closed = True
        try:
            await self._wait_until(lambda: self.running == 0)
            yield
        finally:
            self.closed = False
            self._changed()


def start_thread(fn, args, name, finished=None):
    """Run fn(*args) in a new daemon thread; returns (future, thread). The future, on the
    calling loop, gets fn's result or exception unless it was cancelled meanwhile; finished()
    (if given) runs on the loop first, whether or not anyone still waits. If the loop is
    closed by then, nothing is delivered."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def deliver(ok, value):
        if finished is not None:
            finished()
        if fut.done():  # the caller was cancelled
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def work():
        try:
            outcome = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 -- handed to the awaiting task
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(deliver, *outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return fut, thread
