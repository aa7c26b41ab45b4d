"""AsyncClient: the native protocol client, python-etcd3's API on asyncio.

Endpoints and failover. The client keeps one connection, to one endpoint at a time. A
request that fails because the connection broke, or with NOT_LEADER, NO_LEADER,
LEADER_CHANGED, STOPPED or a TIMEOUT* error, is retried on the next endpoint with exponential
backoff until `timeout` seconds have passed since the call began. Then the last error is
raised (ConnectionFailedError if no endpoint was reachable).

Idempotent retries. Every write carries an idempotency id [client_id, seq]: client_id is a
random 64-bit number drawn per client, seq counts its writes. A retry sends the same id, so a
member that applied the first attempt can drop the second instead of applying it twice.

Endpoints are TCP (host:port, http://, https://) or Unix sockets (unix://PATH, unixs://PATH):
see raftkv.client.endpoints. Leader discovery (prefer_leader) asks the given endpoints only,
never the members' advertised URLs, so a Unix socket endpoint takes part like any other.

TLS. With ca_cert, cert_cert (and cert_key) or an "https://" or "unixs://" endpoint, every
connection the client opens is TLS, made from one SSLContext built at construction (so a bad
file fails there, with raftkv.tls.TLSConfigError naming it). A TLS failure a retry would not
fix (see connection.py) is not retried: once every endpoint has been tried, the call raises
TLSHandshakeError, a ConnectionFailedError naming the endpoint and the reason.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
import time

from raftkv import tls
from raftkv.api import wire
from raftkv.client import connection
from raftkv.client.auth import AuthAdmin
from raftkv.client.endpoints import parse_endpoint
from raftkv.client.errors import (
    ConnectionFailedError,
    ConnectionLost,
    TLSHandshakeError,
    WatchTimedOut,
)
from raftkv.client.election import Election
from raftkv.client.lease import Lease, Session
from raftkv.client.lock import LOCK_PREFIX, Lock
from raftkv.client.txn import Transactions, _delete_body, _put_body, _range_body, txn_body
from raftkv.client.types import KVMetadata, PutManyResult, prefix_range_end, to_bytes
from raftkv.client.watch import CallbackWatch, Watch

RETRY_CODES = frozenset({
    "NOT_LEADER", "NO_LEADER", "LEADER_CHANGED", "STOPPED", "TIMEOUT",
    "TIMEOUT_DUE_TO_LEADER_FAIL", "TIMEOUT_DUE_TO_CONNECTION_LOST",
})
CONNECT_TIMEOUT_S = 2.0  # per endpoint: a stalled member must not eat the whole call timeout
LEADER_PROBE_TIMEOUT_S = 0.5  # per endpoint, when looking for the leader on connect
# This client fails over and retries by itself: a member without a leader (an election, or cut
# off in a minority) is to refuse its requests at once rather than hold them until the
# member's --request-timeout, which may be longer than this client's own timeout
# (raftkv/server/leaderless.py).
HELLO_OPTIONS = {"leaderless": "fail"}
# On connecting during an election (the member knows no leader yet): how long to wait for one
# before settling for that member. A write would wait for the election there anyway.
LEADER_WAIT_S = 2.0
LEADER_POLL_S = 0.05
RETIRE_CHECK_S = 1.0  # a connection left for the leader's closes once idle (checked this often)
BACKOFF_FIRST_S = 0.025  # doubled per retry up to BACKOFF_MAX_S
BACKOFF_MAX_S = 1.0
PUT_MANY_BATCH_MAX = 256  # items per batch request
PUT_MANY_BATCH_BYTES_MAX = 1024 * 1024  # keeps a batch frame under the 1.5 MiB request limit
PUT_MANY_WINDOW = 8  # batches in flight at once
# snapshot(): how long a member may go quiet between two chunks (it first writes the whole
# image to a file, which takes a while for a large store).
SNAPSHOT_IDLE_S = 60.0


def tls_context(endpoints, ca_cert=None, cert_key=None, cert_cert=None,
                insecure_skip_verify=False):
    """The client SSLContext for these endpoints (strings) and options, or None (plain TCP).

    TLS is on when a CA, a client certificate or key is given, or an endpoint is "https://" or
    "unixs://"; without a CA the system's CAs verify the members. insecure_skip_verify alone
    does not turn TLS on (as etcdctl's --insecure-skip-tls-verify). An "http://" endpoint while
    TLS is on is a ValueError, since it would be the one connection sent in the clear.
    """
    given = [name for name, v in (("ca_cert", ca_cert), ("cert_cert", cert_cert),
                                  ("cert_key", cert_key)) if v]
    forced = [e for e in map(parse_endpoint, endpoints) if e.tls_required]
    if forced:
        given.append(f"{'an' if forced[0].scheme == 'https' else 'a'} {forced[0].scheme}:// "
                     "endpoint")
    if not given:
        return None
    for e in endpoints:
        if e.strip().lower().startswith("http://"):
            raise ValueError(f"endpoint {e.strip()} is plain http:// but TLS is on "
                             f"({', '.join(given)}): use https://, unixs:// or no scheme")
    return tls.client_context(ca_cert, cert_cert, cert_key, verify=not insecure_skip_verify)


async def _leader_and_self(conn, deadline):
    """(leader id, own member id, Raft term) as conn's member reports them; zeros if it
    cannot say."""
    timeout = min(LEADER_PROBE_TIMEOUT_S, deadline - time.monotonic())
    try:
        st = await conn.request("status", {}, None, max(timeout, 0.001))
    except (OSError, ConnectionError, asyncio.TimeoutError, wire.RaftkvError):
        return 0, 0, 0
    header = st.get("header") or {}
    return st.get("leader") or 0, header.get("member_id") or 0, header.get("raft_term") or 0


def _retire(conn):
    """Close conn once nothing uses it any more (requests in flight, a watch stream)."""
    if conn.idle or not conn.is_open:
        conn.close()
    else:
        asyncio.get_running_loop().call_later(RETIRE_CHECK_S, _retire, conn)


def _kvs(resp):
    return [(kv.get("value", b""), KVMetadata.from_kv(kv)) for kv in resp.get("kvs", [])]


class AsyncClient(AuthAdmin):
    """prefer_leader: on connecting, find which endpoint is the Raft leader (a status request
    to each until one names itself) and use that one: a follower forwards every write to the
    leader and waits for the commit to come back, which costs a round trip and two process
    wake-ups per write. Off, or when no endpoint is the leader, the first that answers
    serves (any member accepts every request).

    TLS (python-etcd3's names for the first three): ca_cert, the CA file that signed the
    members' certificates (else the system's CAs); cert_cert and cert_key, a client certificate
    and its key for members that require one (--client-cert-auth); insecure_skip_verify,
    accept any member certificate (etcdctl's --insecure-skip-tls-verify); server_name, the name
    every member's certificate must carry instead of the host dialled (Go's
    tls.Config.ServerName; over a Unix socket the default is endpoints.py's). See tls_context.

    wait_for_leader: by default a member that knows no leader (an election, or cut off in a
    minority) refuses this client's requests at once and the client fails over to its next
    endpoint and retries until its timeout. With wait_for_leader=True the member holds them
    until a leader is elected instead (as it does etcd's clients'), bounded by the member's
    --request-timeout and this client's timeout: for a client with one endpoint.

    Authentication (python-etcd3's names): with user and password, the client authenticates
    before its first request and sends the token with every request; when a member no longer
    knows the token (it expired, or the member restarted) it authenticates again and retries.
    """

    def __init__(self, endpoints=("127.0.0.1:2379",), timeout=5.0, prefer_leader=True, *,
                 ca_cert=None, cert_key=None, cert_cert=None, insecure_skip_verify=False,
                 user=None, password=None, server_name=None, wait_for_leader=False):
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        endpoints = [e for e in endpoints if e.strip()]
        self.endpoints = [parse_endpoint(e) for e in endpoints]
        assert self.endpoints, "at least one endpoint"
        assert timeout > 0
        self.timeout = timeout
        # One context for every connection (None: plain TCP).
        self._ssl_context = tls_context(endpoints, ca_cert, cert_key, cert_cert,
                                        insecure_skip_verify)
        self._server_name = server_name  # None: each endpoint's own (Endpoint.server_name)
        # wait_for_leader: a member without a leader holds this client's requests until one is
        # elected (up to its --request-timeout), as it does etcd's clients', instead of
        # refusing them at once for this client to fail over (HELLO_OPTIONS).
        self._hello = {"leaderless": "wait"} if wait_for_leader else HELLO_OPTIONS
        self.transactions = Transactions()
        self.client_id = random.getrandbits(64)
        self._seq = itertools.count(1)
        self._index = 0  # the endpoint in use
        self._conn = None
        self._conn_lock = asyncio.Lock()
        self._closed = False
        self._put_many_op = True  # False once a member answered put_many with UNKNOWN_OP
        self.prefer_leader = prefer_leader and len(self.endpoints) > 1
        self._term = 0  # the Raft term in which the connection was chosen (prefer_leader)
        self._recheck = None  # the task looking for a new leader after a term change
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        self.user, self._password = user, password
        self._token = None  # the auth token (user given), got by the first request
        self._auth_off = False  # the members said auth is off: send no token until it is on
        self._auth_lock = asyncio.Lock()
        self._watch_ids = itertools.count(1)  # add_watch_callback's ids, this client's own
        self._callback_watches = {}  # watch id -> CallbackWatch, while it delivers

    def __repr__(self):
        return (f"{type(self).__name__}([{', '.join(repr(e.text) for e in self.endpoints)}]"
                f"{', closed' if self._closed else ''})")

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        self._closed = True
        for cw in list(self._callback_watches.values()):
            cw.stop()
        if self._recheck is not None:
            self._recheck.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # Connections and retries.

    async def connection(self, deadline):
        """The open connection, connecting to the endpoints in turn if there is none.

        Raises ConnectionFailedError if none connects; TLSHandshakeError (final: call() does
        not retry it) if, besides, one of them failed TLS, which names that one."""
        async with self._conn_lock:
            if self._closed:  # a watch (or its resume) must not open a connection either
                raise ConnectionLost("the client is closed")
            if self._conn is not None and self._conn.is_open:
                return self._conn
            last = tls_failure = None
            for _ in range(len(self.endpoints)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self._conn = await connection.connect_endpoint(
                        self.endpoints[self._index], min(remaining, CONNECT_TIMEOUT_S),
                        self._ssl_context, self._hello, server_name=self._server_name)
                    if self.prefer_leader:
                        self._conn = await self._leader_conn(self._conn, deadline)
                    return self._conn
                except TLSHandshakeError as exc:
                    last = exc
                    tls_failure = tls_failure or exc
                    self._index = (self._index + 1) % len(self.endpoints)
                except (OSError, asyncio.TimeoutError, wire.RaftkvError) as exc:
                    last = exc
                    self._index = (self._index + 1) % len(self.endpoints)
            eps = ",".join(e.name for e in self.endpoints)
            if tls_failure is not None:
                raise TLSHandshakeError(f"cannot connect to any of {eps}: {tls_failure}")
            raise ConnectionFailedError(f"cannot connect to any of {eps}: {last}")

    async def _leader_conn(self, conn, deadline):
        """conn, or a new connection to the endpoint that is the leader conn's member names
        (found by asking the other endpoints who they are)."""
        leader, me, self._term = await _leader_and_self(conn, deadline)
        wait_until = min(deadline, time.monotonic() + LEADER_WAIT_S)
        while me and not leader and time.monotonic() + LEADER_POLL_S < wait_until:
            await asyncio.sleep(LEADER_POLL_S)  # an election is under way
            leader, me, self._term = await _leader_and_self(conn, deadline)
        if not leader or leader == me:
            return conn
        for i, ep in enumerate(self.endpoints):
            if i == self._index or deadline - time.monotonic() <= 0:
                continue
            try:
                other = await connection.connect_endpoint(ep, LEADER_PROBE_TIMEOUT_S,
                                                          self._ssl_context, self._hello,
                                                          server_name=self._server_name)
            except (OSError, asyncio.TimeoutError, wire.RaftkvError):
                continue
            if (await _leader_and_self(other, deadline))[1] == leader:
                _retire(conn)
                self._index = i
                return other
            other.close()
        return conn

    def _note_term(self, resp):
        """A response from a later Raft term than the one the connection was chosen in: the
        leader may have moved, so look for it again (in the background; requests go on)."""
        term = (resp.get("header") or {}).get("raft_term") if isinstance(resp, dict) else None
        if term and self._term and term != self._term and self._recheck is None:
            self._term = term
            self._recheck = asyncio.get_running_loop().create_task(self._recheck_leader())

    async def _recheck_leader(self):
        try:
            async with self._conn_lock:
                old = self._conn
                if old is None or not old.is_open or self._closed:
                    return
                new = await self._leader_conn(old, time.monotonic() + CONNECT_TIMEOUT_S)
                if new is not old:
                    self._conn = new  # later requests go to the leader; old ones finish
        except (OSError, ConnectionError, asyncio.TimeoutError, wire.RaftkvError):
            pass  # keep the connection there is; a later term change tries again
        finally:
            self._recheck = None

    def forget_token(self, token):
        """The members no longer know token: the next request authenticates again."""
        if token is not None and token == self._token:
            self._token = None

    def _failover(self, conn):
        """Drop conn (if still current) and move to the next endpoint."""
        if conn is not None and conn is self._conn:
            conn.close()
            self._conn = None
            self._index = (self._index + 1) % len(self.endpoints)

    async def with_token(self, body):
        """body with the auth token (authenticating first if need be); body itself without
        a user."""
        if self.user is None or self._auth_off:
            return body
        async with self._auth_lock:
            if self._token is None and not self._auth_off:
                try:
                    resp = await self.call("authenticate",
                                           {"name": self.user, "password": self._password},
                                           write=False, authenticated=False)
                except wire.RaftkvError as exc:
                    if exc.code != "AUTH_NOT_ENABLED":
                        raise
                    self._auth_off = True  # as etcd's clients: carry on without a token
                    return body
                self._token = resp["token"]
            return dict(body, token=self._token) if self._token else body

    async def call(self, op, body, *, write=None, timeout=None, authenticated=True):
        """One request with failover and retries; returns the response dict.
        authenticated=False: send it without the auth token."""
        if self._closed:
            raise ConnectionLost("the client is closed")
        if write is None:
            write = op in wire.WRITE_OPS
        idem = (self.client_id, next(self._seq)) if write else None
        deadline = time.monotonic() + (timeout or self.timeout)
        backoff, last = BACKOFF_FIRST_S, None
        reauthenticated = not authenticated or self.user is None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn = None
            try:
                request = await self.with_token(body) if authenticated else body
                conn = await self.connection(deadline)
                remaining = deadline - time.monotonic()
                resp = await conn.request(op, request, idem, remaining)
                if self.prefer_leader:
                    self._note_term(resp)
                return resp
            except wire.RaftkvError as exc:
                if exc.code == "INVALID_AUTH_TOKEN" and not reauthenticated:
                    reauthenticated = True  # expired, or the member restarted: once more
                    self.forget_token(request.get("token"))
                    continue
                if exc.code == "USER_EMPTY" and not reauthenticated and "token" not in request:
                    reauthenticated = True  # auth was off when we looked: it is on now
                    self._auth_off = False
                    if write:  # refused, not applied: the retry is a new request
                        idem = (self.client_id, next(self._seq))
                    continue
                if exc.code not in RETRY_CODES:
                    raise
                last = exc
                self._failover(conn)
            except asyncio.TimeoutError:
                last = wire.RaftkvError("TIMEOUT", f"raftkv client: {op} timed out")
                break
            except TLSHandshakeError:
                raise  # every endpoint was tried; a retry would fail the same way
            except (OSError, ConnectionError) as exc:
                last = exc
                self._failover(conn)
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        if last is None:
            last = wire.RaftkvError("TIMEOUT", f"raftkv client: {op} timed out")
        raise last

    # Key-value.

    async def get(self, key, serializable=False, revision=0):
        """(value, KVMetadata) of one key, or (None, None)."""
        resp = await self.call("range", _range_body(key, serializable=serializable,
                                                     revision=revision))
        kvs = _kvs(resp)
        return kvs[0] if kvs else (None, None)

    async def get_response(self, key, range_end=None, **kw):
        """The raw range response dict (header, kvs, more, count); see txn._range_body."""
        return await self.call("range", _range_body(key, range_end, **kw))

    async def get_prefix(self, prefix, sort_order=None, sort_target="key", **kw):
        resp = await self.call("range", _range_body(prefix, prefix=True, sort_order=sort_order,
                                                     sort_target=sort_target, **kw))
        return _kvs(resp)

    async def get_range(self, range_start, range_end, sort_order=None, sort_target="key",
                        **kw):
        resp = await self.call("range", _range_body(range_start, range_end,
                                                     sort_order=sort_order,
                                                     sort_target=sort_target, **kw))
        return _kvs(resp)

    async def get_all(self, sort_order=None, sort_target="key", **kw):
        return await self.get_range(b"\0", b"\0", sort_order, sort_target, **kw)

    async def put(self, key, value, lease=None, prev_kv=False):
        """The put response dict (header, and prev_kv if asked and the key existed)."""
        return await self.call("put", _put_body(key, value, lease, prev_kv))

    async def put_if_not_exists(self, key, value, lease=None):
        t = self.transactions
        ok, _ = await self.transaction([t.create(key) == 0], [t.put(key, value, lease)], [])
        return ok

    async def replace(self, key, initial_value, new_value):
        """Compare-and-swap: put new_value if key's value is initial_value, in one txn; True
        if it did. A missing key never matches, not even initial_value b"" (as in etcd)."""
        t = self.transactions
        ok, _ = await self.transaction([t.value(key) == initial_value],
                                       [t.put(key, new_value)], [])
        return ok

    async def delete(self, key, prev_kv=False, return_response=False):
        resp = await self.call("delete_range", _delete_body(key, prev_kv=prev_kv))
        return resp if return_response else resp.get("deleted", 0) >= 1

    async def delete_prefix(self, prefix, prev_kv=False):
        return await self.call("delete_range", _delete_body(prefix, prefix=True,
                                                            prev_kv=prev_kv))

    async def delete_range(self, key, range_end, prev_kv=False):
        return await self.call("delete_range", _delete_body(key, range_end, prev_kv=prev_kv))

    async def transaction(self, compare, success=None, failure=None):
        """(succeeded, responses); a range response is given as a list of (value, meta)."""
        resp = await self.call("txn", txn_body(compare, success, failure))
        out = []
        for r in resp.get("responses", []):
            if "response_range" in r:
                out.append(_kvs(r["response_range"]))
            else:
                out.append(r)
        return resp.get("succeeded", False), out

    async def get_json(self, key, default=None):
        value, _ = await self.get(key)
        return default if value is None else json.loads(value)

    async def put_json(self, key, obj, lease=None):
        return await self.put(key, json.dumps(obj, separators=(",", ":")), lease)

    # Watches, leases, locks.

    async def watch(self, key, range_end=None, start_revision=0, prev_kv=False,
                    prefix=False, filters=None, progress_notify=False):
        """(events, cancel): an async iterator of Events and a coroutine function to stop it.
        progress_notify: the iterator also yields a ProgressNotify(revision) each time the
        member's --experimental-watch-progress-notify-interval passes without an event."""
        w = Watch(self, _watch_body(key, range_end, start_revision, prev_kv, prefix, filters,
                                    progress_notify))
        await w.start()
        return w, w.cancel

    async def watch_prefix(self, prefix, **kw):
        return await self.watch(prefix, prefix=True, **kw)

    async def watch_once(self, key, timeout=None, **kw):
        """The first Event on key after the watch starts (kw: watch()'s arguments, e.g.
        start_revision, prefix), then the watch is cancelled. Raises WatchTimedOut when none
        came within `timeout` seconds (None: wait for ever). With progress_notify the first
        item may be a ProgressNotify."""
        events, cancel = await self.watch(key, **kw)
        try:
            return await asyncio.wait_for(events.__anext__(), timeout)
        except asyncio.TimeoutError:
            raise WatchTimedOut(f"no event on {key!r} within {timeout} s") from None
        except StopAsyncIteration:  # the member ended the stream: no event will come
            raise ConnectionLost(f"the watch on {key!r} ended before an event") from None
        finally:
            await cancel()

    async def watch_prefix_once(self, prefix, timeout=None, **kw):
        return await self.watch_once(prefix, timeout, prefix=True, **kw)

    async def add_watch_callback(self, key, callback, **kw):
        """Watch key (kw: watch()'s arguments) and call callback(response) with each
        WatchResponse (its header dict and its events, python-etcd3's shape) from a task on
        this client's loop; an error that ends the watch is passed instead, as the last call.
        callback is a plain function that must not block, or a coroutine function. Returns a
        watch id (this client's own, stable across failover) for cancel_watch. See
        watch.CallbackWatch; the blocking Client calls callbacks from a thread of their own."""
        events, _ = await self.watch(key, **kw)
        watch_id = next(self._watch_ids)
        self._callback_watches[watch_id] = CallbackWatch(
            events, callback, lambda: self._callback_watches.pop(watch_id, None))
        return watch_id

    async def add_watch_prefix_callback(self, prefix, callback, **kw):
        return await self.add_watch_callback(prefix, callback, prefix=True, **kw)

    async def cancel_watch(self, watch_id):
        """Stop an add_watch_callback watch: once this returns its callback is not called
        again. False if watch_id is unknown or its watch already ended (then a no-op)."""
        cw = self._callback_watches.pop(watch_id, None)
        if cw is None:
            return False
        await cw.cancel()
        return True

    async def lease(self, ttl, lease_id=None):
        resp = await self.call("lease_grant", {"TTL": int(ttl), "ID": int(lease_id or 0)})
        return Lease(self, resp["ID"], resp.get("TTL", ttl))

    async def revoke_lease(self, lease_id):
        return await self.call("lease_revoke", {"ID": int(lease_id)})

    async def refresh_lease(self, lease_id):
        return await self.call("lease_keepalive", {"ID": int(lease_id)})

    async def leases(self):
        resp = await self.call("lease_leases", {})
        return [lease["ID"] for lease in resp.get("leases", [])]

    async def get_lease_info(self, lease_id):
        """The LeaseTimeToLive response of lease_id as a dict: ID, TTL (seconds left, -1 once
        the lease is gone), grantedTTL (0 once gone) and keys (the keys attached), with the
        header. Lease.remaining_ttl() and Lease.keys() ask for one field each."""
        return await self.call("lease_timetolive", {"ID": int(lease_id), "keys": True})

    def lock(self, name, ttl=60, *, prefix=LOCK_PREFIX, lease=None):
        """An etcd-style mutex; see raftkv/client/lock.py. Use `async with client.lock(..)`.
        prefix=b"" gives etcdctl's and clientv3's key (b"<name>/<lease id>"); lease: hold
        it under this lease (a Session's) instead of one of ttl seconds."""
        return Lock(self, name, ttl, prefix=prefix, lease=lease)

    def election(self, name, ttl=60, *, lease=None):
        """A leader election (clientv3/concurrency's); see raftkv/client/election.py."""
        return Election(self, name, ttl, lease=lease)

    def session(self, ttl=60):
        """A lease kept alive in the background: `async with client.session(ttl) as s`."""
        return Session(self, ttl)

    # Cluster.

    async def status(self):
        return await self.call("status", {})

    async def members(self):
        return (await self.call("member_list", {})).get("members", [])

    async def member_add(self, peer_urls, learner=False):
        """The MemberAdd response: header, the new member (its ID), the members."""
        body = {"peerURLs": list(peer_urls)}
        if learner:
            body["isLearner"] = True
        return await self.call("member_add", body)

    async def member_remove(self, member_id):
        return await self.call("member_remove", {"ID": int(member_id)})

    async def member_promote(self, member_id):
        return await self.call("member_promote", {"ID": int(member_id)})

    async def member_update(self, member_id, peer_urls):
        """Change a member's peer URLs (etcd's MemberUpdate; raftkvctl member update). The
        response: header and the members. Unknown ID: RaftkvError MEMBER_NOT_FOUND."""
        if isinstance(peer_urls, str):
            peer_urls = [peer_urls]
        return await self.call("member_update", {"ID": int(member_id),
                                                 "peerURLs": list(peer_urls)})

    async def alarms(self):
        """The raised alarms: [{"memberID", "alarm"}] (alarm 1: NOSPACE, 2: CORRUPT)."""
        return (await self.call("alarm", {"action": 0})).get("alarms", [])

    async def create_alarm(self, member_id=0, alarm=1):
        """Raise an alarm (default NOSPACE: the cluster refuses writes until it is disarmed;
        python-etcd3's create_alarm). Root only once auth is on. Returns the alarm raised,
        [{"memberID", "alarm"}]."""
        body = {"action": 1, "memberID": int(member_id), "alarm": int(alarm)}
        return (await self.call("alarm", body)).get("alarms", [])

    async def disarm(self, member_id=0, alarm=0):
        """Deactivate an alarm (member_id 0 and alarm 0: every raised one); returns the
        alarms that were deactivated."""
        body = {"action": 2, "memberID": int(member_id), "alarm": int(alarm)}
        return (await self.call("alarm", body)).get("alarms", [])

    async def defragment(self):
        """Ask the member this client talks to to defragment its store, as etcd's
        Maintenance.Defragment (its data.mdb replaced by a compacted copy while it runs;
        root only with auth on). Returns the member's answer; DEFRAG_FAILED if it could not
        (the old file still in use, nothing changed)."""
        return await self.call("defragment", {})

    async def hash_kv(self, revision=0):
        """etcd's HashKV of the member this client talks to: header, hash, compact_revision."""
        return await self.call("hash_kv", {"revision": int(revision)} if revision else {})

    async def hash(self):
        """etcd's Hash of the member this client talks to: a CRC-32C of its whole backend,
        covering every write it acknowledged (an int, as python-etcd3's hash()). hash_kv,
        over the key history alone, is what corruption checks compare between members."""
        return (await self.call("hash", {})).get("hash", 0)

    async def move_leader(self, target_id):
        """Hand the leadership to member target_id; the member asked must be the leader."""
        return await self.call("move_leader", {"targetID": int(target_id)})

    async def snapshot(self, f):
        """Write the member's backend image (etcd's snapshot format: a bbolt file) to the
        binary file object f, then its SHA-256, as etcdctl snapshot save does (so `raftkvutl
        snapshot restore` and `etcdctl snapshot restore` check it). The member is the one this
        client talks to: give one endpoint and prefer_leader=False to choose it. Returns the
        image's size in bytes (without the hash)."""
        deadline = time.monotonic() + self.timeout
        body = await self.with_token({})
        conn = await self.connection(deadline)
        request_id, queue = conn.open_stream("snapshot", body)
        digest, size = hashlib.sha256(), 0
        try:
            while True:
                status, payload = await asyncio.wait_for(
                    queue.get(), max(self.timeout, SNAPSHOT_IDLE_S))
                if status == wire.STATUS_ITEM:
                    f.write(payload)
                    digest.update(payload)
                    size += len(payload)
                elif status in (wire.STATUS_END, wire.STATUS_OK):
                    break
                elif payload:
                    raise wire.RaftkvError.from_wire(payload)
                else:
                    raise ConnectionLost(f"connection to {conn.endpoint} lost during snapshot")
        except asyncio.TimeoutError:
            raise wire.RaftkvError("TIMEOUT", "raftkv client: snapshot stalled") from None
        finally:
            conn.close_stream(request_id)
        f.write(digest.digest())
        return size

    async def compact(self, revision, physical=False):
        return await self.call("compact", {"revision": int(revision), "physical": physical})

    async def put_many(self, items, progress=None, window=PUT_MANY_WINDOW,
                       batch_max=PUT_MANY_BATCH_MAX):
        """Bulk load an iterable of (key, value): batches of plain puts, `window` in flight.

        Each put gets its own revision, as if sent alone. progress(result) is called after
        every batch with the PutManyResult so far. Items fail one by one; returns the
        PutManyResult (done, failed, first errors, elapsed_s).
        """
        assert window >= 1
        assert batch_max >= 1
        result = PutManyResult()
        t0 = time.monotonic()
        slots = asyncio.Semaphore(window)
        tasks = set()
        for batch in _batches(items, batch_max):
            await slots.acquire()
            task = asyncio.get_running_loop().create_task(
                self._put_batch(batch, result, progress))
            tasks.add(task)
            task.add_done_callback(lambda t: (tasks.discard(t), slots.release()))
        if tasks:
            await asyncio.gather(*tasks)
        result.elapsed_s = time.monotonic() - t0
        return result

    async def _put_batch(self, kvs, result, progress):
        try:
            if self._put_many_op:
                try:
                    resp = await self.call("put_many", {"kvs": kvs}, write=True)
                except wire.RaftkvError as exc:
                    if exc.code != "UNKNOWN_OP":
                        raise
                    self._put_many_op = False  # a member without put_many: use "batch"
            if not self._put_many_op:
                resp = _batch_result(await self.call("batch", _batch_body(kvs), write=True))
        except (wire.RaftkvError, ConnectionError, OSError) as exc:
            result.failed += len(kvs) // 2
            result.note_error(f"{type(exc).__name__}: {exc}")
        else:
            result.done += resp.get("done", 0)
            for _, err in resp.get("errors", []):
                result.failed += 1
                result.note_error(str(wire.RaftkvError.from_wire(err)))
        if progress is not None:
            progress(result)


def _batches(items, batch_max):
    """Flat [key, value, ...] lists of at most batch_max pairs and about
    PUT_MANY_BATCH_BYTES_MAX bytes."""
    batch, size, limit = [], 0, 2 * batch_max
    for key, value in items:
        key = key if type(key) is bytes else to_bytes(key)
        value = value if type(value) is bytes else to_bytes(value)
        batch += (key, value)
        size += len(key) + len(value) + 32
        if len(batch) >= limit or size >= PUT_MANY_BATCH_BYTES_MAX:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _batch_body(kvs):
    """The "batch" request of a flat [key, value, ...] list (members without put_many)."""
    return {"requests": [{"request_put": {"key": kvs[i], "value": kvs[i + 1]}}
                         for i in range(0, len(kvs), 2)]}


def _batch_result(resp):
    """A "batch" response as a put_many one: {"done": n, "errors": [[i, error], ...]}."""
    done, errors = 0, []
    for i, item in enumerate(resp.get("responses", [])):
        if "error" in item:
            errors.append([i, item["error"]])
        else:
            done += 1
    return {"done": done, "errors": errors}


def _watch_body(key, range_end, start_revision, prev_kv, prefix, filters,
                progress_notify=False):
    key = to_bytes(key)
    body = {"key": key}
    if prefix:
        body["range_end"] = prefix_range_end(key)
    elif range_end is not None:
        body["range_end"] = to_bytes(range_end)
    if start_revision:
        body["start_revision"] = int(start_revision)
    if prev_kv:
        body["prev_kv"] = True
    if filters:
        body["filters"] = list(filters)
    if progress_notify:
        body["progress_notify"] = True
    return body
