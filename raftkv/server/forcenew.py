"""--force-new-cluster: the log rewrite that makes a surviving member the only voter.

etcd 3.4's restartAsStandaloneNode (etcdserver/raft.go), over raftkv's WAL image, with one
deliberate difference: the member keeps its whole log and commits it, where etcd drops the
entries after the last index the member knew committed. An entry the survivor holds may have
been committed, and its write acknowledged, by a quorum the survivor was part of without
learning the new commit index (a follower hears of it with the next message; raftkv also
writes no WAL record for a Ready that only moved the commit index, so a kill can leave the
durable commit point behind what the member knew). Dropping such entries would lose
acknowledged writes; keeping them can only make visible writes whose clients saw an error or
a timeout, whose outcome was unknown. After the log it appends, at the hard state's term, one
conf change entry per other member (REMOVE_NODE; an ADD_NODE of itself first if it is not a
voter), committed at once by the hard state it writes. The removals are then applied like any
conf change: the core's configuration, the member table and the stored conf state all end
with this member alone.

plan() is pure (the log image in, the records to write out); Member._force_new_cluster does the
I/O. Running it again on its own result plans nothing (the member is already the only voter and
its whole log is committed), so restarting with the flag again is harmless.
"""
from __future__ import annotations

import copy
import dataclasses

import msgpack

from raftkv.raft import (
    ConfChangeSingle,
    ConfChangeType,
    ConfChangeV2,
    ConfState,
    Entry,
    EntryType,
    HardState,
    SnapshotMetadata,
    decode_conf_change,
    encode_conf_change,
)


@dataclasses.dataclass
class ForcePlan:
    """What --force-new-cluster writes to the WAL, in this order: an INSTALL record of
    `install` (if not None), an ENTRIES record of `entries` (if any), then `hard_state`."""

    commit: int  # the end of the kept log (all of it), before the new entries
    adopted: int  # entries after the last index the member knew committed, committed now
    removed: list  # the member IDs the new entries remove
    entries: list  # the new conf change entries
    install: SnapshotMetadata | None  # restart the log after this point (see plan())
    hard_state: HardState  # commit = the last new entry's index
    changed: bool  # anything to write

def conf_at(meta, entries, upto):
    """The configuration as of index `upto`: meta's (the compaction point's) conf state with
    the conf change entries after it up to `upto` replayed (as Member._apply_member_change
    applies them: a learner added while a voter stays a voter)."""
    voters = set(meta.conf_state.voters) | set(meta.conf_state.voters_outgoing)
    learners = set(meta.conf_state.learners) | set(meta.conf_state.learners_next)
    for e in entries:
        if e.index > upto:
            break
        if e.type != EntryType.CONF_CHANGE:
            continue
        for ch in decode_conf_change(e.data).changes:
            if ch.type == ConfChangeType.REMOVE_NODE:
                voters.discard(ch.node_id)
                learners.discard(ch.node_id)
            elif ch.type == ConfChangeType.ADD_LEARNER_NODE and ch.node_id not in voters:
                learners.add(ch.node_id)
            elif ch.type == ConfChangeType.ADD_NODE:
                voters.add(ch.node_id)
                learners.discard(ch.node_id)
    return ConfState(voters=sorted(voters), learners=sorted(learners))


def plan(meta, entries, hard_state, applied, self_id, *, stored_conf=None, known_ids=(),
         self_context=b""):
    """The rewrite of one member's log for --force-new-cluster.

    meta, entries, hard_state: the replayed WAL (compaction point, entries meta.index + 1..,
    hard state). applied: the store's applied index. self_id: this member. stored_conf: the
    store's applied conf state, the configuration when the store is applied beyond the log's
    end (after a leader's snapshot whose image was newer than its index: the entries in
    between never arrived). known_ids: other member IDs known to the member table (removed
    too, so no record of an old member survives). self_context: the conf change context of
    this member's own ADD_NODE, if it needs one.

    When the store is applied beyond the log's end, the log restarts after the applied index
    (an INSTALL record at the hard state's term): new entries must come after what the store
    holds, or its applied index would make them no-ops.
    """
    assert self_id, "a member ID is never 0"
    last = meta.index + len(entries)
    assert all(e.index == meta.index + 1 + k for k, e in enumerate(entries)), "log has a gap"
    known = max(hard_state.commit, applied, meta.index)  # the last index known committed
    install = None
    if applied > last:  # the store is ahead of the log (see above)
        conf = copy.deepcopy(stored_conf) if stored_conf is not None else conf_at(meta, [], 0)
        install = SnapshotMetadata(conf_state=conf, index=applied, term=hard_state.term)
        commit = applied
    else:
        conf = conf_at(meta, entries, last)
        commit = last
    term = hard_state.term
    assert not entries or entries[-1].term <= term, (entries[-1], hard_state)
    others = (set(conf.voters) | set(conf.learners) | set(known_ids)) - {self_id}
    changes = []
    if self_id not in conf.voters:  # first, so the configuration is never empty
        changes.append((ConfChangeType.ADD_NODE, self_id, self_context))
    changes += [(ConfChangeType.REMOVE_NODE, mid, b"") for mid in sorted(others)]
    new = []
    for k, (ctype, mid, ctx) in enumerate(changes, 1):
        cc = ConfChangeV2(changes=[ConfChangeSingle(ctype, mid)], context=ctx)
        new.append(Entry(term, commit + k, EntryType.CONF_CHANGE, encode_conf_change(cc)))
    hs = HardState(term, hard_state.vote, commit + len(new))
    return ForcePlan(commit=commit, adopted=max(0, last - known), removed=sorted(others),
                     entries=new, install=install, hard_state=hs,
                     changed=bool(new) or install is not None or hs != hard_state)


def member_context(name, peer_urls):
    """The conf change context of a member's own ADD_NODE (as Service._conf_change packs)."""
    return msgpack.packb({"name": name, "peer_urls": list(peer_urls), "client_urls": []})
