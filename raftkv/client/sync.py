"""Client: the blocking twin of AsyncClient, with the same methods.

It runs an event loop in a daemon thread and forwards every call to an AsyncClient living on
that loop. Returned Lease and Lock objects are wrapped the same way, and a watch's events
become a plain iterator. Safe to use from several threads: calls are serialized onto the loop.

Watch callbacks (add_watch_callback) run on one thread of their own, not on the loop's: a
callback may then call the Client (a blocking call made on the loop's thread could never
return), including cancel_watch of its own watch. See _CallbackThread.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading

from raftkv.client.aio import AsyncClient
from raftkv.client.election import Election
from raftkv.client.lease import Lease, Session
from raftkv.client.lock import LOCK_PREFIX, Lock
from raftkv.client.watch import Watch

CLOSE_TIMEOUT_S = 5.0  # waiting for the loop thread (or the callback thread) to stop

_log = logging.getLogger(__name__)


class _Runner:
    """An event loop in a daemon thread; run(coro) blocks the caller until coro is done."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="raftkv-client",
                                        daemon=True)
        self._thread.start()

    def run(self, coro):
        assert threading.current_thread() is not self._thread, "blocking call on the loop"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self):
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


class _Blocking:
    """Forwards attribute access to an object on the runner's loop, blocking on coroutines."""

    def __init__(self, target, runner):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        runner = self._runner

        def call(*args, **kw):
            if inspect.iscoroutinefunction(attr):
                return _wrap(runner.run(attr(*args, **kw)), runner)
            return _wrap(attr(*args, **kw), runner)

        call.__name__ = name
        call.__doc__ = attr.__doc__
        return call

    def __repr__(self):
        return repr(self._target)  # Lease(id=..., granted_ttl=...), not the wrapper's

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class _BlockingWatch:
    """A watch's events (or Election.observe()'s answers) as a blocking iterator."""

    def __init__(self, watch, runner, stop=None):
        self._watch = watch
        self._runner = runner
        self._stop = stop  # a coroutine function that ends the watch (else its own cancel)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self._runner.run(self._watch.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def responses(self):
        """The rest of the watch as WatchResponses (Watch.responses()), a blocking iterator;
        cancel() on either iterator stops the watch."""
        return _BlockingWatch(self._watch.responses(), self._runner, self._watch.cancel)

    def cancel(self):
        # Cancelling must work while another thread is blocked in __next__, so it is not
        # serialized behind it: it runs as its own task on the loop.
        stop = self._stop or getattr(self._watch, "cancel", None) or self._watch.aclose
        self._runner.run(stop())


class _Subscription:
    """One add_watch_callback watch of the blocking Client, as the callback thread sees it."""

    __slots__ = ("callback", "live", "watch_id")

    def __init__(self, callback):
        self.callback = callback
        self.live = True  # False once cancelled or ended: nothing more is delivered
        self.watch_id = None  # known once add_watch_callback has returned


class _CallbackThread:
    """Calls the blocking Client's watch callbacks on one daemon thread, in the order the
    responses came (all watches share it, as python-etcd3's watcher thread: a slow callback
    delays the others). The loop only queues (watch.CallbackWatch with a non-blocking
    callback); this thread calls. A callback runs with _lock held, so cancel_watch, which
    takes it, returns only once a callback already running has returned, and none runs
    after; the lock is re-entrant, so a callback may cancel its own watch."""

    def __init__(self):
        self._queue = queue.SimpleQueue()  # (subscription, response or error); None: stop
        self._lock = threading.RLock()
        self._subs = {}  # watch id -> live _Subscription
        self._thread = None

    def add(self, runner, start, callback):
        """start(enqueue) is the AsyncClient coroutine that registers enqueue as the
        loop-side callback and returns the watch id."""
        sub = _Subscription(callback)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="raftkv-watch-callbacks",
                                            daemon=True)
            self._thread.start()
        watch_id = runner.run(start(lambda item: self._queue.put((sub, item))))
        with self._lock:
            sub.watch_id = watch_id
            if sub.live:  # it may already have ended with an error
                self._subs[watch_id] = sub
        return watch_id

    def cancel(self, watch_id):
        sub = self._subs.get(watch_id)
        if sub is not None:
            sub.live = False  # first, so that no call starts while we wait for the lock
        with self._lock:  # then wait for a callback that is running
            self._subs.pop(watch_id, None)

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            sub, payload = item
            with self._lock:
                if not sub.live:
                    continue
                try:
                    sub.callback(payload)
                except Exception:  # noqa: BLE001 -- a faulty callback must not stop the rest
                    _log.exception("raftkv watch callback failed")
                if isinstance(payload, BaseException):  # the watch's last call
                    sub.live = False
                    self._subs.pop(sub.watch_id, None)

    def stop(self):
        """Deliver nothing more (the Client is closing) and let the thread end."""
        with self._lock:
            for sub in self._subs.values():
                sub.live = False
            self._subs.clear()
        if self._thread is None:
            return
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(CLOSE_TIMEOUT_S)


def _wrap(result, runner):
    if isinstance(result, (Lease, Lock, Election, Session)):
        return _Blocking(result, runner)
    if inspect.isasyncgen(result):  # Election.observe()
        return _BlockingWatch(result, runner)
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], Watch):
        w = _BlockingWatch(result[0], runner)
        return w, w.cancel
    return result


class Client(_Blocking):
    """Blocking client: Client(endpoints=["127.0.0.1:2379"], timeout=5.0); see AsyncClient,
    also for Unix socket endpoints and the TLS and authentication arguments."""

    def __init__(self, endpoints=("127.0.0.1:2379",), timeout=5.0, prefer_leader=True, *,
                 ca_cert=None, cert_key=None, cert_cert=None, insecure_skip_verify=False,
                 user=None, password=None, server_name=None, wait_for_leader=False):
        runner = _Runner()

        async def make():
            return AsyncClient(endpoints, timeout, prefer_leader, ca_cert=ca_cert,
                               cert_key=cert_key, cert_cert=cert_cert,
                               insecure_skip_verify=insecure_skip_verify, user=user,
                               password=password, server_name=server_name,
                               wait_for_leader=wait_for_leader)

        try:
            target = runner.run(make())
        except BaseException:
            runner.stop()  # a bad argument (a TLS file, say) must not leave the thread behind
            raise
        super().__init__(target, runner)
        object.__setattr__(self, "_callbacks", _CallbackThread())

    def __repr__(self):
        return "Client" + repr(self._target)[len("AsyncClient"):]

    def lock(self, name, ttl=60, *, prefix=LOCK_PREFIX, lease=None):
        lease = lease._target if isinstance(lease, _Blocking) else lease
        return _Blocking(self._target.lock(name, ttl, prefix=prefix, lease=lease),
                         self._runner)

    def election(self, name, ttl=60, *, lease=None):
        lease = lease._target if isinstance(lease, _Blocking) else lease
        return _Blocking(self._target.election(name, ttl, lease=lease), self._runner)

    def add_watch_callback(self, key, callback, **kw):
        """AsyncClient.add_watch_callback, with callback called from the Client's callback
        thread (see _CallbackThread), so it may block and may call this Client."""
        return self._callbacks.add(
            self._runner, lambda enqueue: self._target.add_watch_callback(key, enqueue, **kw),
            callback)

    def add_watch_prefix_callback(self, prefix, callback, **kw):
        return self.add_watch_callback(prefix, callback, prefix=True, **kw)

    def cancel_watch(self, watch_id):
        """Stop a callback watch; once this returns its callback is not running (unless
        this is called from it) and is not called again. False if unknown or ended."""
        self._callbacks.cancel(watch_id)
        return self._runner.run(self._target.cancel_watch(watch_id))

    def close(self):
        try:
            self._runner.run(self._target.close())
        finally:
            self._callbacks.stop()
            self._runner.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
