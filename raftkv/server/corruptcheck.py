"""etcd's periodic corruption check (`--experimental-corrupt-check-time`): the leader compares
its members' data and stops writes if one differs.

Every interval the leader computes etcd's HashKV of its store at its current revision and asks
every other voter, all at once, for theirs at the same revision (a forwarded `hash_kv`). A
member that has not applied that revision yet, or has compacted differently, is skipped this
round. Among the
hashes that can be compared, the one a majority of the compared members share is the
cluster's; a member with another hash is corrupt (with no majority, the leader names itself).
Then the leader raises the CORRUPT alarm through the log, naming that member, as etcd does:
every member refuses writes ("etcdserver: corrupt cluster") until `alarm disarm`, while reads
go on, so that an operator can find out which copy is right before anything more is written.

The initial check (etcd's `--experimental-initial-corrupt-check`, check_initial): a member that
starts with data, once its peer transport is up but before its Raft loop runs and before any
client listener opens, asks every other member for its HashKV at this member's revision. A
peer with another hash at the same compact revision makes it refuse to start, naming that
peer; a peer that does not answer, is behind, or has compacted elsewhere is skipped with a
warning (as etcd 3.4's CheckInitialHashKV). A member with an empty store skips the check.
Members answer HashKV requests themselves (Member._on_forward) from the moment their peer
transport is up, so members that start together compare their data with each other.
"""
from __future__ import annotations

import asyncio
import collections
import logging

from raftkv.errors import RaftkvError
from raftkv.mvcc import snapshot as mvcc_snapshot
from raftkv.mvcc.kvstore import ALARM_CORRUPT
from raftkv.raft import Role
from raftkv.storage.errors import StorageError

log = logging.getLogger("raftkv.corruptcheck")

FORWARD_TIMEOUT_S = 5.0


class InitialCheckError(StorageError):
    """The initial check found a peer whose data differs: the member must not start (main()
    reports it as a data dir it refuses to use, exit status 2)."""


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
    own, _, compact = await kv.engine.gate.run(mvcc_snapshot.etcd_hash_kv, kv, rev)
    hashes = {member.id: own}
    voters = member.loop.conf_state.voters if member.loop.conf_state else []
    answers = await _ask_all(member, [v for v in voters if v != member.id], rev,
                             FORWARD_TIMEOUT_S)
    for mid, resp in answers.items():
        if isinstance(resp, BaseException):
            log.debug("corruption check: no hash from %x at revision %d: %s", mid, rev, resp)
        elif resp.get("compact_revision", 0) == compact:  # else not comparable this round
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


def initial_verdict(rev, own_hash, own_compact, answers):
    """The initial check's verdict on this member's data at revision rev. answers: {peer ID:
    its hash_kv answer at rev (a dict), or the exception asking it raised}. Returns
    (mismatched, skipped): the IDs whose hash differs at the same compact revision (sorted),
    and {ID: why it was not compared}, as etcd 3.4's CheckInitialHashKV decides."""
    mismatched, skipped = [], {}
    for mid, ans in sorted(answers.items()):
        if isinstance(ans, BaseException):
            skipped[mid] = _unanswered(ans, rev)
        elif ans.get("hash") == own_hash:
            continue
        elif ans.get("compact_revision", 0) == own_compact:
            mismatched.append(mid)
        else:
            skipped[mid] = (f"compacted to revision {ans.get('compact_revision', 0)}, this "
                            f"member to {own_compact}: the hashes cannot be compared")
    return mismatched, skipped


def _unanswered(exc, rev):
    code = getattr(exc, "code", None)
    if code == "FUTURE_REV":
        return f"behind: it has not applied revision {rev} yet"
    if code == "COMPACTED":
        return f"it has compacted past revision {rev}"
    if code == "UNKNOWN_OP":
        return "it does not answer HashKV requests (an older raftkv)"
    if code in ("TIMEOUT", "NO_LEADER", "STOPPED", "TOO_MANY_REQUESTS") or \
            isinstance(exc, (OSError, asyncio.TimeoutError)):
        return "unreachable"
    return f"no answer: {exc}"


async def check_initial(member, timeout_s):
    """etcd's initial corruption check (see the module docstring); raises InitialCheckError
    naming every peer whose data differs. Each peer is asked at once, for at most
    timeout_s."""
    kv = member.kv
    if kv.applied_index == 0:
        log.info("initial corruption check skipped: the store is empty (a new member)")
        return
    rev = kv.current_revision
    own, _, compact = await kv.engine.gate.run(mvcc_snapshot.etcd_hash_kv, kv, rev)
    peers = sorted((set(member.conf.voters) | set(member.conf.learners)) - {member.id})
    log.info("initial corruption check: comparing this member's HashKV at revision %d with "
             "%d peer(s) (timeout %.1fs)", rev, len(peers), timeout_s)

    answers = await _ask_all(member, peers, rev, timeout_s)
    mismatched, skipped = initial_verdict(rev, own, compact, answers)
    for mid, why in skipped.items():
        log.warning("initial corruption check: member %s not compared: %s",
                    _member_name(member, mid), why)
    if mismatched:
        names = ", ".join(f"{_member_name(member, m)} with hash {answers[m].get('hash')}"
                          for m in mismatched)
        raise InitialCheckError(
            f"initial corruption check: this member's data differs from that of member(s) "
            f"{names} at revision {rev} (this member's hash {own}, compact revision "
            f"{compact}). Find out which copy is right (etcdctl endpoint hashkv on each "
            f"member) and replace a wrong member's data (remove it from the cluster and add it "
            f"back with an empty data dir)")
    log.info("initial corruption check passed at revision %d: %d peer(s) agree, %d not "
             "compared", rev, len(peers) - len(skipped), len(skipped))


async def _ask_all(member, peers, rev, timeout_s):
    """{peer ID: its hash_kv answer at revision rev, or the exception asking it raised}, every
    peer asked at once over the peer transport, for at most timeout_s."""
    async def ask(mid):
        try:
            return await member.transport.forward(mid, "hash_kv", {"revision": rev},
                                                  timeout_s=timeout_s)
        except (RaftkvError, OSError, asyncio.TimeoutError) as exc:
            return exc

    return dict(zip(peers, await asyncio.gather(*(ask(mid) for mid in peers))))


def _member_name(member, mid):
    name = member.members.get(mid, {}).get("name")
    return f"{name} ({mid:x})" if name else f"{mid:x}"
