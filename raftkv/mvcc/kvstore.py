"""KVStore: etcd v3's MVCC state machine over LMDB (docs/INTERNAL_API.md §4).

Commit protocol. ``apply(txn, index, requests)`` writes every change, the applied index and the
revisions into the caller's LMDB write txn and updates the in-memory state (key index, leases)
at once. The caller commits the txn, then calls ``committed()``: reads start to see the new
revision and watchers get the events. If the txn fails instead, the caller calls ``aborted()``,
which drops the pending events and rebuilds the in-memory state from LMDB (the last committed
state). Several apply() calls may share one txn before committed()/aborted().

Reads (``range``) run at or below the last *committed* revision, with their own LMDB read txn,
so a read between apply() and committed() never sees uncommitted data. A lock makes apply,
range, watch creation and committed() mutually exclusive; they are short.

Determinism: everything apply() does depends only on the log, except the quota alarm (backend
size is local; etcd raises its alarm through the log, the server should too) and the pace of
physical compaction (invisible to clients: reads below the compact revision are errors).
"""
from __future__ import annotations

import logging
import struct
import threading

import msgpack

from raftkv.errors import RaftkvError
from raftkv.mvcc import auth as auth_mod, codec, lease as lease_mod, query, snapshot, txncheck, \
    watch
from raftkv.mvcc.codec import SUB_BITS, rev_key, unpackb
from raftkv.mvcc.index import KeyIndex, apply_puts, load_index
from raftkv.storage import BTree

MAX_TXN_OPS_DEFAULT = 128  # etcd --max-txn-ops
COMPACTION_BATCH_DEFAULT = 1000  # keys compacted physically per apply() call
_SHIFT = SUB_BITS + 1
# The sub-dbs in_use_bytes counts: the MVCC store's and the Raft log's (storage/logstore.py).
IN_USE_DBS = tuple(n.encode() if isinstance(n, str) else n
                   for n in (codec.KV_DB, codec.META_DB, codec.LEASE_DB, "log", "meta"))
_MAIN_KEY = struct.Struct(">Q1sQ").pack  # codec.rev_key of (main, sub) without the int shuffle


META_ALARM = b"alarm_nospace"
META_CORRUPT = b"alarm_corrupt"  # 1 while the CORRUPT alarm is raised
META_CORRUPT_MEMBER = b"alarm_corrupt_member"  # the member it names
ALARM_NOSPACE, ALARM_CORRUPT = 1, 2  # etcdserverpb.AlarmType
# What a CORRUPT alarm stops (etcd's corrupt applier): every write, internal ones included.
CORRUPT_STOPS = frozenset({"put", "puts", "delete_range", "txn", "compact", "lease_grant",
                           "lease_revoke"})

log = logging.getLogger("raftkv.mvcc")
# What a handler raises on input it did not expect (the apply answers INTERNAL for these).
_BAD_INPUT_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError,
                     RecursionError, struct.error)


class _Write:
    """One apply() call's write context: the txn, the pending "kv" puts, the revision."""

    __slots__ = ("txn", "pending", "main", "sub")

    def __init__(self, txn):
        self.txn = txn
        self.pending = {}  # rev_key -> packed fields, flushed with putmulti(append=True)
        self.main = 0
        self.sub = 0


class KVStore:
    def __init__(self, engine, *, quota_bytes=0, max_txn_ops=MAX_TXN_OPS_DEFAULT,
                 min_lease_ttl=lease_mod.MIN_TTL_DEFAULT,
                 compaction_batch=COMPACTION_BATCH_DEFAULT,
                 watch_queue_events=watch.QUEUE_EVENTS_DEFAULT,
                 auth_token_ttl_s=auth_mod.TOKEN_TTL_DEFAULT_S, auth_jwt=None):
        self.engine = engine
        self.quota_bytes = quota_bytes
        self.max_txn_ops = max_txn_ops
        self.min_lease_ttl = min_lease_ttl
        self.compaction_batch = compaction_batch
        self.alarm = False  # NO_SPACE alarm: set when the backend exceeds quota_bytes
        self.corrupt = False  # CORRUPT alarm: a member's data differs from the others'
        self.corrupt_member = 0  # ... that member's ID
        self._open_handles()
        # The online defrag reopens the store on a compacted copy of the same data: new
        # sub-db handles, while the in-memory state (key index, leases) stays valid.
        engine.on_reopen(self._open_handles)
        self._lock = threading.RLock()
        self._pack = msgpack.Packer(use_bin_type=True).pack  # used under self._lock only
        self._lease_listeners = []
        self.hub = watch.WatcherHub(self, watch_queue_events)
        self._ops = {
            "range": self._op_range, "put": self._op_put, "puts": self._op_puts,
            "delete_range": self._op_delete,
            "txn": self._op_txn, "compact": self._op_compact,
            "lease_grant": self._op_lease_grant, "lease_revoke": self._op_lease_revoke,
            "lease_checkpoint": self._op_lease_checkpoint,
            "alarm_set": self._op_alarm_set,
        }
        self.auth = auth_mod.AuthStore(engine, auth_token_ttl_s, jwt=auth_jwt)
        for name, handler in self.auth.ops.items():
            self._ops[name] = self._with_revision(handler)
        self._load()

    # ---- state ------------------------------------------------------------------------------

    def _open_handles(self):
        self._kv = self.engine.db(codec.KV_DB)
        self._meta = self.engine.db(codec.META_DB)
        self._lease_db = self.engine.db(codec.LEASE_DB)

    def _load(self):
        """(Re)build the in-memory state from LMDB's committed contents."""
        with self._lock, self.engine.env.begin() as txn:
            self._index = BTree()
            self._leases = {}
            self._events = []
            self._lease_changes = ([], [])
            self._applied = codec.meta_int(txn, self._meta, codec.META_APPLIED)
            self._rev = codec.meta_int(txn, self._meta, codec.META_REVISION, 1)
            # etcd's compactMainRev: -1 until the first compaction, which may be at revision 0
            # (a fresh store accepts Compact(0)). Its record exists from that compaction on.
            self._compact = codec.meta_int(txn, self._meta, codec.META_COMPACT, -1)
            self._compact_target = codec.meta_int(txn, self._meta, codec.META_COMPACT_TARGET)
            raw = txn.get(codec.META_COMPACT_CURSOR, db=self._meta)
            self._compact_cursor = None if raw is None else unpackb(raw)
            self.alarm = codec.meta_int(txn, self._meta, META_ALARM) == 1
            self.corrupt = codec.meta_int(txn, self._meta, META_CORRUPT) == 1
            self.corrupt_member = codec.meta_int(txn, self._meta, META_CORRUPT_MEMBER)
            self._load_index(txn)
            self._load_leases(txn)
            self.auth.load(txn)
            self._committed_rev = self._rev
            self._committed_index = self._applied

    def _load_index(self, txn):
        """Every stored revision back into the key index (one pass over the "kv" sub-db; the
        C loop reads each record in place, the history is not kept anywhere else)."""
        count = load_index(self._index, txn.cursor(db=self._kv), KeyIndex)
        assert count == txn.stat(self._kv)["entries"], "the kv cursor skipped records"

    def _load_leases(self, txn):
        for dbkey, raw in txn.cursor(db=self._lease_db):
            ttl, remaining = unpackb(raw)
            lid = codec.lease_id_of(dbkey)
            self._leases[lid] = lease_mod.Lease(lid, ttl, remaining)
        if not self._leases:
            return  # no key can be attached to one: skip the walk over every key
        for key, ki in self._index.items():
            if ki.create and ki.lease in self._leases:
                self._leases[ki.lease].keys.add(key)

    @property
    def applied_index(self):
        return self._committed_index

    def applied_in(self, txn):
        """The applied index as txn sees it (say, in the txn that restored a snapshot)."""
        return codec.meta_int(txn, self._meta, codec.META_APPLIED)

    @property
    def current_revision(self):
        return self._committed_rev

    @property
    def compact_revision(self):
        """The revision of the last compaction; 0 if there was none."""
        return max(self._compact, 0)

    def committed(self):
        """The caller committed the txn(s) of the apply() calls since the last
        committed()/aborted(): publish the revision, deliver events, tell lessors."""
        with self._lock:
            old = self._committed_rev
            self._committed_rev = self._rev
            self._committed_index = self._applied
            events, self._events = self._events, []
            granted, revoked = self._lease_changes
            self._lease_changes = ([], [])
            ready = self.hub.dispatch(events, old, self._rev)
        for listener in self._lease_listeners:
            listener(granted, revoked)
        self.hub.notify(ready)

    def aborted(self):
        """The caller's txn failed: forget the uncommitted changes (rebuild from LMDB)."""
        with self._lock:
            self._load()

    def add_lease_listener(self, fn):
        """fn(granted_ids, revoked_ids) after each committed() (the Lessor uses it)."""
        self._lease_listeners.append(fn)

    def lease(self, lease_id):
        return self._leases.get(lease_id)

    def lease_ids(self):
        with self._lock:
            return sorted(self._leases)

    # ---- apply ------------------------------------------------------------------------------

    def apply(self, txn, index, requests):
        """Apply one committed entry's requests [(op, body)]; see the module docstring."""
        with self._lock:
            if index <= self._applied:
                return None
            self._check_quota()
            w = _Write(txn)
            out = []
            for op, body in requests:
                handler = self._ops.get(op)
                if handler is None:
                    out.append(RaftkvError("UNKNOWN_OP", f"raftkv: unknown operation {op!r}"))
                    continue
                w.main, w.sub = self._rev + 1, 0
                try:
                    body = body or {}
                    if self.corrupt and op in CORRUPT_STOPS:
                        raise RaftkvError("CORRUPT")
                    txncheck.check_shape(op, body)
                    user = body.get(auth_mod.USER_FIELD)
                    if user is not None and self.auth.enabled:  # a client's write
                        self.auth.check_write(op, body, user, self._lease_keys)
                    out.append(handler(w, body))
                except RaftkvError as exc:
                    out.append(exc)
                except _BAD_INPUT_ERRORS as exc:
                    # Input check_shape should have refused: a bug, but not one to stop every
                    # member for (they would all stop at this entry, again at each restart).
                    # Each member answers the same error and the entry counts as applied.
                    log.exception("apply of %s at index %d failed; answering INTERNAL", op,
                                  index)
                    out.append(RaftkvError("INTERNAL", f"raftkv: {op} failed in apply: {exc}"))
                if w.sub:
                    self._rev = w.main
            if self._compact_cursor is not None:
                self._compact_step(w, self.compaction_batch)
            self._flush(w)
            self._applied = index
            meta, put = self._meta, codec.put_meta
            put(txn, meta, codec.META_APPLIED, index)
            put(txn, meta, codec.META_CONSISTENT, index)
            put(txn, meta, codec.META_REVISION, self._rev)
            return out

    def _flush(self, w):
        if not w.pending:
            return
        items = list(w.pending.items())
        w.pending = {}
        self._putmulti(w.txn, items)

    def _putmulti(self, txn, items):
        """Write [(rev_key, fields)] in ascending key order past every stored key."""
        with txn.cursor(db=self._kv) as cur:
            _, added = cur.putmulti(items, append=True)
            if added != len(items):  # not past the last key: never expected, still correct
                for key, val in items:
                    txn.put(key, val, db=self._kv)

    def _get_fields(self, w, entry):
        """Stored fields of a history entry, inside apply (pending writes first)."""
        dbkey = rev_key(entry)
        raw = w.pending.get(dbkey)
        if raw is None:
            raw = w.txn.get(dbkey, db=self._kv)
        if raw is None:
            raise RaftkvError("COMPACTED")
        return unpackb(raw)

    def _read_rev(self, w):
        """The revision a read inside apply sees: includes this request's own writes."""
        return w.main if w.sub else self._rev

    # ---- quota ------------------------------------------------------------------------------

    def backend_bytes(self):
        """The LMDB file's size in use (pages up to the last allocated page); it never shrinks,
        pages freed by deletes and compaction are reused."""
        env = self.engine.env
        return (env.info()["last_pgno"] + 1) * env.stat()["psize"]

    def in_use_bytes(self):
        """Pages holding live data in every sub-db (etcd's dbSizeInUse): what the quota counts,
        so that delete + compact bring a store back under it (LMDB reuses the freed pages).
        A sub-db the store lacks (the Raft log's "log" and "meta" beside a KVStore used
        without a member, say) holds no page: it counts 0 and is not created. Handles are
        opened before the txn that reads them: LMDB's stat fails (EINVAL) on a sub-db opened
        after the txn began, as a missing one, created on first use, was."""
        env = self.engine.env
        psize = env.stat()["psize"]
        with env.begin() as txn:  # named sub-dbs are keys of LMDB's main db
            present = [name for name in IN_USE_DBS if txn.get(name) is not None]
        handles = [self.engine.db(name) for name in present]
        pages = 0
        with env.begin() as txn:
            for handle in handles:
                st = txn.stat(handle)
                pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return pages * psize

    def _check_quota(self):
        """Only when this store decides alone (quota_bytes set: tests, tools). A member passes
        quota_bytes=0 and raises the alarm through the log (op alarm_set), so that every
        member refuses the same writes: apply must stay deterministic."""
        if self.quota_bytes and not self.alarm and self.backend_bytes() > self.quota_bytes:
            self.alarm = True

    def _with_revision(self, handler):
        """An auth op's handler whose response carries the header's revision."""
        def run(w, body):
            resp = handler(w, body)
            resp["header"] = {"revision": self._rev}
            return resp
        return run

    def _lease_keys(self, lease_id):
        lease = self._leases.get(lease_id) if lease_id else None
        return sorted(lease.keys) if lease is not None else ()

    def register_op(self, name, handler):
        """Let the member apply its own replicated ops in log order with the KV ops:
        handler(write, body) -> response dict; write.txn is the apply txn. Must be
        deterministic (every member applies the same entries)."""
        assert name not in self._ops, f"op {name!r} already exists"
        self._ops[name] = handler

    def over_quota(self, quota_bytes):
        return bool(quota_bytes) and self.in_use_bytes() > quota_bytes

    def _op_alarm_set(self, w, body):
        """The replicated alarms (etcd raises them through raft too): {"on": bool, "alarm":
        1 NOSPACE (the default) | 2 CORRUPT, "memberID": the member found to differ}."""
        kind, on = body.get("alarm", ALARM_NOSPACE), bool(body.get("on"))
        if kind == ALARM_CORRUPT:
            self.corrupt, self.corrupt_member = on, body.get("memberID", 0) if on else 0
            codec.put_meta(w.txn, self._meta, META_CORRUPT, 1 if on else 0)
            codec.put_meta(w.txn, self._meta, META_CORRUPT_MEMBER, self.corrupt_member)
        elif kind == ALARM_NOSPACE:
            self.alarm = on
            codec.put_meta(w.txn, self._meta, META_ALARM, 1 if self.alarm else 0)
        else:
            raise RaftkvError("BAD_REQUEST", f"raftkv: unknown alarm {kind!r}")
        return {"header": {"revision": self._rev}, "alarm": self.alarm}

    def disarm(self):
        """Clear the NO_SPACE alarm if the backend is back under quota (after a defrag)."""
        with self._lock:
            if not self.quota_bytes or self.backend_bytes() <= self.quota_bytes:
                self.alarm = False
            return not self.alarm

    # ---- ranges -----------------------------------------------------------------------------

    def _items(self, key, end):
        if not end:
            ki = self._index.get(key) if key else None
            return [(key, ki)] if ki is not None else []
        if end == b"\0":
            return self._index.range(key)
        return self._index.range(key, end) if end > key else []

    def _entries(self, key, end, main):
        """History entries visible at `main` for the keys in [key, end), in key order."""
        out = []
        append = out.append
        for _, ki in self._items(key, end):
            entry = ki.at(main)
            if entry is not None:
                append(entry)
        return out

    def _check_rev(self, rev, current):
        if rev <= 0:
            return current
        if rev > current:
            raise RaftkvError("FUTURE_REV")
        if rev < self._compact:
            raise RaftkvError("COMPACTED")
        return rev

    def _do_range(self, body, current, get):
        """RangeResponse at body["revision"] (<= current), reading values with get(entry)."""
        txncheck.check_key(body)
        rev = self._check_rev(body.get("revision", 0), current)
        entries = self._entries(body.get("key", b""), body.get("range_end", b""), rev)
        order, full = query.needs_full_read(body)
        limit = body.get("limit", 0)
        if body.get("count_only"):
            wanted = ()
        elif full or limit <= 0:  # etcd: a negative limit is no limit
            wanted = entries
        else:
            wanted = entries[:limit + 1]
        fields = [get(e) for e in wanted]
        return query.range_response(fields, body, len(entries), current, order)

    def range(self, body):
        """A read at the last committed revision or a past one (outside the log)."""
        txncheck.check_shape("range", body)
        with self._lock, self.engine.env.begin() as rtxn:
            kv = self._kv

            def get(entry):
                raw = rtxn.get(rev_key(entry), db=kv)
                if raw is None:
                    raise RaftkvError("COMPACTED")
                return unpackb(raw)

            return self._do_range(body, self._committed_rev, get)

    def _op_range(self, w, body):
        return self._do_range(body, self._read_rev(w), lambda e: self._get_fields(w, e))

    # ---- writes -----------------------------------------------------------------------------

    def _put_checks(self, w, body, lease_first=False):
        """Errors a put raises before changing anything: LEASE_NOT_FOUND for an unknown lease,
        KEY_NOT_FOUND for ignore_value or ignore_lease on a missing key. etcd 3.4 checks the
        lease first for a plain put (applierV3backend.Put), last for a put in a txn's chosen
        path (checkRequestPut)."""
        lid = body.get("lease", 0)
        if lease_first and lid and lid not in self._leases:
            raise RaftkvError("LEASE_NOT_FOUND")
        if body.get("ignore_value") or body.get("ignore_lease"):
            ki = self._index.get(body.get("key", b""))
            if ki is None or not ki.create:
                raise RaftkvError("KEY_NOT_FOUND")
        if lid and lid not in self._leases:
            raise RaftkvError("LEASE_NOT_FOUND")

    def _op_put(self, w, body):
        key = body.get("key")
        extra = len(body) > 2 or len(body) == 2 and "value" not in body
        if not key or self.alarm or extra and (
                body.get("lease") or body.get("prev_kv") or body.get("ignore_value")
                or body.get("ignore_lease")):
            return self._op_put_full(w, body)
        # Fast path (the common plain put): same result as _op_put_full, inlined.
        main = w.main
        ki = self._index.get(key)
        if ki is None:
            ki = KeyIndex()
            self._index.insert(key, ki)
        prev_entry = None
        if ki.create:
            prev_entry = ki.last()
            create, version = ki.create, ki.version + 1
        else:
            create, version = main, 1
        entry = main << _SHIFT
        fields = [key, create, main, version, body.get("value", b""), 0]
        w.pending[_MAIN_KEY(main, b"_", 0)] = self._pack(fields)
        w.sub = 1
        ki.push(entry)
        if ki.lease:
            self._detach(key, ki.lease)
            ki.lease = 0
        ki.create, ki.version = create, version
        self._events.append((entry, fields, prev_entry))
        return {"header": {"revision": main}}

    def _op_puts(self, w, body):
        """Many plain puts in one request (bulk loads): body {"kvs": [k0, v0, k1, v1, ...]}.

        The same store contents, index, events and revisions as one plain "put" request per
        pair, in order (pair i at main revision current + 1 + i); the response is one count
        instead of a response per put: {"header": {"revision": last}, "count": n}. All or
        nothing: a malformed body, an empty key or the NO_SPACE alarm fails the whole request
        before anything is written (a plain put fails the same way)."""
        kvs = body.get("kvs")
        if not isinstance(kvs, list) or len(kvs) % 2:
            raise RaftkvError("BAD_REQUEST", "raftkv: puts wants kvs [key, value, ...]")
        keys, values = kvs[0::2], kvs[1::2]
        for key in keys:
            if not key or type(key) is not bytes:
                if not key:
                    raise RaftkvError("EMPTY_KEY")
                raise RaftkvError("BAD_REQUEST", "raftkv: a key must be bytes")
        for value in values:
            if type(value) is not bytes:
                raise RaftkvError("BAD_REQUEST", "raftkv: a value must be bytes")
        if self.alarm:
            raise RaftkvError("NO_SPACE")
        if not keys:
            return {"header": {"revision": self._rev}, "count": 0}
        self._flush(w)  # earlier writes of this apply() first: the kv db is append-only
        items = []
        main = apply_puts(self._index, keys, values, w.main - 1, KeyIndex, self._pack, items,
                          self._events, self._detach)
        w.main, w.sub = main, 1
        self._putmulti(w.txn, items)
        return {"header": {"revision": main}, "count": len(keys)}

    def _op_put_full(self, w, body):
        txncheck.check_put(body)
        if self.alarm:
            raise RaftkvError("NO_SPACE")
        self._put_checks(w, body, lease_first=True)
        prev = self._put(w, body)
        resp = {"header": {"revision": w.main}}
        if prev is not None and body.get("prev_kv"):
            resp["prev_kv"] = codec.kv_dict(prev)
        return resp

    def _put(self, w, body):
        """Write one put at (w.main, w.sub); returns the previous fields if read, else None."""
        key = body["key"]
        value, lid = body.get("value", b""), body.get("lease", 0)
        ki = self._index.get(key)
        if ki is None:
            ki = KeyIndex()
            self._index.insert(key, ki)
        prev_entry = ki.last() if ki.create else None
        prev = None
        ignore_value, ignore_lease = body.get("ignore_value"), body.get("ignore_lease")
        if prev_entry is not None and (ignore_value or body.get("prev_kv")):
            prev = self._get_fields(w, prev_entry)
        if ignore_value:
            value = prev[4]
        if ignore_lease:
            lid = ki.lease
        main = w.main
        entry = (main << SUB_BITS | w.sub) << 1
        w.sub += 1
        if ki.create:
            create, version = ki.create, ki.version + 1
        else:
            create, version = main, 1
        fields = [key, create, main, version, value, lid]
        w.pending[rev_key(entry)] = self._pack(fields)
        ki.push(entry)
        if ki.lease != lid:
            self._detach(key, ki.lease)
            if lid:
                self._leases[lid].keys.add(key)
        ki.create, ki.version, ki.lease = create, version, lid
        self._events.append((entry, fields, prev_entry))
        return prev

    def _detach(self, key, lid):
        if lid:
            lease = self._leases.get(lid)
            if lease is not None:
                lease.keys.discard(key)

    def _delete_keys(self, w, keys, want_prev):
        """Tombstone the live keys in `keys` at w.main; returns (deleted, prev_kvs)."""
        deleted, prevs = 0, []
        for key in keys:
            ki = self._index.get(key)
            if ki is None or not ki.create:
                continue
            prev_entry = ki.last()
            if want_prev:
                prevs.append(codec.kv_dict(self._get_fields(w, prev_entry)))
            main = w.main
            entry = (main << SUB_BITS | w.sub) << 1 | 1
            w.sub += 1
            fields = [key, 0, main, 0, b"", 0]
            w.pending[rev_key(entry)] = self._pack(fields)
            ki.push(entry)
            self._detach(key, ki.lease)
            ki.create = ki.version = ki.lease = 0
            self._events.append((entry, fields, prev_entry))
            deleted += 1
        return deleted, prevs

    def _delete(self, w, body):
        keys = [k for k, ki in self._items(body["key"], body.get("range_end", b"")) if ki.create]
        deleted, prevs = self._delete_keys(w, keys, body.get("prev_kv"))
        resp = {"header": {"revision": w.main if w.sub else self._rev}, "deleted": deleted}
        if body.get("prev_kv"):
            resp["prev_kvs"] = prevs
        return resp

    def _op_delete(self, w, body):
        txncheck.check_key(body)
        return self._delete(w, body)

    # ---- txn --------------------------------------------------------------------------------

    def _compare(self, w, cmp):
        key, end = cmp.get("key", b""), cmp.get("range_end", b"")
        entries = self._entries(key, end, self._rev)
        return query.compare_ok(cmp, [self._get_fields(w, e) for e in entries])

    def _path(self, w, body, path, chosen):
        """etcd's compareToPath: evaluate every compare on the path before any write (path:
        one bool per txn, nested ones in order); chosen gets the ops of the chosen branches
        other than txns, in the order etcd's checkRequests visits them."""
        ok = all(self._compare(w, c) for c in body.get("compare") or ())
        path.append(ok)
        for op in body.get("success" if ok else "failure") or ():
            kind, sub = txncheck.split_op(op)
            if kind == "request_txn":
                self._path(w, sub, path, chosen)
            else:
                chosen.append((kind, sub))
        return path

    @staticmethod
    def _check_not_deleted(put, deletes):
        """KEY_NOT_FOUND for a put with ignore_value or ignore_lease whose key one of the
        txn's earlier deletes removes (only a from-key delete, range_end "\0", passes
        check_txn's duplicate check so). There is no value or lease left to keep; etcd 3.4.23
        finds that in the middle of the txn and panics (the member exits): raftkv refuses the
        txn before any of it is written."""
        if not (put.get("ignore_value") or put.get("ignore_lease")):
            return
        key = put.get("key", b"")
        for d in deletes:
            lo, hi = auth_mod.interval(d.get("key", b""), d.get("range_end", b""))
            if lo <= key and (hi is None or key < hi):
                raise RaftkvError("KEY_NOT_FOUND")

    def _check_txn_range(self, rev):
        """etcd's checkRequestRange for a range in a txn: unlike a plain range, a negative
        revision is compared too, with compactMainRev (-1 before any compaction)."""
        if rev > self._rev:
            raise RaftkvError("FUTURE_REV")
        if rev and rev < self._compact:
            raise RaftkvError("COMPACTED")

    def _op_txn(self, w, body):
        txncheck.check_txn(body, self.max_txn_ops)
        if self.alarm and txncheck.has_put(body):
            raise RaftkvError("NO_SPACE")
        path, chosen = [], []
        self._path(w, body, path, chosen)
        # etcd's checkRequests: first every put of the chosen path, then every range.
        deletes = []
        for kind, sub in chosen:
            if kind == "request_put":
                self._put_checks(w, sub)
                self._check_not_deleted(sub, deletes)
            elif kind == "request_delete_range":
                deletes.append(sub)
        for kind, sub in chosen:
            if kind == "request_range":
                self._check_txn_range(sub.get("revision", 0))
        path = iter(path)
        resp = self._run_txn(w, body, path)
        resp["header"] = {"revision": w.main if w.sub else self._rev}
        return resp

    def _run_txn(self, w, body, path):
        """The chosen branch's responses, each with etcd 3.4's sub-response header (only a
        revision, as etcd's applier leaves cluster/member/term unset): a range or delete sees
        the revision as of that point in the txn (the starting one until the first write,
        then the txn's own), a put the txn's revision; a nested txn's header stays empty
        (etcd's newTxnResp never sets it). The caller sets the outermost header."""
        ok = next(path)
        responses = []
        for op in body.get("success" if ok else "failure") or ():
            kind, sub = txncheck.split_op(op)
            if kind == "request_range":
                responses.append({"response_range": self._op_range(w, sub)})
            elif kind == "request_put":
                prev = self._put(w, sub)
                resp = {"header": {"revision": w.main}}
                if prev is not None and sub.get("prev_kv"):
                    resp["prev_kv"] = codec.kv_dict(prev)
                responses.append({"response_put": resp})
            elif kind == "request_delete_range":
                responses.append({"response_delete_range": self._delete(w, sub)})
            else:
                responses.append({"response_txn": self._run_txn(w, sub, path)})
        return {"header": {}, "succeeded": ok, "responses": responses}

    # ---- compaction -------------------------------------------------------------------------

    def _op_compact(self, w, body):
        rev = body.get("revision", 0)
        if rev <= self._compact:
            raise RaftkvError("COMPACTED")
        if rev > self._rev:
            raise RaftkvError("FUTURE_REV")
        self._compact = self._compact_target = rev
        self._compact_cursor = b""
        codec.put_meta(w.txn, self._meta, codec.META_COMPACT, rev)
        codec.put_meta(w.txn, self._meta, codec.META_COMPACT_TARGET, rev)
        if body.get("physical"):
            while self._compact_cursor is not None:
                self._compact_step(w, self.compaction_batch)
        return {"header": {"revision": self._rev}}

    def compact_step(self, txn, max_keys=COMPACTION_BATCH_DEFAULT):
        """Run one bounded step of a pending physical compaction in the caller's write txn
        (the caller then calls committed()/aborted()). Returns True while work remains."""
        with self._lock:
            if self._compact_cursor is not None:
                self._compact_step(_Write(txn), max_keys)
            return self._compact_cursor is not None

    def _compact_step(self, w, max_keys):
        """Drop the history below the compact target of up to max_keys keys, from the
        persisted cursor on: memory and disk in the same step."""
        self._flush(w)
        target, cursor = self._compact_target, self._compact_cursor
        items = self._index.range(cursor or b"\0", None, max_keys)
        txn, kv = w.txn, self._kv
        for key, ki in items:
            for entry in ki.compact(target):
                txn.delete(rev_key(entry), db=kv)
            if ki.empty():
                self._index.delete(key)
        if len(items) < max_keys:
            self._compact_cursor = None
            txn.delete(codec.META_COMPACT_CURSOR, db=self._meta)
        else:
            self._compact_cursor = items[-1][0] + b"\0"
            codec.put_meta(txn, self._meta, codec.META_COMPACT_CURSOR, self._compact_cursor)

    @property
    def compaction_pending(self):
        return self._compact_cursor is not None

    # ---- leases -----------------------------------------------------------------------------

    def _op_lease_grant(self, w, body):
        if self.alarm:
            raise RaftkvError("NO_SPACE")
        ttl, lid = body.get("TTL", 0), body.get("ID", 0)
        if ttl > lease_mod.MAX_TTL:
            raise RaftkvError("LEASE_TTL_TOO_LARGE")
        if lid == 0:
            lid = lease_mod.derive_id(self._applied + 1, w.main, len(self._leases), self._leases)
        if lid in self._leases:
            raise RaftkvError("LEASE_EXIST")
        ttl = max(ttl, self.min_lease_ttl)
        self._leases[lid] = lease_mod.Lease(lid, ttl, 0)
        w.txn.put(codec.lease_key(lid), codec.packb([ttl, 0]), db=self._lease_db)
        self._lease_changes[0].append(lid)
        return {"header": {"revision": self._rev}, "ID": lid, "TTL": ttl}

    def _op_lease_revoke(self, w, body):
        lid = body.get("ID", 0)
        lease = self._leases.get(lid)
        if lease is None:
            raise RaftkvError("LEASE_NOT_FOUND")
        self._delete_keys(w, sorted(lease.keys), False)
        del self._leases[lid]
        w.txn.delete(codec.lease_key(lid), db=self._lease_db)
        self._lease_changes[1].append(lid)
        return {"header": {"revision": w.main if w.sub else self._rev}}

    def _op_lease_checkpoint(self, w, body):
        for cp in body.get("checkpoints") or ():
            lease = self._leases.get(cp.get("ID", 0))
            if lease is not None:
                lease.remaining = cp.get("remaining_TTL", 0)
                w.txn.put(codec.lease_key(lease.id), codec.packb([lease.ttl, lease.remaining]),
                          db=self._lease_db)
        return {"header": {"revision": self._rev}}

    # ---- watch and snapshot -----------------------------------------------------------------

    def watch(self, key, range_end=b"", start_revision=0, prev_kv=False, filters=(),
              progress=False, on_ready=None):
        """A Watcher over [key, range_end) (see raftkv.mvcc.watch for the delivery contract)."""
        return self.hub.watch(key, range_end, start_revision, prev_kv, filters, progress,
                              on_ready)

    def snapshot(self, chunk_bytes=None):
        """The whole committed state as an iterator of checksummed chunks (bytes)."""
        return snapshot.export_chunks(self, chunk_bytes)

    def restore(self, chunks):
        """Replace the whole state with a snapshot's chunks; on any error the store is left
        as it was (one LMDB txn). Watchers resynchronise from the restored history."""
        with self._lock:
            snapshot.restore_chunks(self, chunks)
            old = self._committed_rev
            self._load()
            ready = self.hub.resync_all(old)
        self.hub.notify(ready)

