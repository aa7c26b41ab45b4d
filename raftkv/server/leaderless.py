"""Waiting out a moment without a leader: a request refused because its member knows no leader
(or lost the one it had asked) is sent again until the member's --request-timeout has passed.

etcd waits inside the request: its proposals block until a leader is known, its read loop asks
for a ReadIndex again until its request timeout. raftkv's Service refuses such a request at once
(NO_LEADER, nothing proposed) where waiting would need the Ready loop's help; a caller for which
that refusal is safe to repeat retries through retry_leaderless: the Lock and Election services
(raftkv/api/etcd/concurrency.py `Caller.call`, in the member or a --grpc-workers child) and a
read-only txn (Service). Linearizable reads wait in the Ready loop itself
(RaftLoop.read_barrier), so a read sent with a leader pays nothing for this.
"""
from __future__ import annotations

import asyncio

from raftkv.errors import RaftkvError

# How often a refused call is tried again: an election with etcd's default timings takes about
# a second, so a few tries an election, and a leaderless member is asked at most 10 times a
# second per waiting call.
LEADER_POLL_S = 0.1
NO_LEADER_CODES = frozenset({"NO_LEADER"})


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
