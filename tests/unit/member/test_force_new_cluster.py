"""--force-new-cluster: the pure log rewrite (raftkv/server/forcenew.py plan) on log images,
and the member's data dir at start with the flag (the WAL rewritten durably, removed members
neither dialed nor let in, a second forced start changing nothing, an empty data dir
bootstrapping as usual)."""
import logging

import msgpack
import pytest

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
from raftkv.server import forcenew
from raftkv.server.config import load_config
from raftkv.server.member import Member
from raftkv.storage.wal import ENTRIES, HARD_STATE

A, B, C, D = 0xA1, 0xB2, 0xC3, 0xD4


def conf_entry(term, index, ctype, mid, ctx=b""):
    cc = ConfChangeV2(changes=[ConfChangeSingle(ctype, mid)], context=ctx)
    return Entry(term, index, EntryType.CONF_CHANGE, encode_conf_change(cc))


def bootstrap_log(ids, normal_upto, term=2):
    """Entries 1..len(ids): ADD_NODE of each (term 1); then normal entries up to normal_upto."""
    ents = [conf_entry(1, i, ConfChangeType.ADD_NODE, mid) for i, mid in enumerate(ids, 1)]
    ents += [Entry(term, i, EntryType.NORMAL, b"w%d" % i)
             for i in range(len(ids) + 1, normal_upto + 1)]
    return ents


def changes(entries):
    out = []
    for e in entries:
        if e.type == EntryType.CONF_CHANGE:
            out += [(ch.type, ch.node_id) for ch in decode_conf_change(e.data).changes]
    return out


def replay(meta, entries, plan):
    """What the WAL replay makes of the image after the plan's records (INSTALL drops every
    entry; an ENTRIES record replaces the suffix from its first index)."""
    if plan.install is not None:
        meta, entries = plan.install, []
    if plan.entries:
        first = plan.entries[0].index
        entries = [e for e in entries if e.index < first] + list(plan.entries)
    return meta, entries, plan.hard_state


def test_the_whole_log_is_committed_and_the_others_removed_at_once():
    """Entries 9 and 10, never known committed here, are kept: a quorum may have committed
    (and acknowledged) them without this member hearing of it."""
    ents = bootstrap_log([A, B, C], 10)
    p = forcenew.plan(SnapshotMetadata(), ents, HardState(5, B, 8), 6, A)
    assert p.commit == 10 and p.adopted == 2 and p.changed
    assert p.removed == [B, C]
    assert [(e.index, e.term) for e in p.entries] == [(11, 5), (12, 5)]
    assert changes(p.entries) == [(ConfChangeType.REMOVE_NODE, B), (ConfChangeType.REMOVE_NODE, C)]
    assert p.hard_state == HardState(5, B, 12)  # term and vote kept, the new entries committed
    assert p.install is None
    meta, out, hs = replay(SnapshotMetadata(), ents, p)
    assert out[:10] == ents
    assert forcenew.conf_at(meta, out, hs.commit) == ConfState(voters=[A])


def test_the_store_applied_index_counts_as_known_committed():
    """raftkv writes no WAL record for a commit-only change: what the store applied beyond
    the WAL's commit index was known committed (only entry 10 is adopted)."""
    ents = bootstrap_log([A, B, C], 10)
    p = forcenew.plan(SnapshotMetadata(), ents, HardState(5, 0, 4), 9, A)
    assert p.commit == 10 and p.adopted == 1
    assert [e.index for e in p.entries] == [11, 12]


def test_a_second_plan_over_the_result_changes_nothing():
    ents = bootstrap_log([A, B, C], 10)
    p = forcenew.plan(SnapshotMetadata(), ents, HardState(5, B, 8), 6, A)
    meta, out, hs = replay(SnapshotMetadata(), ents, p)
    again = forcenew.plan(meta, out, hs, 6, A)
    assert not again.changed
    assert again.removed == [] and again.adopted == 0 and again.hard_state == hs


def test_a_sole_voter_with_an_uncommitted_tail_commits_it():
    ents = bootstrap_log([A], 6)
    p = forcenew.plan(SnapshotMetadata(), ents, HardState(3, A, 4), 4, A)
    assert p.removed == [] and p.adopted == 2 and p.changed
    assert p.entries == [] and p.install is None  # only the hard state moves
    assert p.hard_state == HardState(3, A, 6)
    meta, out, hs = replay(SnapshotMetadata(), ents, p)
    assert out == ents and not forcenew.plan(meta, out, hs, 4, A).changed


def test_an_uncommitted_tail_right_after_the_compaction_point_is_committed():
    meta = SnapshotMetadata(ConfState(voters=[A]), 50, 3)
    ents = [Entry(3, 51, EntryType.NORMAL, b"x"), Entry(3, 52, EntryType.NORMAL, b"y")]
    p = forcenew.plan(meta, ents, HardState(3, A, 50), 50, A)
    assert p.install is None and p.entries == [] and p.adopted == 2
    assert p.hard_state == HardState(3, A, 52)
    assert replay(meta, ents, p)[1] == ents


def test_the_configuration_comes_from_the_compaction_point_and_the_log_after_it():
    """A log that starts after a snapshot: the voters are the snapshot's conf state, changed by
    the conf changes after it, the uncommitted one too (it is kept and committed)."""
    meta = SnapshotMetadata(ConfState(voters=[A, B, C]), 100, 4)
    ents = [conf_entry(4, 101, ConfChangeType.REMOVE_NODE, C),
            conf_entry(4, 102, ConfChangeType.ADD_LEARNER_NODE, D),
            conf_entry(4, 103, ConfChangeType.ADD_NODE, 0xE5)]  # uncommitted
    p = forcenew.plan(meta, ents, HardState(4, 0, 102), 101, A)
    assert p.removed == [B, D, 0xE5] and p.adopted == 1
    assert [e.index for e in p.entries] == [104, 105, 106]


def test_a_learner_adds_itself_as_a_voter_before_removing_the_others():
    ents = bootstrap_log([A, B], 2) + [conf_entry(2, 3, ConfChangeType.ADD_LEARNER_NODE, C)]
    ctx = forcenew.member_context("m3", ["http://h:3"])
    p = forcenew.plan(SnapshotMetadata(), ents, HardState(2, 0, 3), 3, C, self_context=ctx)
    assert changes(p.entries) == [(ConfChangeType.ADD_NODE, C),
                                  (ConfChangeType.REMOVE_NODE, A), (ConfChangeType.REMOVE_NODE, B)]
    assert decode_conf_change(p.entries[0].data).context == ctx
    assert msgpack.unpackb(ctx)["peer_urls"] == ["http://h:3"]


def test_members_only_the_member_table_knows_are_removed_too():
    ents = bootstrap_log([A, B], 3)
    p = forcenew.plan(SnapshotMetadata(), ents, HardState(2, 0, 3), 3, A, known_ids=[A, B, D])
    assert p.removed == [B, D]


def test_a_store_applied_beyond_the_log_restarts_the_log_after_it():
    """After a leader's snapshot whose image was newer than its index, the store is ahead of
    the log: new entries must follow the store's applied index (or it would skip them)."""
    meta = SnapshotMetadata(ConfState(voters=[A, B, C]), 100, 4)
    stored = ConfState(voters=[A, B, C])
    p = forcenew.plan(meta, [], HardState(6, 0, 100), 130, A, stored_conf=stored)
    assert p.install == SnapshotMetadata(stored, 130, 6)
    assert [e.index for e in p.entries] == [131, 132] and p.hard_state.commit == 132
    meta2, out, hs = replay(meta, [], p)
    assert not forcenew.plan(meta2, out, hs, 130, A).changed


# ------------------------------------------------------------------ the data dir

PEERS = "m1=http://127.0.0.1:1,m2=http://127.0.0.1:2,m3=http://127.0.0.1:3"


def make_member(data_dir, *flags, name="m1", cluster=PEERS):
    cfg = load_config(["--name", name, "--data-dir", str(data_dir), "--initial-cluster", cluster,
                       "--initial-advertise-peer-urls", "http://127.0.0.1:1", *flags],
                      environ={})
    return Member(cfg)


def close(m):
    m.close_storage()  # also gives back the data dir's lock


def apply_conf_changes(m, lo):
    """What the Ready loop does with the committed conf changes from index lo on."""
    for e in m.raftlog.entries(lo, m.raftlog.hard_state.commit + 1):
        if e.type == EntryType.CONF_CHANGE:
            cc = decode_conf_change(e.data)
            m.committer.run_sync(lambda txn, cc=cc, e=e: (m.kv.apply(txn, e.index, []),
                                                          m._apply_member_change(txn, cc)))


def three_member_data_dir(d):
    """m1's data dir of a 3-member cluster: 3 bootstrap entries, normal entries 4..9 of term
    2, the WAL's commit at 7 (8 and 9 never known committed here)."""
    m = make_member(d)
    m.open_storage()
    m.open_membership()
    ids = sorted(m.members) or sorted(m.cfg.member_ids().values())
    apply_conf_changes(m, 1)
    ents = [Entry(2, i, EntryType.NORMAL, b"") for i in range(4, 10)]
    m.wal.write_now([(ENTRIES, ents, 9), (HARD_STATE, HardState(2, m.id, 7), 0)])
    close(m)
    return ids


def test_forced_start_rewrites_the_wal_and_removes_the_others(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="raftkv.member")
    d = tmp_path / "d"
    ids = three_member_data_dir(d)
    m = make_member(d, "--force-new-cluster")
    m.open_storage()
    others = sorted(set(ids) - {m.id})
    assert "--force-new-cluster: forcing a new 1-member cluster" in caplog.text
    assert m.raftlog.last_index() == 11 and m.raftlog.hard_state == HardState(2, m.id, 11)
    assert [e.index for e in m.raftlog.entries(4, 10)] == list(range(4, 10))  # all kept
    assert changes(m.raftlog.entries(10, 12)) == [(ConfChangeType.REMOVE_NODE, mid)
                                                  for mid in others]
    assert m.removed == set(others)  # before the apply: never dialed
    assert set(m._peer_addrs()) <= {m.id}  # (the transport skips itself)
    apply_conf_changes(m, 10)
    assert list(m.members) == [m.id] and m.conf.voters == [m.id]
    close(m)
    # Durable: a start without the flag keeps it all; the member table, conf state and the
    # removed marks survive, so --initial-cluster naming m2 and m3 dials neither.
    m = make_member(d)
    m.open_storage()
    assert m.raftlog.last_index() == 11 and m.raftlog.hard_state.commit == 11
    assert m.conf.voters == [m.id] and list(m.members) == [m.id]
    assert m.removed == set(others) and set(m._peer_addrs()) <= {m.id}
    close(m)
    # A second forced start changes nothing.
    m = make_member(d, "--force-new-cluster")
    m.open_storage()
    assert m.raftlog.last_index() == 11 and m.raftlog.hard_state.commit == 11
    assert "nothing to rewrite" in caplog.text
    close(m)


def test_a_re_added_member_is_no_longer_marked_removed(tmp_path):
    d = tmp_path / "d"
    ids = three_member_data_dir(d)
    m = make_member(d, "--force-new-cluster")
    m.open_storage()
    apply_conf_changes(m, 10)
    back = next(mid for mid in ids if mid != m.id)
    ctx = forcenew.member_context("", ["http://127.0.0.1:2"])
    cc = ConfChangeV2(changes=[ConfChangeSingle(ConfChangeType.ADD_NODE, back)], context=ctx)
    m.committer.run_sync(lambda txn: m._apply_member_change(txn, cc))
    assert back not in m.removed and back in m._peer_addrs()
    close(m)
    m = make_member(d)
    m.open_storage()
    assert back not in m.removed
    close(m)


@pytest.mark.parametrize("compacted", [False, True])
def test_a_sole_voter_commits_its_uncommitted_tail_durably(tmp_path, compacted):
    """Nothing to remove, only entries to commit: the new hard state alone, and a restart
    without the flag finds the whole log committed."""
    d = tmp_path / "d"
    single = "m1=http://127.0.0.1:1"
    m = make_member(d, cluster=single)
    m.open_storage()
    m.raftlog.save([Entry(2, i, EntryType.NORMAL, b"") for i in (2, 3)], None, now=True)
    if compacted:
        m.committer.run_sync(lambda txn: m.kv.apply(txn, 3, []))
        assert m.raftlog.compact_to(SnapshotMetadata(ConfState(voters=[m.id]), 3, 2))
    m.wal.write_now([(ENTRIES, [Entry(2, i, EntryType.NORMAL, b"") for i in (4, 5)], 5),
                     (HARD_STATE, HardState(2, m.id, 3), 0)])
    close(m)
    for flags in (["--force-new-cluster"], []):
        m = make_member(d, *flags, cluster=single)
        m.open_storage()
        assert m.raftlog.last_index() == 5 and m.raftlog.hard_state.commit == 5
        assert m.raftlog.first_index() == (4 if compacted else 1)
        close(m)


@pytest.mark.parametrize("state", ["new", "existing"])
def test_the_flag_on_an_empty_data_dir_starts_as_usual(tmp_path, caplog, state):
    caplog.set_level(logging.INFO, logger="raftkv.member")
    forced = make_member(tmp_path / "f", "--force-new-cluster", "--initial-cluster-state", state)
    forced.open_storage()
    plain = make_member(tmp_path / "p", "--initial-cluster-state", state)
    plain.open_storage()
    assert "the data dir is empty, nothing to recover" in caplog.text
    assert forced.raftlog.last_index() == plain.raftlog.last_index() == \
        (3 if state == "new" else 0)
    assert forced.raftlog.hard_state == plain.raftlog.hard_state
    assert forced.removed == set()
    close(forced)
    close(plain)


# ------------------------------------------------------------------ the peer transport

@pytest.mark.timeout(60)
def test_the_transport_closes_on_a_removed_member_and_refuses_it_with_one_warning(caplog):
    """After --force-new-cluster (or any removal) an old member that still runs gets nothing
    through: its open connection closes at its next frame and its redials are refused, said
    once in the log."""
    import asyncio

    from raftkv.raft.types import Message, MsgType
    from raftkv.server.peer import PeerTransport
    from tests.unit.member.helpers import wait_until

    got = {1: [], 2: []}

    def beat(frm, to):
        return Message(MsgType.HEARTBEAT, to=to, frm=frm, term=2)

    async def main():
        async def answer(op, body):
            return {}
        a = PeerTransport(1, "t", {}, "127.0.0.1", on_message=got[1].append, on_forward=answer)
        b = PeerTransport(2, "t", {}, "127.0.0.1", on_message=got[2].append, on_forward=answer)
        aport = await a.start("127.0.0.1", 0)
        bport = await b.start("127.0.0.1", 0)
        a.set_peers({2: ("127.0.0.1", bport)})
        b.set_peers({1: ("127.0.0.1", aport)})
        try:
            await wait_until(lambda: (b.send([beat(2, 1)]), got[1])[-1])
            a.set_peers({}, removed={2})  # a applied the removal of b
            got[1].clear()
            for _ in range(20):
                b.send([beat(2, 1)])
                await asyncio.sleep(0.05)
            assert got[1] == []
            assert not a.known(2)
            await wait_until(lambda: "member 2 was removed from the cluster" in caplog.text)
            await asyncio.sleep(1.5)  # b redials (backoff up to 1 s)
            assert caplog.text.count("was removed from the cluster") == 1
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
