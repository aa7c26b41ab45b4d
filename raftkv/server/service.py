"""The service both front ends call (docs/INTERNAL_API.md §5): routes each op to the log (writes),
a ReadIndex barrier then the local store (linearizable reads), the local store (serializable
reads), the leader (lease keep-alives) or the membership machinery.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
import time

import msgpack

from raftkv.errors import RaftkvError
from raftkv.mvcc import auth as auth_mod, snapshot as mvcc_snapshot, txncheck
from raftkv.mvcc.kvstore import ALARM_CORRUPT as CORRUPT, ALARM_NOSPACE as NOSPACE
from raftkv.mvcc.kvstore import CORRUPT_STOPS
from raftkv.raft import ConfChangeSingle, ConfChangeType, ConfChangeV2, Role
from raftkv.raft.errors import ProposalDroppedError
from raftkv.server.authn import AuthFrontEnd
from raftkv.server.config import ConfigError, host_port
from raftkv.server.config import member_id as derive_member_id
from raftkv.server.leaderless import FAIL_FAST, retry_leaderless
from raftkv.server.member import MEMBER_UPDATE_OP
from raftkv.server.proposals import Reply

log = logging.getLogger("raftkv.service")

VERSION = "3.4.23"  # the etcd API version raftkv answers as (etcdctl checks it)
WRITE_OPS = frozenset({"put", "delete_range", "txn", "compact", "lease_grant", "lease_revoke",
                       "alarm_set"})
GROWING_OPS = frozenset({"put", "txn", "lease_grant", "batch"})
FAST_WRITE_OPS = frozenset({"put", "delete_range"})  # start_write() takes these
# Writes that always need a user once auth is on (etcd 3.4 lets lease grants, compactions and
# alarms through without one).
KEY_WRITE_OPS = frozenset({"put", "delete_range", "txn"})
REQUEST_OVERHEAD_BYTES = 64
BATCH_OPS = frozenset({"put", "delete_range"})
BATCH_CHUNK_OPS = 1000  # writes per proposal of a bulk batch
MOVE_LEADER_TIMEOUT_S = 10.0
QUOTA_CHECK_INTERVAL_S = 0.1  # how stale the backend-size check before a write may be
LEADER_MEMBER_OPS = ("member_add", "member_remove", "member_promote")  # forwarded to the leader
# Root only once auth is on (as etcd: membership, and the maintenance calls that read or touch
# the whole store; Service.snapshot too).
ADMIN_FRONT_OPS = frozenset({*LEADER_MEMBER_OPS, "member_update", "defragment", "hash",
                             "hash_kv", "move_leader"})
# Raising an alarm stops every write: root only once auth is on (etcd 3.4.23 lets any client,
# with no token, ACTIVATE; docs/ETCD_DIFFERENCES.md). GET and DEACTIVATE stay open as etcd's.
ALARM_ACTIVATE, ALARM_DEACTIVATE = 1, 2  # AlarmRequest's actions (0: GET)
LEARNER_READY_PERCENT = 0.9  # etcd's readyPercent for promoting a learner
MAX_LEARNERS = 1  # etcd 3.4's maxLearners
# --strict-reconfig-check: a peer counts as active once the leader's connection to it has been
# up this long (etcd's HealthInterval).
HEALTH_INTERVAL_S = 5.0
SNAPSHOT_READ_BYTES = 1 << 20
# A read-only txn refused for want of a leader with these is sent again (_txn): nothing was
# proposed, or what was can change nothing.
LEADERLESS_CODES = frozenset({"NO_LEADER", "LEADER_CHANGED"})
READ_RETRY_MIN_S = 0.05  # the shortest wait for a retried read-only txn's proposal


def _size(body):
    n = REQUEST_OVERHEAD_BYTES
    for v in body.values():
        if isinstance(v, (bytes, str)):
            n += len(v)
        elif isinstance(v, (list, dict)):
            n += len(msgpack.packb(v, use_bin_type=True))
    return n


def _pop_identity(body):
    """The request's identity fields (token, certificate CN), popped from body for user_of,
    and any user field a client put in (only the service sets it)."""
    body.pop(auth_mod.USER_FIELD, None)
    return {name: body.pop(name) for name in ("token", auth_mod.CERT_USER_FIELD)
            if name in body}


class Service:
    def __init__(self, member):
        self.m = member
        self.timeout_s = member.cfg.request_timeout
        self.max_request_bytes = member.cfg.max_request_bytes
        self._quota_checked_at = float("-inf")
        self._over_quota = False
        for op in LEADER_MEMBER_OPS:
            member.forward_handlers[op] = getattr(self, "_op_" + op)
        for op in ("lease_keepalive", "lease_timetolive"):
            member.forward_handlers[op] = functools.partial(self._lessor_here, op)
        self.auth = AuthFrontEnd(self)

    @property
    def loop(self):
        return self.m.loop

    def header(self, revision=None):
        h = self.m.header()
        if revision is not None:
            h["revision"] = revision
        return h

    def cluster_header(self):
        """etcd's ClusterServer header (member list, add, remove, update, promote): cluster
        and member IDs and the raft term, no revision (etcd 3.4 answers revision 0)."""
        h = self.m.header()
        h.pop("revision", None)
        return h

    async def call(self, op, body):
        if not isinstance(body, dict):
            raise RaftkvError("BAD_REQUEST", "raftkv: request body must be a map")
        who = _pop_identity(body)
        txncheck.check_shape(op, body)  # before anything is proposed (apply checks again)
        self._request_checks(op, body)
        if op == "range":  # its token and permission are checked after its barrier
            return await self._op_range(body, who)
        if op == "watch_check":
            return self._watch_check(body, who)
        if op in self.auth.OPS:
            return await self.auth.call(op, body, who)
        user = self.user_of(who)
        auth = self.m.kv.auth
        self._require_user(op, user, body)
        if auth.enabled and (op in ADMIN_FRONT_OPS or  # reads are checked where they are
                             (op == "alarm" and body.get("action") == ALARM_ACTIVATE)):
            auth.check_admin(user)  # served, writes in apply
        handler = getattr(self, "_op_" + op, None)
        if op == "lease_timetolive" and body.get("keys") and auth.enabled:
            return self._lease_keys_readable(await handler(body), user)
        if handler is not None:
            return await handler(body)
        if op in WRITE_OPS:
            body[auth_mod.USER_FIELD] = user
            if op == "txn":
                return await self._txn(body)
            return await self._write(op, body)
        raise RaftkvError("UNKNOWN_OP", f"raftkv: unknown operation {op!r}")

    def _request_checks(self, op, body):
        """etcd's checks of a KV request in its gRPC layer (v3rpc/key.go), which come before
        it looks at the caller's token or permissions: an empty key, a value or lease given
        with ignore_value or ignore_lease, the txn checks (--max-txn-ops, duplicate keys).
        Apply checks the same again."""
        if op in ("range", "delete_range"):
            txncheck.check_key(body)
        elif op == "put":
            txncheck.check_put(body)
        elif op == "txn":
            txncheck.check_txn(body, self.m.cfg.max_txn_ops)  # etcd's --max-txn-ops

    def _require_user(self, op, user, body):
        """USER_EMPTY at once for a key write without a user once auth is on (apply would
        refuse it too), except a txn with no key to check."""
        if not user and op in KEY_WRITE_OPS and self.m.kv.auth.enabled and \
                (op != "txn" or auth_mod.txn_checks_keys(body)):
            raise RaftkvError("USER_EMPTY")

    def _bulk_user(self, who):
        """batch and put_many: no CORRUPT alarm raised, and for a client that fails over
        itself (FAIL_FAST) a leader known; returns the user `who` (the request's identity
        fields, see user_of) names. Without a leader, the chunks of another client's request
        wait for one as any write (_write)."""
        if self.loop.leader_id == 0 and FAIL_FAST.get():
            raise RaftkvError("NO_LEADER")
        user = self.user_of(dict(who or {}))
        if self.m.kv.corrupt:
            raise RaftkvError("CORRUPT")
        return user

    def user_of(self, body):
        """The user a request runs as: pops its "token", its client certificate's CN (put in
        by the front end) and any user field the client put in (only the service sets it).
        "" when auth is off, or without a token or (with --client-cert-auth) a certificate;
        INVALID_AUTH_TOKEN for a token this member does not know (or that expired), also with
        auth off, as etcd (its AuthInfoFromCtx: no simple token is valid after AuthDisable).
        A token wins over the certificate, as in etcd."""
        token = body.pop("token", None)
        body.pop(auth_mod.USER_FIELD, None)
        cert_user = body.pop(auth_mod.CERT_USER_FIELD, None)
        auth = self.m.kv.auth
        if token:
            user = auth.user_of_token(token)
            return user if auth.enabled else ""
        if not auth.enabled:
            return ""
        if cert_user and self.m.cfg.client_cert_auth:
            return cert_user
        return ""

    # ---------------------------------------------------------------- KV
    async def _write(self, op, body, timeout_s=None):
        """Propose op through the log and wait for its answer. A member that knows no leader
        (an election, a majority down) holds the write until one is known, then proposes it,
        as etcd 3.4.23 does; at --request-timeout (or timeout_s) first it fails with TIMEOUT
        (`etcdserver: request timed out`) and is never proposed, nor if its caller goes away
        (the task cancelled: a gRPC deadline, a closed connection). A client that fails over
        itself (leaderless.FAIL_FAST) is refused at once instead (NO_LEADER)."""
        rid = body.pop("request_id", None)
        fail_fast = FAIL_FAST.get()
        size = self._check_write(body, op, fail_fast)
        if op in GROWING_OPS:
            await self._check_quota()
        fut = self.loop.propose(op, body, size, timeout_s or self.timeout_s, rid=rid,
                                fail_fast=fail_fast)
        resp = await fut
        if isinstance(resp, RaftkvError):
            raise resp
        return self._with_header(resp)

    async def _txn(self, body):
        """A txn goes through the log (held while there is no leader, as every write: _write).
        One that writes nothing (txncheck.read_only) is a linearizable read, which etcd serves
        after a ReadIndex barrier, waiting for a leader until its request timeout: refused
        here for want of a leader (LEADER_CHANGED, proposed to a leader that is gone, harmless
        if applied after all; NO_LEADER, nothing proposed), it is sent again until
        --request-timeout has passed since it arrived, then TIMEOUT, as etcd 3.4.23 answers.
        A txn with a leader pays one clock read for this. Not for a client that fails over
        itself (leaderless.FAIL_FAST): the refusal goes back to it at once."""
        arrived = asyncio.get_running_loop().time()
        try:
            return await self._write("txn", body)
        except RaftkvError as exc:
            if exc.code not in LEADERLESS_CODES or not txncheck.read_only(body) or \
                    FAIL_FAST.get():
                raise
        deadline = arrived + self.timeout_s
        clock = asyncio.get_running_loop().time

        def attempt():  # a fresh body each time (the first went into the log, maybe)
            return self._write("txn", dict(body), max(deadline - clock(), READ_RETRY_MIN_S))
        try:
            return await retry_leaderless(attempt, max(0.0, deadline - clock()),
                                          LEADERLESS_CODES)
        except RaftkvError as exc:
            if exc.code in LEADERLESS_CODES:
                raise RaftkvError("TIMEOUT") from None
            raise

    def _check_write(self, body, op, fail_fast):
        if self.m.kv.corrupt and op in CORRUPT_STOPS:  # no writes until disarmed
            raise RaftkvError("CORRUPT")
        size = _size(body)
        if size > self.max_request_bytes:
            raise RaftkvError("REQUEST_TOO_LARGE")
        if self.loop.leader_id == 0 and fail_fast:  # others wait for one (RaftLoop.propose)
            raise RaftkvError("NO_LEADER")
        return size

    def start_write(self, op, body, done, fail_fast=False):
        """call(op, body) for a plain put or delete without a task: checks and proposes now,
        and done(response, exc) is called on the loop as soon as the entry is applied, where a
        task would resume a loop turn later. Returns a Reply (cancel() forgets it), or None
        when the request must take call() instead (another op, or the NOSPACE alarm is due
        to be raised). Raises what call() would raise before proposing. fail_fast: the
        request's client fails over itself (leaderless.FAIL_FAST, which the front end does
        not set for this task-free path)."""
        if op not in FAST_WRITE_OPS or not isinstance(body, dict) or \
                (op in GROWING_OPS and self._quota_verdict()):
            return None
        rid = body.pop("request_id", None)
        who = _pop_identity(body)
        txncheck.check_shape(op, body)
        self._request_checks(op, body)
        user = self.user_of(who)
        self._require_user(op, user, body)
        body[auth_mod.USER_FIELD] = user
        size = self._check_write(body, op, fail_fast)

        def finish(resp, exc):
            if exc is None and isinstance(resp, RaftkvError):
                exc = resp
            done(None if exc is not None else self._with_header(resp), exc)
        reply = Reply(finish)
        self.loop.propose(op, body, size, self.timeout_s, rid=rid, waiter=reply,
                          fail_fast=fail_fast)
        return reply

    async def batch(self, items, rid=None, who=None):
        """Many writes [(op, body)] in few proposals; one result (dict or RaftkvError) each.
        rid: the client's idempotency id; chunk k of the batch is deduplicated as (rid, k).
        who: the request's identity fields (token, certificate CN; see user_of); the items'
        own are ignored."""
        user = self._bulk_user(who)
        for op, body in items:  # all checked before any is proposed
            self.user_of(body)
            txncheck.check_shape(op, body)
            body[auth_mod.USER_FIELD] = user
        await self._check_quota()
        futs, chunk, chunk_bytes = [], [], 0
        for op, body in items:
            if op not in BATCH_OPS:
                raise RaftkvError("BAD_REQUEST", f"raftkv: {op!r} is not allowed in a batch")
            size = _size(body)
            if size > self.max_request_bytes:
                raise RaftkvError("REQUEST_TOO_LARGE")
            if chunk and (len(chunk) >= BATCH_CHUNK_OPS or
                          chunk_bytes + size > self.max_request_bytes):
                futs.append(self._propose_chunk(chunk, chunk_bytes, rid, len(futs)))
                chunk, chunk_bytes = [], 0
            chunk.append([op, body])
            chunk_bytes += size
        if chunk:
            futs.append(self._propose_chunk(chunk, chunk_bytes, rid, len(futs)))
        out = []
        for resp in await asyncio.gather(*futs):
            if isinstance(resp, RaftkvError):
                raise resp
            out.extend(r if isinstance(r, RaftkvError) else self._with_header(r) for r in resp)
        return out

    async def put_many(self, kvs, rid=None, who=None):
        """Plain puts [k0, v0, k1, v1, ...] (bytes) in one "puts" proposal per 1,000 pairs:
        each pair is a put at its own revision, as if sent alone, without a response each.
        Returns (done, errors): how many pairs were applied, and [(pair index, RaftkvError)]
        for the others. rid: the client's idempotency id; chunk k is deduplicated as (rid, k).
        who: the request's identity fields (see batch).
        """
        user = self._bulk_user(who)
        auth = self.m.kv.auth
        if len(kvs) % 2:
            raise RaftkvError("BAD_REQUEST", "raftkv: put_many wants kvs [key, value, ...]")
        await self._check_quota()
        limit, errors, futs, chunks = self.max_request_bytes, [], [], []
        chunk, pairs, chunk_bytes = [], [], 0
        for i in range(0, len(kvs), 2):
            key, value = kvs[i], kvs[i + 1]
            size = REQUEST_OVERHEAD_BYTES + len(key) + len(value)
            if not key or size > limit:
                errors.append((i >> 1, RaftkvError("REQUEST_TOO_LARGE" if key else "EMPTY_KEY")))
                continue
            if auth.enabled:  # pair by pair here; apply checks each chunk again, whole
                try:
                    auth.check_write("put", {"key": key}, user, _no_lease)
                except RaftkvError as exc:
                    errors.append((i >> 1, exc))
                    continue
            if chunk and (len(pairs) >= BATCH_CHUNK_OPS or chunk_bytes + size > limit):
                futs.append(self._propose_puts(chunk, chunk_bytes, rid, len(futs), user))
                chunks.append(pairs)
                chunk, pairs, chunk_bytes = [], [], 0
            chunk += (key, value)
            pairs.append(i >> 1)
            chunk_bytes += size
        if chunk:
            futs.append(self._propose_puts(chunk, chunk_bytes, rid, len(futs), user))
            chunks.append(pairs)
        done = 0
        for resp, pairs in zip(await asyncio.gather(*futs), chunks):
            if isinstance(resp, RaftkvError):
                errors.extend((i, resp) for i in pairs)
            else:
                done += resp["count"]
        errors.sort(key=lambda e: e[0])
        return done, errors

    def _propose_puts(self, chunk, size, rid, k, user):
        chunk_rid = None if rid is None else [*rid, k]
        return self.loop.propose("puts", {"kvs": chunk, auth_mod.USER_FIELD: user}, size,
                                 self.timeout_s, rid=chunk_rid, fail_fast=FAIL_FAST.get())

    def _quota_verdict(self):
        """True when the NOSPACE alarm must be raised (see _check_quota); raises NO_SPACE
        while it is on."""
        kv = self.m.kv
        now = asyncio.get_running_loop().time()
        if not kv.alarm and now >= self._quota_checked_at + QUOTA_CHECK_INTERVAL_S:
            # Summing the sub-databases' page counts costs ~50 us: not on every write.
            self._quota_checked_at = now
            self._over_quota = kv.over_quota(self.m.cfg.quota_backend_bytes)
        if kv.alarm:
            raise RaftkvError("NO_SPACE")
        return self._over_quota

    async def _check_quota(self):
        """etcd's quota check before proposing: over --quota-backend-bytes, raise the NOSPACE
        alarm through the log (so every member agrees) and refuse the write."""
        kv = self.m.kv
        if self._quota_verdict():
            self._over_quota = False
            log.warning("data in use (%d bytes) exceeds --quota-backend-bytes %d: raising "
                        "NOSPACE", kv.in_use_bytes(), self.m.cfg.quota_backend_bytes)
            await self.loop.propose("alarm_set", {"on": True}, 64, self.timeout_s)
        if kv.alarm:
            raise RaftkvError("NO_SPACE")

    def _propose_chunk(self, chunk, size, rid, k):
        chunk_rid = None if rid is None else [*rid, k]
        return self.loop.propose("batch", {"ops": chunk}, size, self.timeout_s, rid=chunk_rid,
                                 fail_fast=FAIL_FAST.get())

    def _with_header(self, resp):
        h = resp.get("header") or {}
        resp["header"] = self.header(h.get("revision"))
        return resp

    async def read_barrier(self):
        """Wait until a linearizable read may be served locally (ReadIndex, thesis §6.4).
        A member that knows no leader (an election, a majority down) holds the read until one
        is elected, and a round lost with its leader is asked again of the next one
        (RaftLoop.read_barrier), all within --request-timeout; then TIMEOUT (`etcdserver:
        request timed out`, as etcd 3.4.23 answers a read it could not serve). Without a
        quorum no round is ever confirmed, so the read never succeeds. A client that fails over
        itself (leaderless.FAIL_FAST) is refused at once instead: NO_LEADER, LEADER_CHANGED."""
        try:
            await asyncio.wait_for(self.loop.read_barrier(FAIL_FAST.get()), self.timeout_s)
        except asyncio.TimeoutError:
            raise RaftkvError("TIMEOUT") from None

    async def _op_header(self, body):
        """The current response header, as a serializable read would carry it (no auth
        check: the front ends' own replies need it)."""
        await self.local_barrier()
        return {"header": self.header()}

    def _lease_keys_readable(self, resp, user):
        """A time-to-live with keys names them only to a user who may read every one (etcd
        3.4.26's fix of CVE-2023-32082; 3.4.23 lists them to anyone)."""
        auth = self.m.kv.auth
        if not user:
            raise RaftkvError("USER_EMPTY")
        for key in resp.get("keys", ()):
            auth.check_read(user, key, b"")
        return resp

    def _watch_check(self, body, who):
        """etcd's isWatchPermitted when a gRPC watch is created (before its range and id are
        looked at): RaftkvError INVALID_AUTH_TOKEN, USER_EMPTY or PERMISSION_DENIED unless the
        user may read the range (an empty key is "\\0", as etcd makes it); else {}."""
        user = self.user_of(who)
        self.m.kv.auth.check_read(user, body.get("key") or b"\0", body.get("range_end", b""))
        return {}

    async def _op_range(self, body, who):
        """A read, checked once its barrier passed, as etcd checks in doSerialize: a token,
        user or permission given or taken away by a write before the read is seen as that
        write left it, even on a member that had not applied it when the read arrived."""
        body.pop("request_id", None)
        if not body.get("serializable"):
            await self.read_barrier()
        else:
            await self.local_barrier()
        user = self.user_of(who)
        if self.m.kv.auth.enabled:
            self.m.kv.auth.check_read(user, body.get("key", b""), body.get("range_end", b""))
        return self._with_header(self.m.kv.range(body))

    async def local_barrier(self):
        """Wait until this member's applied writes are visible (serializable reads)."""
        try:
            await asyncio.wait_for(self.loop.local_barrier(), self.timeout_s)
        except asyncio.TimeoutError:
            raise RaftkvError("TIMEOUT") from None

    # ---------------------------------------------------------------- leases
    def _leader_or_forward(self):
        if self.loop.role == Role.LEADER:
            return None
        if self.loop.leader_id == 0:
            raise RaftkvError("NO_LEADER")
        return self.loop.leader_id

    async def _on_lessor(self, op, body):
        """A keep-alive or time-to-live answered by the leader's lessor (forwarded from a
        follower) with this member's header, as etcd's v3rpc fills it where the client asked
        (the leader's revision may be ahead of or behind this member's); its revision, as a
        serializable read's, covers every write this member acknowledged before."""
        leader = self._leader_or_forward()
        if leader is not None:
            out = await self.m.transport.forward(leader, op, body)
        else:
            out = await self._lessor_here(op, body)
        await self.local_barrier()
        out["header"] = self.header()
        return out

    async def _lessor_here(self, op, body):
        """The leader's answer (also to a forwarded request). A time-to-live waits for a
        ReadIndex round first, so that the leader has applied every write any member
        acknowledged before the question: its lease and keys, and its lessor's deadline of
        a lease revoked and granted again, are not older than the asker's."""
        if op == "lease_timetolive":
            await self.read_barrier()
        return dict(self.m.lessor_answer(op, body), header=self.header())

    async def _op_lease_keepalive(self, body):
        return await self._on_lessor("lease_keepalive", body)

    async def _op_lease_timetolive(self, body):
        return await self._on_lessor("lease_timetolive", body)

    async def _op_lease_leases(self, body):
        await self.local_barrier()  # every grant and revoke this member acknowledged
        return {"header": self.header(), "leases": [{"ID": i} for i in self.m.kv.lease_ids()]}

    # ---------------------------------------------------------------- cluster
    def _member_dicts(self):
        out = []
        for mid in sorted(self.m.members):
            info = self.m.members[mid]
            out.append({"ID": mid, "name": info.get("name", ""),
                        "peerURLs": list(info.get("peer_urls", [])),
                        "clientURLs": list(info.get("client_urls", [])),
                        "isLearner": bool(info.get("is_learner")),
                        # raftkv's own (etcd's Member has no such field: the gRPC answer
                        # leaves it out); empty until the member has published them
                        "nativeURLs": list(info.get("native_urls", []))})
        return out

    async def _op_member_list(self, body):
        if body.get("linearizable"):
            await self.read_barrier()
        return {"header": self.cluster_header(), "members": self._member_dicts()}

    async def _conf_change(self, change_type, mid, info):
        cc = ConfChangeV2(changes=[ConfChangeSingle(change_type, mid)],
                          context=msgpack.packb(info or {}))
        if self.loop.role != Role.LEADER:
            leader = self._leader_or_forward()
            raise RaftkvError("NOT_LEADER", f"etcdserver: not leader (leader is {leader:x})")
        try:
            await self.loop.call(lambda node: node.propose_conf_change(cc))
        except ProposalDroppedError as exc:
            raise RaftkvError("UNHEALTHY", f"etcdserver: unhealthy cluster ({exc})") from None
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if self._applied(change_type, mid):
                return
            await asyncio.sleep(0.02)
        raise RaftkvError("TIMEOUT")

    def _applied(self, change_type, mid):
        cs = self.loop.conf_state
        if cs is None:
            return False
        if change_type == ConfChangeType.REMOVE_NODE:
            return mid not in cs.voters and mid not in cs.learners
        if change_type == ConfChangeType.ADD_LEARNER_NODE:
            return mid in cs.learners
        return mid in cs.voters

    async def _on_leader(self, op, body):
        """Membership changes run on the leader (as etcd forwards them): a follower passes
        the request on and returns the leader's answer; None when we are the leader."""
        if self.loop.role == Role.LEADER:
            return None
        leader = self._leader_or_forward()
        return await self.m.transport.forward(leader, op, body, timeout_s=self.timeout_s + 1)

    # ---- --strict-reconfig-check (etcd's mayAddMember, mayRemoveMember, mayPromoteMember),
    # on the leader before it proposes: a member is started once it has a name (the initial
    # members from the start, an added one once it has published), and active when the
    # leader's connection to it has been up for HEALTH_INTERVAL_S.
    def _voters_started(self, skip=0):
        """(voting members but skip, how many of them are started)."""
        voters = [v for v in self.m.conf.voters if v != skip]
        started = sum(1 for v in voters if self.m.members.get(v, {}).get("name"))
        return len(voters), started

    def _active_since(self, since):
        """The voting members (this one included) connected to the leader since `since`."""
        t = self.m.transport
        return {v for v in self.m.conf.voters if v == self.m.id or
                (t.active_since(v) is not None and t.active_since(v) <= since)}

    def _may_add_member(self, learner):
        if not self.m.cfg.strict_reconfig_check:
            return
        n, started = self._voters_started()
        ready = (started == 1 and n + 1 == 2) or started >= (n + 1) // 2 + 1
        if not learner and not ready:
            log.warning("refusing member add: %d of %d voting members started "
                        "(--strict-reconfig-check)", started, n)
            raise RaftkvError("MEMBER_NOT_ENOUGH_STARTED")
        since = time.monotonic() - HEALTH_INTERVAL_S
        active = self._active_since(since)
        if len(active) < len(self.m.conf.voters):
            log.warning("refusing member add: the leader has not been connected to every "
                        "voting member for %.0fs (%d of %d); adding one could lose the quorum "
                        "(--strict-reconfig-check)", HEALTH_INTERVAL_S, len(active),
                        len(self.m.conf.voters))
            raise RaftkvError("UNHEALTHY")

    def _may_remove_member(self, mid):
        if not self.m.cfg.strict_reconfig_check:
            return
        if mid not in self.m.conf.voters:
            return  # a learner: not part of any quorum
        n, started = self._voters_started(skip=mid)
        if started < n // 2 + 1:
            raise RaftkvError("MEMBER_NOT_ENOUGH_STARTED")
        if mid != self.m.id and self.m.transport.active_since(mid) is None:
            return  # a member that is down is not part of the active quorum
        voters = self.m.conf.voters
        since = time.monotonic() - HEALTH_INTERVAL_S
        active = len(self._active_since(since))
        if active - 1 < 1 + (len(voters) - 1) // 2:
            log.warning("refusing member remove: %d of %d voting members are active; removing "
                        "%x would leave no active quorum (--strict-reconfig-check)", active,
                        len(voters), mid)
            raise RaftkvError("UNHEALTHY")

    def _may_promote_member(self, mid):
        if not self.m.cfg.strict_reconfig_check:
            return
        n, started = self._voters_started()
        if started + 1 < (n + 1) // 2 + 1:  # the learner counts as started, and as a voter
            raise RaftkvError("MEMBER_NOT_ENOUGH_STARTED")

    def _learner_ready(self, mid):
        """etcd's isLearnerReady: the learner's match index is at least 90 % of ours."""
        raft = self.loop.node.raft
        pr = raft.prs.get(mid)
        return pr is not None and pr.match >= raft.log.last_index() * LEARNER_READY_PERCENT

    async def _op_member_add(self, body):
        forwarded = await self._on_leader("member_add", body)
        if forwarded is not None:
            return forwarded
        urls = _peer_urls(body)
        for info in self.m.members.values():
            if set(info.get("peer_urls", [])) & set(urls):
                raise RaftkvError("PEER_URL_EXIST")
        mid = derive_member_id(urls, self.m.cfg.initial_cluster_token)
        learner = bool(body.get("isLearner"))
        if learner and len(self.m.conf.learners) >= MAX_LEARNERS:
            raise RaftkvError("TOO_MANY_LEARNERS")
        self._may_add_member(learner)
        typ = ConfChangeType.ADD_LEARNER_NODE if learner else ConfChangeType.ADD_NODE
        await self._conf_change(typ, mid, {"name": "", "peer_urls": urls, "client_urls": []})
        member = {"ID": mid, "name": "", "peerURLs": urls, "clientURLs": [],
                  "isLearner": learner}
        return {"header": self.cluster_header(), "member": member, "members": self._member_dicts()}

    async def _op_member_remove(self, body):
        forwarded = await self._on_leader("member_remove", body)
        if forwarded is not None:
            return forwarded
        mid = body.get("ID", 0)
        if mid not in self.m.members:
            raise RaftkvError("MEMBER_NOT_FOUND")
        self._may_remove_member(mid)
        await self._conf_change(ConfChangeType.REMOVE_NODE, mid, None)
        return {"header": self.cluster_header(), "members": self._member_dicts()}

    async def _op_member_promote(self, body):
        forwarded = await self._on_leader("member_promote", body)
        if forwarded is not None:
            return forwarded
        mid = body.get("ID", 0)
        info = self.m.members.get(mid)
        if info is None:
            raise RaftkvError("MEMBER_NOT_FOUND")
        if not info.get("is_learner"):
            raise RaftkvError("MEMBER_NOT_LEARNER")
        if not self._learner_ready(mid):
            raise RaftkvError("LEARNER_NOT_READY")
        self._may_promote_member(mid)
        await self._conf_change(ConfChangeType.ADD_NODE, mid, None)
        return {"header": self.cluster_header(), "members": self._member_dicts()}

    async def _op_member_update(self, body):
        """etcd's MemberUpdate: a member's peer URLs change through the log (every member
        applies it and points its peer transport at the new address); the checks run at
        apply, as etcd's ValidateConfigurationChange: an unknown ID is "member not found",
        a URL another member uses "Peer URLs already exists". URLs raftkv cannot dial are
        refused up front with etcd's MemberAdd error (etcdctl checks them before sending)."""
        mid = body.get("ID", 0)
        urls = _peer_urls(body)
        await self._write(MEMBER_UPDATE_OP, {"ID": mid, "peerURLs": urls})
        return {"header": self.cluster_header(), "members": self._member_dicts()}

    # ---------------------------------------------------------------- maintenance
    async def _op_status(self, body):
        # The header's revision must include every write this member acknowledged before the
        # request (native and gRPC Status): a put is answered from its apply, before the
        # lingering store round makes it visible, so wait for that round as reads do.
        await self.local_barrier()
        st = self.loop.node.status()
        errors = ["memberID:%d alarm:%s " % (a["memberID"], "NOSPACE" if a["alarm"] == NOSPACE
                                             else "CORRUPT") for a in self._alarms()]
        if self.loop.leader_id == 0:  # as etcd 3.4.23's Status (etcdctl's ERRORS column)
            errors.append(RaftkvError("NO_LEADER").message)
        db = self.m.kv.backend_bytes()
        voters = st["voters"]
        return {"header": self.header(), "version": VERSION, "dbSize": db,
                "dbSizeInUse": self.m.kv.in_use_bytes(),
                "leader": self.loop.leader_id, "raftIndex": st["commit"],
                "raftTerm": st["term"], "raftAppliedIndex": self.loop.applied_index,
                "errors": errors, "isLearner": self.m.id in st["learners"],
                # raftkv's own additions (ignored by etcd clients):
                "members": len(voters), "quorum": len(voters) // 2 + 1,
                "fault_tolerance": max(0, len(voters) - (len(voters) // 2 + 1)),
                "role": st["role"], "backend": _backend()}

    async def _op_alarm(self, body):
        kv = self.m.kv
        action, kind = body.get("action", 0), body.get("alarm", 0)
        if action == ALARM_ACTIVATE:  # through the log (root only with auth on: see call)
            if kind not in (NOSPACE, CORRUPT):
                # etcd 3.4.23 records any alarm type, NONE too; raftkv keeps only these two
                return {"header": self.header(), "alarms": []}
            member = body.get("memberID", 0)  # a uint64 (txncheck.check_shape)
            await self._write("alarm_set", {"on": True, "alarm": kind, "memberID": member})
            # etcd answers with the alarm it raised, as the request named it (checked on
            # 3.4.23 over gRPC), however many others are raised
            return {"header": self.header(), "alarms": [{"memberID": member, "alarm": kind}]}
        if action == ALARM_DEACTIVATE:  # through the log
            disarmed = []
            # a store still over quota raises NOSPACE again on its next write
            if kind in (0, NOSPACE) and kv.alarm:
                await self._write("alarm_set", {"on": False})
                disarmed.append({"memberID": body.get("memberID") or self.m.id,
                                 "alarm": NOSPACE})
            if kind in (0, CORRUPT) and kv.corrupt:
                member = kv.corrupt_member
                await self._write("alarm_set", {"on": False, "alarm": CORRUPT})
                disarmed.append({"memberID": member, "alarm": CORRUPT})
            # etcd answers with the alarms it deactivated (etcdctl prints them), none if none
            return {"header": self.header(), "alarms": disarmed}
        return {"header": self.header(), "alarms": self._alarms()}

    def _alarms(self):
        kv, alarms = self.m.kv, []
        if kv.alarm:
            alarms.append({"memberID": self.m.id, "alarm": NOSPACE})
        if kv.corrupt:
            alarms.append({"memberID": kv.corrupt_member, "alarm": CORRUPT})
        return alarms

    async def _op_defragment(self, body):
        """This member's store only, as etcd's (etcdctl --cluster asks each member)."""
        await self.m.defragment()
        return {"header": self.header()}

    async def _op_hash_kv(self, body):
        return await self.m.hash_kv(body.get("revision", 0))

    async def _op_hash(self, body):
        # etcd's Hash commits its backend first, so it covers every write the member applied:
        # wait for the store round that makes this member's acknowledged writes visible.
        await self.local_barrier()
        h, current = await self.m.engine.gate.run(mvcc_snapshot.etcd_hash, self.m.kv)
        return {"header": self.header(current), "hash": h}

    async def _op_move_leader(self, body):
        target = body.get("targetID", 0)
        if self.loop.role != Role.LEADER:
            raise RaftkvError("NOT_LEADER")
        if target not in (self.loop.conf_state.voters if self.loop.conf_state else []):
            raise RaftkvError("BAD_LEADER_TRANSFEREE")
        await self.loop.call(lambda node: node.transfer_leader(target))
        deadline = asyncio.get_running_loop().time() + MOVE_LEADER_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if self.loop.leader_id == target:
                return {"header": self.header()}
            await asyncio.sleep(0.02)
        raise RaftkvError("TIMEOUT_DUE_TO_LEADER_FAIL")

    # ---------------------------------------------------------------- streams
    async def watch(self, body):
        user = self.user_of(body)
        txncheck.check_shape("watch", body)
        self.m.kv.auth.check_read(user, body.get("key", b""), body.get("range_end", b""))
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        progress = bool(body.get("progress_notify"))
        if not body.get("start_revision"):
            # From "now": every write this member acknowledged must be visible first, or the
            # watch would start before one of them and deliver it (as the gRPC front end's
            # header op does for its start revision).
            await self.local_barrier()
        w = self.m.kv.watch(body.get("key", b""), body.get("range_end", b""),
                            body.get("start_revision", 0), bool(body.get("prev_kv")),
                            body.get("filters") or (), progress,
                            on_ready=lambda _w: loop.call_soon_threadsafe(wake.set))
        # progress_notify: every --experimental-watch-progress-notify-interval without an event
        # sent, an item with no events and the revision up to which everything was delivered
        # (only while the watcher is caught up, as etcd's: it is a bookmark).
        interval_s = self.m.cfg.watch_progress_s
        tick_at = loop.time() + interval_s if progress else None
        sent = False  # an item went out since the last tick
        try:
            # First: the watcher is registered; every write after this revision will reach
            # it (a client may wait for this before it writes, as etcd's "created").
            yield {"created": True, "header": self.header(w.created_rev)}
            while True:
                batch = w.take()
                if not batch:
                    wake.clear()
                    batch = w.take()
                if not batch and tick_at is not None and loop.time() >= tick_at:
                    tick_at = loop.time() + interval_s
                    note, sent = None if sent else w.progress_response(), False
                    batch = [note] if note else []
                if not batch:
                    await _woken(wake, None if tick_at is None else tick_at - loop.time())
                    continue
                for resp in batch:
                    resp["header"] = self.header(resp.get("header", {}).get("revision"))
                    sent = sent or bool(resp.get("events"))
                    yield resp
                    if resp.get("canceled"):
                        return
        finally:
            w.cancel()

    async def snapshot(self, chunk_bytes=SNAPSHOT_READ_BYTES, who=None):
        """The member's state as etcd's backend (a bbolt file, mvcc_snapshot.export_bbolt):
        written by a worker thread to an unnamed temp file in the data dir (no memory bound
        by the state's size, nothing left behind by a crash), then read back in chunks.
        Root only once auth is on (who: the request's identity fields, see batch)."""
        self.m.kv.auth.check_admin(self.user_of(dict(who or {})))
        with tempfile.TemporaryFile(dir=self.m.cfg.data_dir, prefix="outgoing-snap-") as f:
            info = await self.m.engine.gate.run(mvcc_snapshot.export_bbolt, self.m.kv, f)
            log.info("snapshot: sending a %d-byte backend image at revision %d", info["size"],
                     info["revision"])
            f.seek(0)
            while True:
                chunk = await asyncio.to_thread(f.read, chunk_bytes)
                if not chunk:
                    return
                yield chunk


async def _woken(event, timeout_s):
    """Until event is set, or timeout_s seconds (None: no limit) have passed."""
    if timeout_s is None:
        await event.wait()
        return
    try:
        await asyncio.wait_for(event.wait(), max(timeout_s, 0.0))
    except asyncio.TimeoutError:
        pass


def _no_lease(lease_id):
    return ()


def _backend():
    from raftkv import storage

    return storage.BACKEND


def _peer_urls(body):
    """The request's peer URLs, each one a member could dial, or MEMBER_BAD_URLS (etcd parses
    them before proposing; a URL that fails later would fail in every member's apply)."""
    urls = body.get("peerURLs")
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise RaftkvError("MEMBER_BAD_URLS")
    try:
        for url in urls:
            host_port(url)
    except ConfigError:
        raise RaftkvError("MEMBER_BAD_URLS") from None
    return urls
