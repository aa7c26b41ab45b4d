"""Waiting out a moment without a leader: a request refused because its member knows no leader
(or lost the one it had asked) is sent again until the member's --request-timeout has passed.

etcd waits inside the request: its proposals block until a leader is known, its read loop asks
for a ReadIndex again until its request timeout. raftkv waits in the Ready loop itself:
linearizable reads in line for a ReadIndex round (RaftLoop.read_barrier), writes in the
batcher's queue (RaftLoop.propose), so a request sent with a leader pays nothing for this. A
refusal that is left (a member change off the leader: NO_LEADER; a read-only txn proposed to
a leader that is gone: LEADER_CHANGED) is safe to repeat for some callers, which retry through
retry_leaderless: the Lock and Election services (raftkv/api/etcd/concurrency.py
`Caller.call`, in the member or a --grpc-workers child) and a read-only txn (Service).

Waiting suits a client that has no other member to ask (etcdctl, a gRPC stub: etcd's clients
retry little). raftkv's own client fails over to its next endpoint on NO_LEADER and
LEADER_CHANGED and retries with backoff until its own timeout, so it asks for the opposite in
its hello (`{"leaderless": "fail"}`, raftkv/api/native.py): for its requests FAIL_FAST is set,
and a read or write on a member without a leader is refused at once (NO_LEADER), a read whose
round is lost with its leader fails with LEADER_CHANGED, and a read-only txn is not sent
again. A member cut off in a minority then sends that client to the majority at once instead
of holding its requests until the client's own timeout.
"""
from __future__ import annotations

import asyncio
import contextvars

from raftkv.errors import RaftkvError

# How often a refused call is tried again: an election with etcd's default timings takes about
# a second, so a few tries an election, and a leaderless member is asked at most 10 times a
# second per waiting call.
LEADER_POLL_S = 0.1
NO_LEADER_CODES = frozenset({"NO_LEADER"})
# True in the task of a request whose client asked to be refused rather than held while its
# member has no leader (set by the native front end per request task; see the docstring).
FAIL_FAST = contextvars.ContextVar("raftkv_fail_fast_leaderless", default=False)


async def retry_leaderless(attempt, timeout_s, codes=NO_LEADER_CODES):
    """The result of `await attempt()`. Refused with a RaftkvError whose code is in codes (a
    refusal that left nothing done a retry could repeat), attempt() is called again every
    LEADER_POLL_S until timeout_s has passed since this call began; then that refusal is
    raised. Any other error is raised at once."""
    assert timeout_s >= 0
    assert codes
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await attempt()
        except RaftkvError as exc:
            if exc.code not in codes or loop.time() + LEADER_POLL_S > deadline:
                raise
        await asyncio.sleep(LEADER_POLL_S)
