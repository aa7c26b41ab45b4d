"""etcd's periodic corruption check (`--experimental-corrupt-check-time`): the leader compares
its members' data and stops writes if one differs.

Every interval the leader computes etcd's HashKV of its store at its current revision and asks
every other voter for theirs at the same revision (a forwarded `hash_kv`). A member that has
not applied that revision yet, or has compacted differently, is skipped this round. Among the
hashes that can be compared, the one a majority of the compared members share is the
cluster's; a member with another hash is corrupt (with no majority, the leader names itself).
Then the leader raises the CORRUPT alarm through the log, naming that member, as etcd does:
every member refuses writes ("etcdserver: corrupt cluster") until `alarm disarm`, while reads
go on, so that an operator can find out which copy is right before anything more is written.
"""
from __future__ import annotations

import asyncio
import collections
import logging

from raftkv.errors import RaftkvError
from raftkv.mvcc import snapshot as mvcc_snapshot
from raftkv.mvcc.kvstore import ALARM_CORRUPT
from raftkv.raft import Role

log = logging.getLogger("raftkv.corruptcheck")

FORWARD_TIMEOUT_S = 5.0


def verdict(hashes, leader_id):
    """hashes: {member ID: hash} of the members compared (the leader's included). The IDs
    whose data differs from the majority's, sorted (the leader alone when there is none)."""
    if len(hashes) < 2:
        return []
    counts = collections.Counter(hashes.values())
    value, n = counts.most_common(1)[0]
    if n * 2 <= len(hashes):
        return [leader_id] if len(counts) > 1 else []
    return sorted(mid for mid, h in hashes.items() if h != value)


async def check_once(member):
    """One comparison; returns the IDs found corrupt (and raises the alarm for the first)."""
    kv = member.kv
    rev = kv.current_revision
    own, _, compact = await asyncio.to_thread(mvcc_snapshot.etcd_hash_kv, kv, rev)
    hashes = {member.id: own}
    voters = member.loop.conf_state.voters if member.loop.conf_state else []
    for mid in voters:
        if mid == member.id:
            continue
        try:
            resp = await member.transport.forward(mid, "hash_kv", {"revision": rev},
                                                  timeout_s=FORWARD_TIMEOUT_S)
        except (RaftkvError, OSError, asyncio.TimeoutError) as exc:
            log.debug("corruption check: no hash from %x at revision %d: %s", mid, rev, exc)
            continue
        if resp.get("compact_revision", 0) != compact:
            continue  # compacted to another point: not comparable this round
        hashes[mid] = resp.get("hash")
    bad = verdict(hashes, member.id)
    if bad:
        log.error("corruption check at revision %d: the data of member(s) %s differs from the "
                  "others' (hashes %s); raising the CORRUPT alarm: writes are refused until "
                  "`alarm disarm`", rev, ", ".join(f"{m:x}" for m in bad),
                  {f"{m:x}": h for m, h in hashes.items()})
        await member.loop.propose("alarm_set", {"on": True, "alarm": ALARM_CORRUPT,
                                                "memberID": bad[0]}, 64, 10.0)
    return bad


async def run(member, interval_s):
    """The member's loop: on the leader, and while no CORRUPT alarm is raised, check every
    interval_s seconds."""
    while True:
        await asyncio.sleep(interval_s)
        if member.loop.role != Role.LEADER or member.kv.corrupt:
            continue
        try:
            await check_once(member)
        except RaftkvError as exc:
            log.warning("corruption check failed: %s", exc)
