"""Watchers: ordered, gap-free, duplicate-free event delivery per revision.

Delivery contract (asyncio-agnostic). ``store.watch(...)`` returns a Watcher. Its consumer
calls ``watcher.take()`` until it returns [] and then waits for ``on_ready(watcher)``, which is
called (from the thread that called ``store.committed()`` or ``store.watch()``) whenever
take() has something new. An asyncio server passes e.g. ``lambda w:
loop.call_soon_threadsafe(event.set)``. take() returns WatchResponse dicts:
``{"watch_id", "header": {"revision"}, "events": [...]}``; a compacted watcher gets one
``{"watch_id", "header": {"revision": 0}, "events": [], "compact_revision": N, "canceled":
True}`` and stops.

A watcher is *synced* (it gets each committed batch pushed into its queue) or *unsynced* (it
catches up from the history in LMDB when take() finds its queue empty). A watcher starting at
a past revision begins unsynced; a synced watcher whose queue would exceed ``queue_events``
becomes unsynced and later catches up from history: slow watchers never lose events.
Single-key watchers are indexed by key (a dict); range watchers are checked per event.
"""
from __future__ import annotations

import itertools

from raftkv.mvcc import codec
from raftkv.mvcc.codec import SUB_BITS

QUEUE_EVENTS_DEFAULT = 1024
CATCHUP_EVENTS_DEFAULT = 1000  # events per take() while catching up (whole revisions)
NOPUT, NODELETE = 0, 1
_SHIFT = SUB_BITS + 1


class Watcher:
    def __init__(self, hub, wid, key, end, prev_kv, filters, progress, on_ready):
        self.hub = hub
        self.id = wid
        self.key = key
        self.end = end  # None: single key; b"\0"-ended ranges become end=None with is_range
        self.is_range = bool(end)
        self.range_end = None if end == b"\0" else end
        self.prev_kv = prev_kv
        self.no_put = NOPUT in filters
        self.no_delete = NODELETE in filters
        self.progress = progress
        self.on_ready = on_ready
        self.synced = True
        self.next_rev = 0  # unsynced: first revision not yet queued; synced: min revision
        self.canceled = False
        self.compact_revision = 0
        self.created_rev = 0  # the store's revision when the watcher was registered
        self.queue = []  # WatchResponse dicts not yet taken
        self.queued_events = 0

    def matches(self, key):
        if not self.is_range:
            return key == self.key
        return key >= self.key and (self.range_end is None or key < self.range_end)

    def take(self):
        """The responses ready now ([] when there is nothing until the next on_ready)."""
        return self.hub.take(self)

    def progress_response(self):
        """An empty response carrying the revision if fully caught up, else None."""
        return self.hub.progress(self)

    def cancel(self):
        self.hub.cancel(self)


class WatcherHub:
    def __init__(self, store, queue_events):
        self.store = store
        self.queue_events = queue_events
        self.catchup_events = CATCHUP_EVENTS_DEFAULT
        self._ids = itertools.count(1)
        self._by_key = {}  # key -> {id: watcher}
        self._ranges = {}  # id -> watcher
        self._watchers = {}

    def __len__(self):
        return len(self._watchers)

    def watch(self, key, range_end, start_revision, prev_kv, filters, progress, on_ready):
        store = self.store
        with store._lock:
            w = Watcher(self, next(self._ids), key, range_end, prev_kv, tuple(filters or ()),
                        progress, on_ready)
            self._watchers[w.id] = w
            if w.is_range:
                self._ranges[w.id] = w
            else:
                self._by_key.setdefault(key, {})[w.id] = w
            current = store._committed_rev
            w.created_rev = current  # the watcher gets every event after this revision
            if 0 < start_revision <= current:
                w.synced, w.next_rev = False, start_revision
            else:
                w.next_rev = start_revision
        if not w.synced:
            self.notify([w])
        return w

    def cancel(self, w):
        with self.store._lock:
            w.canceled = True
            self._watchers.pop(w.id, None)
            self._ranges.pop(w.id, None)
            group = self._by_key.get(w.key)
            if group is not None:
                group.pop(w.id, None)
                if not group:
                    del self._by_key[w.key]

    def notify(self, ready):
        for w in ready:
            if w.on_ready is not None and not w.canceled:
                w.on_ready(w)

    # ---- synced delivery (called by store.committed() under the store lock) ----------------

    def dispatch(self, events, old_rev, new_rev):
        """Queue a committed batch's events for synced watchers; returns watchers to wake."""
        if not events or not self._watchers:
            return []
        per = {}
        by_key, ranges = self._by_key, self._ranges.values()
        for ev in events:
            key = ev[1][0]
            group = by_key.get(key)
            if group:
                for w in group.values():
                    per.setdefault(w, []).append(ev)
            for w in ranges:
                if w.matches(key):
                    per.setdefault(w, []).append(ev)
        ready = []
        reader = _Reader(self.store)
        try:
            for w, evs in per.items():
                if w.synced and self._deliver(w, evs, old_rev, new_rev, reader):
                    ready.append(w)
        finally:
            reader.close()
        return ready

    def _deliver(self, w, evs, old_rev, new_rev, reader):
        out = [reader.event(ev, w.prev_kv) for ev in evs
               if ev[0] >> _SHIFT >= w.next_rev and _wanted(w, ev[0])]
        if not out:
            return False
        if w.queued_events + len(out) > self.queue_events:
            w.synced, w.next_rev = False, max(old_rev + 1, w.next_rev)  # catch up later
            return True
        was_empty = not w.queue
        w.queue.append({"watch_id": w.id, "header": {"revision": new_rev}, "events": out})
        w.queued_events += len(out)
        return was_empty

    def resync_all(self, old_rev):
        """After a restore: every watcher catches up from the restored history."""
        for w in self._watchers.values():
            if w.synced:
                w.synced, w.next_rev = False, max(old_rev + 1, w.next_rev)
        return list(self._watchers.values())

    # ---- taking and catching up -------------------------------------------------------------

    def take(self, w):
        with self.store._lock:
            if w.queue:
                out, w.queue, w.queued_events = w.queue, [], 0
                return out
            if w.synced or w.canceled:
                return []
            return self._catch_up(w)

    def progress(self, w):
        with self.store._lock:
            if w.synced and not w.queue and not w.canceled:
                return {"watch_id": w.id, "header": {"revision": self.store._committed_rev},
                        "events": []}
            return None

    def _catch_up(self, w):
        """Read one bounded batch of w's history from LMDB; mark w synced when caught up."""
        store = self.store
        current = store._committed_rev
        if w.next_rev < store._compact:
            # Header revision 0, as etcd 3.4 sends it: its compacted watch response carries
            # no store revision (checked on 3.4.23 over gRPC).
            resp = {"watch_id": w.id, "header": {"revision": 0}, "events": [],
                    "compact_revision": store._compact, "canceled": True}
            self.cancel(w)
            w.compact_revision = store._compact
            return [resp]
        reader = _Reader(store)
        try:
            events, last = reader.history(w, current, self.catchup_events)
        finally:
            reader.close()
        if last >= current:
            w.synced, w.next_rev = True, 0
        else:
            w.next_rev = last + 1
        if not events:
            return [] if w.synced else self._catch_up(w)
        return [{"watch_id": w.id, "header": {"revision": current}, "events": events}]


def _wanted(w, entry):
    return not (w.no_delete if entry & 1 else w.no_put)


class _Reader:
    """Committed-state reads for building events (one LMDB read txn, opened lazily)."""

    def __init__(self, store):
        self.store = store
        self.txn = None

    def _get(self, entry):
        if self.txn is None:
            self.txn = self.store.engine.env.begin()
        raw = self.txn.get(codec.rev_key(entry), db=self.store._kv)
        return None if raw is None else codec.unpackb(raw)

    def close(self):
        if self.txn is not None:
            self.txn.abort()
            self.txn = None

    def event(self, ev, want_prev):
        entry, fields, prev_entry = ev
        out = {"type": entry & 1, "kv": codec.kv_dict(fields)}
        if not entry & 1 and fields[1] == fields[2]:  # a create event: etcd sends no prev_kv
            return out
        if want_prev and prev_entry is not None and prev_entry >> _SHIFT == entry >> _SHIFT:
            prev_entry = self._before_txn(fields[0], entry)
        if want_prev and prev_entry is not None:
            prev = self._get(prev_entry)
            if prev is not None:
                out["prev_kv"] = codec.kv_dict(prev)
        return out

    def _before_txn(self, key, entry):
        """The key's live entry before entry's revision, or None. etcd reads an event's prev_kv
        at its revision - 1, so a key changed twice by one txn has, on both events, its value
        from before the txn (not the txn's own earlier change)."""
        ki = self.store._index.get(key)
        return None if ki is None else ki.before(entry >> _SHIFT << _SHIFT)

    def history(self, w, current, max_events):
        """w's events from w.next_rev up to `current`, whole revisions, about max_events.
        Returns (events, last main revision scanned)."""
        if self.txn is None:
            self.txn = self.store.engine.env.begin()
        events, last = [], w.next_rev - 1
        cur = self.txn.cursor(db=self.store._kv)
        if not cur.set_range(codec.main_key(w.next_rev)):
            return events, current
        for dbkey, raw in cur:
            entry = codec.key_entry(dbkey)
            main = entry >> _SHIFT
            if main > current:
                return events, current
            if main != last and len(events) >= max_events:
                return events, last
            last = main
            fields = codec.unpackb(raw)
            if not w.matches(fields[0]) or not _wanted(w, entry):
                continue
            prev = self._before_txn(fields[0], entry) if w.prev_kv else None
            events.append(self.event((entry, fields, prev), w.prev_kv))
        return events, current
