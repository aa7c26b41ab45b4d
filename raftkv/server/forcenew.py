"""--force-new-cluster: the log rewrite that makes a surviving member the only voter.

etcd 3.4's restartAsStandaloneNode (etcdserver/raft.go), over raftkv's WAL image: the member
keeps its log up to the last index it knows to be committed, discards the entries after it
(never known committed here; with the majority lost they can never be), and appends, at the
hard state's term, one conf change entry per other member (REMOVE_NODE; an ADD_NODE of itself
first if it is not a voter), committed at once by the hard state it writes. The removals are
then applied like any conf change: the core's configuration, the member table and the stored
conf state all end with this member alone.

The known commit point is max(the WAL hard state's commit, the store's applied index), as
newer etcd takes max(HardState.Commit, consistent index): raftkv writes no WAL record for a
Ready that moved only the commit index, so entries the store applied may lie beyond the WAL's
commit.

plan() is pure (the log image in, the records to write out); Member._force_new_cluster does the
I/O. Running it again on its own result plans nothing (the member is already the only voter and
nothing follows the commit point), so restarting with the flag again is harmless.
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

    commit: int  # the last index known committed: the log is kept up to it
    discarded: int  # entries after `commit` dropped (never known committed)
    removed: list  # the member IDs the new entries remove
    entries: list  # the ENTRIES record: may begin with the entry at `commit`, rewritten as it
    # is (an entry at an existing index replaces the WAL's suffix after it, so this is how the
    # discarded entries leave the log when no new entry follows), then the new conf changes
    install: SnapshotMetadata | None  # restart the log after this point (see plan())
    hard_state: HardState  # commit = the last new entry's index

    @property
    def changed(self):
        return bool(self.entries) or self.install is not None


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
    commit = max(hard_state.commit, applied, meta.index)
    install = None
    if commit > last:  # the store is ahead of the log (see above)
        conf = copy.deepcopy(stored_conf) if stored_conf is not None else conf_at(meta, [], 0)
        install = SnapshotMetadata(conf_state=conf, index=commit, term=hard_state.term)
        kept = []
    else:
        conf = conf_at(meta, entries, commit)
        kept = entries[:commit - meta.index]
    term = hard_state.term
    assert not kept or kept[-1].term <= term, (kept[-1], hard_state)
    discarded = last - commit if commit < last else 0
    others = (set(conf.voters) | set(conf.learners) | set(known_ids)) - {self_id}
    changes = []
    if self_id not in conf.voters:  # first, so the configuration is never empty
        changes.append((ConfChangeType.ADD_NODE, self_id, self_context))
    changes += [(ConfChangeType.REMOVE_NODE, mid, b"") for mid in sorted(others)]
    new = []
    for k, (ctype, mid, ctx) in enumerate(changes, 1):
        cc = ConfChangeV2(changes=[ConfChangeSingle(ctype, mid)], context=ctx)
        new.append(Entry(term, commit + k, EntryType.CONF_CHANGE, encode_conf_change(cc)))
    if discarded and not new and kept and install is None:
        new_entries = [kept[-1]]  # rewritten as it is: drops what follows it in the WAL
    else:
        new_entries = new
    if discarded and not new_entries and install is None:
        install = copy.deepcopy(meta)  # nothing kept after the compaction point: restart there
    return ForcePlan(commit=commit, discarded=discarded, removed=sorted(others),
                     entries=new_entries, install=install,
                     hard_state=HardState(term, hard_state.vote, commit + len(new)))


def member_context(name, peer_urls):
    """The conf change context of a member's own ADD_NODE (as Service._conf_change packs)."""
    return msgpack.packb({"name": name, "peer_urls": list(peer_urls), "client_urls": []})
