"""Client: the blocking twin of AsyncClient, with the same methods.

It runs an event loop in a daemon thread and forwards every call to an AsyncClient living on
that loop. Returned Lease and Lock objects are wrapped the same way, and a watch's events
become a plain iterator. Safe to use from several threads: calls are serialized onto the loop.
"""
from __future__ import annotations

import asyncio
import inspect
import threading

from raftkv.client.aio import AsyncClient
from raftkv.client.election import Election
from raftkv.client.lease import Lease, Session
from raftkv.client.lock import LOCK_PREFIX, Lock
from raftkv.client.watch import Watch

CLOSE_TIMEOUT_S = 5.0  # waiting for the loop thread to stop


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

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class _BlockingWatch:
    """A watch's events (or Election.observe()'s answers) as a blocking iterator."""

    def __init__(self, watch, runner):
        self._watch = watch
        self._runner = runner

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self._runner.run(self._watch.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def cancel(self):
        # Cancelling must work while another thread is blocked in __next__, so it is not
        # serialized behind it: it runs as its own task on the loop.
        stop = getattr(self._watch, "cancel", None) or self._watch.aclose  # observe()
        self._runner.run(stop())


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
                 user=None, password=None, server_name=None):
        runner = _Runner()

        async def make():
            return AsyncClient(endpoints, timeout, prefer_leader, ca_cert=ca_cert,
                               cert_key=cert_key, cert_cert=cert_cert,
                               insecure_skip_verify=insecure_skip_verify, user=user,
                               password=password, server_name=server_name)

        try:
            target = runner.run(make())
        except BaseException:
            runner.stop()  # a bad argument (a TLS file, say) must not leave the thread behind
            raise
        super().__init__(target, runner)

    def lock(self, name, ttl=60, *, prefix=LOCK_PREFIX, lease=None):
        lease = lease._target if isinstance(lease, _Blocking) else lease
        return _Blocking(self._target.lock(name, ttl, prefix=prefix, lease=lease),
                         self._runner)

    def election(self, name, ttl=60, *, lease=None):
        lease = lease._target if isinstance(lease, _Blocking) else lease
        return _Blocking(self._target.election(name, ttl, lease=lease), self._runner)

    def close(self):
        try:
            self._runner.run(self._target.close())
        finally:
            self._runner.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
