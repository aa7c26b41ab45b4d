"""etcd's lock and election recipes (its clientv3/concurrency package, which etcd 3.4's v3lock
and v3election services run in-process over v3client) as calls on the Service contract.

Why here, in the front end: etcd serves Lock and Election as a client of its own KV, Lease and
Watch servers, with the caller's context (so the caller's token). Doing the same over
`service.call` and `service.watch` gives these services the KV API's semantics unchanged (auth,
forwarding to the leader, linearizable reads, header of the member asked) and lets them run in
a `--grpc-workers` child, whose RemoteService carries the same contract to the member. Nothing
here holds state between RPCs: the state is the keys.

The keys and requests are clientv3/concurrency's (etcd 3.4.23, checked by hand and by
tests/etcdctl/differential_lock.py):

* a session lease: the request's lease, or for lease 0 a new lease with TTL
  SESSION_TTL_S that nothing keeps alive (etcd orphans its session at once);
* the caller's key: `name + "/" + lease ID in lower-case hex`, created under that lease by a
  txn that keeps the key if it exists already (locking or campaigning twice with one lease is
  one acquisition, at the key's create revision);
* waiting (wait_deletes): while a key of the prefix with a create revision below the caller's
  exists, a linearizable range for the newest such key, then a watch on that key from the
  range's revision until it is deleted. The caller's own key is not looked at while waiting:
  a waiter whose lease is revoked still waits for the keys before it and then answers as if
  it held the lock or led (etcd 3.4.23 does; its later Mutex checks its key afterwards);
* cleanup: a Lock or Campaign whose client cancels while waiting deletes its key without the
  caller's identity (etcd uses the in-process client's own context, which carries no token:
  with auth on, the delete fails and the key stays until its lease ends);
* no leader: a member that knows no leader holds a write, and a linearizable read, until one
  is elected (up to its request timeout), as etcd's in-process client's request waits for one
  (5 s + 2 election timeouts). A call refused with NO_LEADER all the same (nothing proposed)
  is tried again until the service's request timeout (`service.timeout_s`) has passed
  (raftkv/server/leaderless.py), so a Lock sent while the member knows no leader, or a
  cleanup begun while a majority was down, goes through once a leader is elected, as in etcd
  (tests/etcdctl/test_lock_faults.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from raftkv.api import wire
from raftkv.api.etcd.convert import RaftkvError, fill, to_dict, with_identity
from raftkv.api.etcd.proto import kv_pb2, rpc_pb2
from raftkv.server.leaderless import retry_leaderless

log = logging.getLogger(__name__)

SESSION_TTL_S = 60  # concurrency.NewSession's default TTL (a request with lease 0)
_DELETE = 1  # mvccpb.Event.DELETE
_RANGE = rpc_pb2.RangeRequest
_CREATE_TARGET = rpc_pb2.Compare.CREATE

# Cleanups started when a client cancelled: held here until done (asyncio keeps only weak
# references to tasks), so none is lost; each ends with its one delete.
_cleanups = set()


class Caller:
    """The service as one RPC's client: each request carries the RPC's identity fields (gRPC
    metadata token, certificate CN; see convert.with_identity), or none (anonymous())."""

    def __init__(self, service, who):
        self.service = service
        self.who = dict(who)

    @classmethod
    def of(cls, service, context):
        """The caller of the RPC whose grpc context this is."""
        return cls(service, with_identity(context, {}))

    def anonymous(self):
        return Caller(self.service, {})

    async def call(self, op, request, response_cls):
        """service.call with a request message; the answer as a response_cls message. Refused
        with NO_LEADER (nothing was proposed), it is sent again every LEADER_POLL_S until
        service.timeout_s has passed, then that refusal is raised (retry_leaderless)."""
        def attempt():  # a fresh body each time: the service pops the identity fields
            return self.service.call(op, dict(to_dict(request), **self.who))
        result = await retry_leaderless(attempt, self.service.timeout_s)
        return fill(response_cls(), result)

    def watch(self, key, start_revision, prefix=False):
        """service.watch of key (or every key under the prefix key) from start_revision: an
        async generator of the service's batches (close it to cancel the watcher)."""
        body = {"key": key, "range_end": prefix_end(key) if prefix else b"",
                "start_revision": start_revision, "prev_kv": False, "filters": [],
                "progress_notify": False}
        return self.service.watch(dict(body, **self.who))


prefix_end = wire.prefix_range_end  # clientv3's GetPrefixRangeEnd


def own_key(name, lease):
    """The caller's key: name + "/" + the lease ID as Go's %x prints an int64."""
    return name + b"/" + format(lease, "x").encode()


def _first_create(prefix):
    """clientv3's Get(prefix, WithFirstCreate()): the oldest key under prefix."""
    return _RANGE(key=prefix, range_end=prefix_end(prefix), limit=1,
                  sort_order=_RANGE.ASCEND, sort_target=_RANGE.CREATE)


def _created_at(key, revision):
    """The txn compare create_revision(key) == revision."""
    return rpc_pb2.Compare(key=key, target=_CREATE_TARGET, result=rpc_pb2.Compare.EQUAL,
                           create_revision=revision)


def _put(key, value, lease):
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))


def _get(request):
    return rpc_pb2.RequestOp(request_range=request)


async def session_lease(caller, lease):
    """concurrency.NewSession(WithLease(lease)): lease 0 grants a new SESSION_TTL_S lease."""
    if lease != 0:
        return lease
    grant = rpc_pb2.LeaseGrantRequest(TTL=SESSION_TTL_S)
    return (await caller.call("lease_grant", grant, rpc_pb2.LeaseGrantResponse)).ID


# ---------------------------------------------------------------------- waiting
async def wait_deletes(caller, prefix, max_create_revision):
    """Until no key under prefix has a create revision <= max_create_revision; returns the
    header of the range that found none (etcd's waitDeletes)."""
    newest = _RANGE(key=prefix, range_end=prefix_end(prefix), limit=1,
                    sort_order=_RANGE.DESCEND, sort_target=_RANGE.CREATE,
                    max_create_revision=max_create_revision)
    while True:
        resp = await caller.call("range", newest, rpc_pb2.RangeResponse)
        if not resp.kvs:
            return resp.header
        await _wait_delete(caller, resp.kvs[0].key, resp.header.revision)


async def _wait_delete(caller, key, revision):
    """Until a delete of key at or after revision (etcd's waitDelete). The watcher is closed
    however this ends (the client cancelled: CancelledError)."""
    async with contextlib.aclosing(caller.watch(key, revision)) as batches:
        async for batch in batches:
            _raise_if_ended(batch)
            if any(ev.get("type") == _DELETE for ev in batch.get("events") or ()):
                return
    raise RaftkvError("LOST_WATCHER")


def _raise_if_ended(batch):
    """A batch that ends the watcher as an error (clientv3's WatchResponse.Err)."""
    if batch.get("compact_revision"):
        raise RaftkvError("COMPACTED")
    if batch.get("canceled"):
        raise RaftkvError("LOST_WATCHER", batch.get("cancel_reason") or None)


def _in_background(cleanup):
    """Run the cleanup coroutine of a Lock or Campaign whose client cancelled on its own (the
    RPC's task is being cancelled); its error is only logged, as etcd ignores it."""
    async def run():
        try:
            await cleanup
        except RaftkvError as exc:
            log.info("cleanup of a cancelled wait failed: %s", exc.message)
    task = asyncio.ensure_future(run())
    _cleanups.add(task)
    task.add_done_callback(_cleanups.discard)


# ---------------------------------------------------------------------- lock
async def lock(caller, name, lease):
    """etcd 3.4's Mutex.Lock; returns (key, response header as a message)."""
    prefix = name + b"/"
    key = own_key(name, lease)
    owner = _get(_first_create(prefix))
    txn = rpc_pb2.TxnRequest(compare=[_created_at(key, 0)],
                             success=[_put(key, b"", lease), owner],
                             failure=[_get(_RANGE(key=key)), owner])
    resp = await caller.call("txn", txn, rpc_pb2.TxnResponse)
    my_rev = resp.header.revision
    if not resp.succeeded:
        my_rev = resp.responses[0].response_range.kvs[0].create_revision
    holder = resp.responses[1].response_range.kvs
    if not holder or holder[0].create_revision == my_rev:
        return key, resp.header
    try:
        header = await wait_deletes(caller, prefix, my_rev - 1)
    except asyncio.CancelledError:
        _in_background(unlock(caller.anonymous(), key))
        raise
    except RaftkvError:
        with contextlib.suppress(RaftkvError):
            await unlock(caller.anonymous(), key)
        raise
    return key, header


async def unlock(caller, key):
    """etcd's Unlock: deletes key; returns the delete's header."""
    delete = rpc_pb2.DeleteRangeRequest(key=key)
    return (await caller.call("delete_range", delete, rpc_pb2.DeleteRangeResponse)).header


# ---------------------------------------------------------------------- election
def _txn_if_created_at(key, revision, op):
    return rpc_pb2.TxnRequest(compare=[_created_at(key, revision)], success=[op])


def _resign_txn(key, revision):
    delete = rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=key))
    return _txn_if_created_at(key, revision, delete)


async def campaign(caller, name, lease, value):
    """etcd 3.4's Election.Campaign; returns (leader key as a LeaderKey's fields, header of
    the campaign's first txn, as etcd answers even after waiting)."""
    prefix = name + b"/"
    key = own_key(name, lease)
    txn = rpc_pb2.TxnRequest(compare=[_created_at(key, 0)], success=[_put(key, value, lease)],
                             failure=[_get(_RANGE(key=key))])
    resp = await caller.call("txn", txn, rpc_pb2.TxnResponse)
    rev = resp.header.revision
    if not resp.succeeded:
        kv = resp.responses[0].response_range.kvs[0]
        rev = kv.create_revision
        if kv.value != value:
            await _proclaim_in_campaign(caller, key, rev, lease, value)
    try:
        await wait_deletes(caller, prefix, rev - 1)
    except asyncio.CancelledError:
        _in_background(resign(caller.anonymous(), key, rev))
        raise
    return {"name": name, "key": key, "rev": rev, "lease": lease}, resp.header


async def _proclaim_in_campaign(caller, key, rev, lease, value):
    """A campaign with a lease whose key holds another value proclaims it; if that fails with
    an error of the store, etcd resigns (with the caller's identity) and answers the error.
    "not leader" cleared etcd's leader key first, so its resign sent a txn on the empty key,
    which changes nothing: no resign here."""
    try:
        await proclaim(caller, key, rev, lease, value)
    except RaftkvError as exc:
        if exc.code != "ELECTION_NOT_LEADER":
            with contextlib.suppress(RaftkvError):
                await resign(caller, key, rev)
        raise


async def proclaim(caller, key, rev, lease, value):
    """etcd's Election.Proclaim: the new value if key still has create revision rev."""
    txn = _txn_if_created_at(key, rev, _put(key, value, lease))
    resp = await caller.call("txn", txn, rpc_pb2.TxnResponse)
    if not resp.succeeded:
        raise RaftkvError("ELECTION_NOT_LEADER")
    return resp.header


async def resign(caller, key, rev):
    """etcd's Election.Resign: deletes key if it still has create revision rev; answers the
    txn's header either way."""
    resp = await caller.call("txn", _resign_txn(key, rev), rpc_pb2.TxnResponse)
    return resp.header


async def leader(caller, name):
    """etcd's Election.Leader: (header, the oldest key of the election) or ELECTION_NO_LEADER."""
    resp = await caller.call("range", _first_create(name + b"/"), rpc_pb2.RangeResponse)
    if not resp.kvs:
        raise RaftkvError("ELECTION_NO_LEADER")
    return resp.header, resp.kvs[0]


async def observe(caller, name):
    """etcd's Election.observe: yields (header, kv) for the leader's key, then for each put of
    it, and after its deletion the next leader's. Ends (without an error, as etcd's Observe
    closes its channel) when a read or a watcher fails, unless the member is going away
    (STOPPED, raised: a client of an etcd that dies sees its stream break)."""
    prefix = name + b"/"
    while True:
        try:
            resp = await caller.call("range", _first_create(prefix), rpc_pb2.RangeResponse)
        except RaftkvError as exc:
            if exc.code == "STOPPED":
                raise
            return
        if resp.kvs:
            found = resp.header, resp.kvs[0]
        else:
            found = await _first_put(caller, prefix, resp.header.revision)
            if found is None:
                return
        yield found
        header, kv = found
        async with contextlib.aclosing(caller.watch(kv.key, header.revision + 1)) as batches:
            async for batch, event in _events(batches):
                if event is None:
                    return
                if event.get("type") == _DELETE:
                    break
                yield _event_header(batch, event), fill(kv_pb2.KeyValue(), event["kv"])
            else:
                return


async def _first_put(caller, prefix, revision):
    """The first put under prefix from revision: (header at its revision, kv), or None when
    the watcher failed."""
    async with contextlib.aclosing(caller.watch(prefix, revision, prefix=True)) as batches:
        async for batch, event in _events(batches):
            if event is None:
                return None
            if event.get("type") != _DELETE:
                header = _event_header(batch, event)
                header.revision = event["kv"].get("mod_revision", 0)
                return header, fill(kv_pb2.KeyValue(), event["kv"])
    return None


async def _events(batches):
    """(batch, event) for each event of a watcher's batches, then (batch, None) if the watcher
    ended with an error (its RaftkvError, a compaction or a cancel); STOPPED is raised."""
    try:
        async for batch in batches:
            if batch.get("compact_revision") or batch.get("canceled"):
                yield batch, None
                return
            for event in batch.get("events") or ():
                yield batch, event
    except RaftkvError as exc:
        if exc.code == "STOPPED":
            raise
        yield {}, None


def _event_header(batch, event):
    """A watch batch's header as a message, its revision never before the event's."""
    header = fill(rpc_pb2.ResponseHeader(), batch.get("header") or {})
    header.revision = max(header.revision, event["kv"].get("mod_revision", 0))
    return header
