"""A watch on the native protocol: an async iterator of Events that survives failover.

If the connection breaks (or the member answers NOT_LEADER and the like), the watch is opened
again on the next endpoint from the revision after the last one it delivered, so no event is
lost or repeated, as etcd's clientv3 does. A watch from a compacted revision (or resumed at one)
raises RevisionCompactedError instead of ending quietly.

A watch opened with progress_notify also yields a ProgressNotify(revision) whenever the member
sent a progress notification (an item with no events: nothing happened for its
--experimental-watch-progress-notify-interval); the resume point moves past that revision.

`responses()` iterates the same items grouped as the member sent them: a WatchResponse
(its header and events) per item, as etcdctl's -w json prints one line per response.

CallbackWatch hands those WatchResponses to a function instead (AsyncClient's
add_watch_callback, python-etcd3's): in order, on the client's event loop; an error that ends
the watch is handed over too, as the last call.
"""
from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import time

from raftkv.api import wire
from raftkv.client.errors import RevisionCompactedError
from raftkv.client.types import Event, ProgressNotify, WatchResponse

_RESUME_CODES = frozenset({"NOT_LEADER", "NO_LEADER", "LEADER_CHANGED", "STOPPED"})
CANCEL_TIMEOUT_S = 1.0  # cancel is best effort: a dead connection ends the watch anyway
# CallbackWatch.cancel waits this long for a callback that is running to return; then the
# delivering task is cancelled (an async callback is interrupted at its next await).
CALLBACK_DRAIN_S = 5.0

_log = logging.getLogger(__name__)


class Watch:
    def __init__(self, client, body):
        self._client = client
        self._body = dict(body)
        self._conn = None
        self._request_id = None
        self._queue = None
        # WatchResponses not yet handed out whole (responses()) or event by event (iteration);
        # never one with no events left.
        self._pending = collections.deque()
        self._next_revision = 0  # resume point: 1 + the last revision delivered
        self._canceled = False
        self.watch_id = None  # the request id of the current stream
        self._token = None  # the auth token the current stream was opened with
        self._first = None  # a stream's first item when it was not "created" (see start)
        self._reauthenticated = False  # once per stream: a fresh token that fails is final

    async def start(self):
        deadline = time.monotonic() + self._client.timeout
        body = dict(self._body)
        if self._next_revision:
            body["start_revision"] = self._next_revision
        body = await self._client.with_token(body)
        self._token = body.get("token")
        self._conn = await self._client.connection(deadline)
        self._request_id, self._queue = self._conn.open_stream("watch", body)
        self.watch_id = self._request_id
        # Return once the member registered the watcher: a write made after watch() returns
        # is then always seen. Anything else first (an error, the end) is left for __anext__.
        try:
            first = await asyncio.wait_for(self._queue.get(),
                                           max(deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            return  # the events, or an error, still come through __anext__
        status, payload = first
        if status == wire.STATUS_ITEM and isinstance(payload, dict) and payload.get("created"):
            if not self._next_revision:
                rev = payload.get("header", {}).get("revision", 0)
                self._next_revision = rev + 1 if rev else 0
            return
        self._first = first

    def __aiter__(self):
        return self

    async def __anext__(self):
        resp = await self._next_pending()
        if len(resp.events) == 1:
            self._pending.popleft()
        return resp.events.pop(0)

    async def responses(self):
        """The rest of the watch as the member sent it: one WatchResponse per item with
        events (or with a ProgressNotify). Ends as the iterator does."""
        while True:
            try:
                await self._next_pending()
            except StopAsyncIteration:
                return
            yield self._pending.popleft()

    async def _next_pending(self):
        while not self._pending:
            if self._canceled:
                raise StopAsyncIteration
            if self._first is not None:
                (status, payload), self._first = self._first, None
            else:
                status, payload = await self._queue.get()
            if status == wire.STATUS_ITEM:
                self._take(payload)
            elif status in (wire.STATUS_END, wire.STATUS_OK) or self._canceled:
                raise StopAsyncIteration
            else:
                await self._on_error(payload)
        assert self._pending[0].events, "a pending response has events"
        return self._pending[0]

    def _take(self, payload):
        compacted = payload.get("compact_revision")
        if compacted:  # the server canceled the watch: its start revision is gone
            self._canceled = True
            raise RevisionCompactedError(compacted, payload.get("header") or {})
        self._reauthenticated = False
        events = [Event.from_wire(ev) for ev in payload.get("events", [])]
        for ev in events:
            self._next_revision = max(self._next_revision, ev.mod_revision + 1)
        rev = payload.get("header", {}).get("revision", 0)
        if not events and not self._next_revision:
            self._next_revision = rev + 1 if rev else 0
        if not events and rev and self._body.get("progress_notify") and \
                not payload.get("created"):
            self._next_revision = max(self._next_revision, rev + 1)  # a bookmark
            events = [ProgressNotify(rev)]
        if events:
            self._pending.append(WatchResponse(payload.get("header") or {}, events))

    async def _on_error(self, payload):
        err = wire.RaftkvError.from_wire(payload) if payload else None
        if err is not None and err.code == "INVALID_AUTH_TOKEN" and \
                self._client.user is not None and not self._reauthenticated:
            self._reauthenticated = True  # the token expired: authenticate, start again
            self._client.forget_token(self._token)
            await self.start()
            return
        if err is not None and err.code not in _RESUME_CODES:
            raise err
        self._client._failover(self._conn)
        await self.start()

    async def cancel(self):
        """Stop the watch; the iterator ends after the events already received."""
        if self._canceled:
            return
        self._canceled = True
        conn, request_id = self._conn, self._request_id
        if conn is not None and conn.is_open:
            try:
                await asyncio.wait_for(conn.request("watch_cancel", {"watch_id": request_id}),
                                       CANCEL_TIMEOUT_S)
            except (wire.RaftkvError, ConnectionError, asyncio.TimeoutError):
                pass  # the stream is closed locally below in any case
            conn.close_stream(request_id)
        if self._queue is not None:
            self._queue.put_nowait((wire.STATUS_END, None))


class CallbackWatch:
    """A started Watch whose WatchResponses go to callback(response), one call at a time in
    the order the member sent them, from a task on the client's loop. callback may be a plain
    function (it must not block the loop) or a coroutine function (awaited before the next
    response). An exception the callback raises is logged and the watch goes on, as in
    python-etcd3. An error that ends the watch (RevisionCompactedError, a request error, no
    endpoint left) is passed to the callback as the last call. `done` is called once when
    delivery stops, whatever the reason."""

    def __init__(self, watch, callback, done):
        assert callable(callback)
        self._watch = watch
        self._callback = callback
        self.canceled = False  # set by cancel()/stop(): nothing more is delivered
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._task.add_done_callback(lambda _t: done())

    async def _run(self):
        try:
            async for resp in self._watch.responses():
                if self.canceled:
                    return
                await self._deliver(resp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- any error ends the watch: tell the callback
            if not self.canceled:
                await self._deliver(exc)

    async def _deliver(self, item):
        try:
            result = self._callback(item)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 -- a faulty callback must not end the watch
            _log.exception("raftkv watch callback failed")

    async def cancel(self):
        """Stop the watch. Once this returns the callback is not running (unless this is
        called from the callback itself) and is not called again."""
        self.canceled = True
        await self._watch.cancel()
        task = self._task
        if task is asyncio.current_task() or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), CALLBACK_DRAIN_S)
        except asyncio.TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def stop(self):
        """Stop delivering at once, without telling the member (the client is closing)."""
        self.canceled = True
        self._task.cancel()
