"""etcdserverpb.Watch: one bidi stream carrying many watchers.

Per stream: create requests get a watch_id (the client's own when it chose one, else the lowest
free id counting from 0) and a `created` response whose header revision is the store's current
revision; the watcher then runs `service.watch(body)` from that revision + 1 (or the requested
start_revision) and its batches become responses carrying its watch_id. A batch with
`compact_revision` ends the watcher with canceled=true and that revision, as etcd does; a
RaftkvError ends it with canceled=true and the message as cancel_reason. Cancel requests stop the
watcher and answer canceled=true; progress requests answer with the current header and
watch_id -1 (broadcast to every watcher of the stream). Watchers created with progress_notify
get the service's progress notifications (an empty response every
--experimental-watch-progress-notify-interval without an event, only while the watcher has
everything up to the revision it carries: a bookmark, as etcd sends them). Responses larger
than the request limit are split into fragments when the watcher asked for it. A stream sent
with gRPC metadata hasleader=true (etcdctl watch does) is refused with "etcdserver: no leader"
when the member's status reports no leader.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from raftkv.api.etcd.convert import RaftkvError, abort, current_header, fill, status_code
from raftkv.api.etcd.convert import with_identity
from raftkv.api.etcd.proto import rpc_pb2, rpc_pb2_grpc
from raftkv.mvcc.auth import interval

log = logging.getLogger(__name__)

DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_RANGE = "mvcc: watcher range is empty"
_NOPUT, _NODELETE = 0, 1
_EVENT_OVERHEAD = 6  # tag + length prefix of one embedded Event, upper bound for sizing


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    def __init__(self, service, *, max_response_bytes):
        self._service = service
        self._max_bytes = max_response_bytes

    async def Watch(self, request_iterator, context):
        if _wants_leader(context):
            await self._require_leader(context)
        stream = _WatchStream(self._service, self._max_bytes, with_identity(context, {}))
        reader = asyncio.ensure_future(stream.read(request_iterator))
        try:
            while True:
                response = await stream.out.get()
                if isinstance(response, RaftkvError):  # the reader failed: end the RPC
                    await abort(context, response)
                yield response
        finally:
            reader.cancel()
            await stream.close()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


    async def _require_leader(self, context):
        """etcd refuses a stream sent with metadata hasleader=true when there is no leader."""
        try:
            status = await self._service.call("status", {})
        except RaftkvError as exc:
            await abort(context, exc)
        if not status.get("leader"):
            await abort(context, RaftkvError("NO_LEADER"))


def _wants_leader(context):
    metadata = context.invocation_metadata() or ()
    return any(item.key == "hasleader" and item.value == "true" for item in metadata)


class _Watcher:
    def __init__(self, watch_id, create):
        self.watch_id = watch_id
        self.create = create
        self.tasks = []


class _WatchStream:
    def __init__(self, service, max_bytes, who=None):
        self.service = service
        self.who = who or {}  # who the client is (token, certificate), sent with each watch
        self.max_bytes = max_bytes
        self.out = asyncio.Queue()
        self.watchers = {}
        self.next_id = 0

    async def read(self, request_iterator):
        """Handle requests in order. A client half-close leaves the stream open (as etcd)."""
        try:
            async for request in request_iterator:
                kind = request.WhichOneof("request_union")
                if kind == "create_request":
                    await self._create(request.create_request)
                elif kind == "cancel_request":
                    await self._cancel(request.cancel_request.watch_id)
                elif kind == "progress_request":
                    self._send(await current_header(self.service), watch_id=-1)
        except RaftkvError as exc:
            self.out.put_nowait(exc)
        except Exception:  # a bug: log it and end the RPC rather than hang it
            log.exception("watch stream failed")
            self.out.put_nowait(RaftkvError("INTERNAL"))

    def _send(self, header, **fields):
        self.out.put_nowait(fill(rpc_pb2.WatchResponse(), dict(fields, header=header)))

    async def _create(self, create):
        header = await current_header(self.service)
        watch_id = create.watch_id
        refused = await self._not_permitted(create) or (
            EMPTY_RANGE if _empty_range(create) else
            DUPLICATE_ID if watch_id and watch_id in self.watchers else None)
        if refused:  # as etcd's recvLoop: the user's permission, then watchStream.Watch's
            # checks, the range first, then the id; no id used
            self._send(header, watch_id=-1, created=True, canceled=True, cancel_reason=refused)
            return
        if not watch_id:
            while self.next_id in self.watchers:
                self.next_id += 1
            watch_id, self.next_id = self.next_id, self.next_id + 1
        watcher = _Watcher(watch_id, create)
        self.watchers[watch_id] = watcher
        self._send(header, watch_id=watch_id, created=True)
        # progress_notify: the service's notifications, which it sends only while the watcher
        # has been given everything up to their revision.
        body = {"key": create.key, "range_end": create.range_end,
                "start_revision": create.start_revision or header.get("revision", 0) + 1,
                "prev_kv": create.prev_kv, "filters": list(create.filters),
                "progress_notify": create.progress_notify}
        body.update(self.who)
        watcher.tasks.append(asyncio.ensure_future(self._run(watcher, body)))

    async def _not_permitted(self, create):
        """etcd's cancel reason for a watch its user may not create (the gRPC error as text),
        or None."""
        try:
            await self.service.call("watch_check", dict(self.who, key=create.key,
                                                        range_end=create.range_end))
        except RaftkvError as exc:
            words = status_code(exc).name.split("_")
            return f"rpc error: code = {''.join(w.capitalize() for w in words)} " \
                   f"desc = {exc.message}"
        return None

    async def _cancel(self, watch_id):
        watcher = self.watchers.pop(watch_id, None)
        if watcher is None:
            return  # etcd answers nothing for an unknown id
        await _stop(watcher)
        self._send(await current_header(self.service), watch_id=watch_id, canceled=True)

    async def _run(self, watcher, body):
        """Forward one watcher's batches until it ends, is compacted or fails."""
        final = {"canceled": True}
        try:
            async for batch in self.service.watch(body):
                if batch.get("created"):
                    continue  # this stream sent its own created response already
                if batch.get("compact_revision"):
                    # Its header has revision 0, as etcd 3.4's (the service's answer has it so
                    # already). etcd keeps the id on the stream until the client cancels it
                    # (watchStream.Cancel answers; a create with that id is a duplicate; an
                    # automatic id skips it).
                    self._send(batch.get("header", {}),
                               watch_id=watcher.watch_id, canceled=True,
                               compact_revision=batch["compact_revision"])
                    return
                self._deliver(watcher, batch)
        except RaftkvError as exc:
            final = {"canceled": True, "cancel_reason": exc.message}
        except Exception:  # a bug: log it and cancel this watcher rather than hang it
            log.exception("watcher %d failed", watcher.watch_id)
            final = {"canceled": True, "cancel_reason": RaftkvError("INTERNAL").message}
        if self.watchers.get(watcher.watch_id) is not watcher:
            return
        del self.watchers[watcher.watch_id]
        for task in watcher.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._send(await self._header_or_empty(), watch_id=watcher.watch_id, **final)

    async def _header_or_empty(self):
        try:
            return await current_header(self.service)
        except RaftkvError:
            return {}

    def _deliver(self, watcher, batch):
        events = batch.get("events")
        header = batch.get("header", {})
        if not events:  # the service's own progress notification
            self.out.put_nowait(_response(header, watcher.watch_id, []))
            return
        events = _filtered(events, watcher.create)
        if not events:
            return
        newest = max(ev.get("kv", {}).get("mod_revision", 0) for ev in events)
        if header.get("revision", 0) < newest:  # a header never precedes its events
            header = dict(header, revision=newest)
        if not watcher.create.prev_kv:
            events = [{k: v for k, v in ev.items() if k != "prev_kv"} for ev in events]
        response = _response(header, watcher.watch_id, events)
        if watcher.create.fragment:
            for part in fragments(response, self.max_bytes):
                self.out.put_nowait(part)
        else:
            self.out.put_nowait(response)

    async def close(self):
        watchers, self.watchers = list(self.watchers.values()), {}
        for watcher in watchers:
            await _stop(watcher)


async def _stop(watcher):
    for task in watcher.tasks:
        task.cancel()
    for task in watcher.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _empty_range(create):
    """A range that holds no key: range_end at or below the key (an empty key is "\\0", as
    etcd reads it; auth.interval is the store's one reading of [key, range_end))."""
    lo, hi = interval(create.key or b"\0", create.range_end)
    return hi is not None and lo >= hi


def _filtered(events, create):
    dropped = set()
    for kind in create.filters:
        dropped.add(0 if kind == _NOPUT else 1 if kind == _NODELETE else -1)
    if not dropped:
        return events
    return [ev for ev in events if ev.get("type", 0) not in dropped]


def _response(header, watch_id, events):
    return fill(rpc_pb2.WatchResponse(), {"header": header, "watch_id": watch_id,
                                          "events": events})


def fragments(response, max_bytes):
    """Split a WatchResponse into pieces of about max_bytes (at least one event each); every
    piece but the last has fragment=true. A response under the limit is returned whole."""
    if response.ByteSize() < max_bytes or len(response.events) < 2:
        return [response]
    base = rpc_pb2.WatchResponse()
    base.CopyFrom(response)
    del base.events[:]
    base_size = base.ByteSize()
    parts, current, size = [], None, 0
    for event in response.events:
        event_size = event.ByteSize() + _EVENT_OVERHEAD
        if current is not None and len(current.events) and size + event_size >= max_bytes:
            parts.append(current)
            current = None
        if current is None:
            current = rpc_pb2.WatchResponse()
            current.CopyFrom(base)
            current.fragment = True
            size = base_size
        current.events.add().CopyFrom(event)
        size += event_size
    current.fragment = False
    parts.append(current)
    return parts
