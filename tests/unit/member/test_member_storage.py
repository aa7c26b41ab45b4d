"""A member's data dir at start-up: bootstrap into the WAL, migration of the LMDB log of older
data dirs, completion of a snapshot installation cut by a crash, and refusal of a data dir whose
store and WAL disagree."""
import os

import pytest

from raftkv.mvcc.kvstore import KVStore
from raftkv.raft import ConfState, Entry, EntryType, HardState, SnapshotMetadata
from raftkv.server.config import load_config
from raftkv.server.member import (
    INSTALLED_APPLIED_KEY,
    PENDING_INSTALL_KEY,
    DataDirStateError,
    Member,
)
from raftkv.storage.engine import Engine
from raftkv.storage.group_commit import GroupCommitter
from raftkv.storage.logstore import LogStore
from raftkv.storage.logstore import pack_snap_meta
from raftkv.storage.wal import ENTRIES, INSTALL, WAL


def make_member(data_dir):
    cfg = load_config(["--name", "m1", "--data-dir", str(data_dir)], environ={})
    return Member(cfg)


def close(m):
    m.close_storage()  # also gives back the data dir's lock


def test_bootstrap_writes_the_wal_and_reopens(tmp_path):
    m = make_member(tmp_path / "d")
    m.open_storage()
    assert WAL.exists(tmp_path / "d")
    assert m.raftlog.last_index() == 1 and m.raftlog.hard_state.commit == 1
    assert m.conf.voters == [m.id]
    close(m)
    m = make_member(tmp_path / "d")
    m.open_storage()
    assert m.raftlog.last_index() == 1
    assert m.raftlog.entries(1, 2)[0].type == EntryType.CONF_CHANGE
    assert m.conf.voters == [m.id]
    close(m)


def test_a_data_dir_with_the_lmdb_log_is_migrated(tmp_path):
    d = tmp_path / "old"
    m = make_member(d)  # only for its id
    eng = Engine(str(d))
    st = LogStore(eng)
    c = GroupCommitter(eng)
    cs = ConfState(voters=[m.id])
    ents = [Entry(1, i, EntryType.NORMAL, b"x%d" % i) for i in range(1, 301)]
    c.run_sync(lambda txn: st.save(txn, ents, HardState(term=3, vote=m.id, commit=250)))
    c.run_sync(lambda txn: st.set_conf_state(txn, cs))
    c.run_sync(lambda txn: st.save(txn, snapshot_metadata=SnapshotMetadata(cs, 100, 1)))
    kv = KVStore(eng)
    c.run_sync(lambda txn: kv.apply(txn, 250, []))
    c.close()
    eng.close()
    assert not WAL.exists(d)

    m.open_storage()
    assert WAL.exists(d)
    assert m.raftlog.first_index() == 101 and m.raftlog.last_index() == 300
    assert m.raftlog.entries(101, 301) == ents[100:]
    assert m.raftlog.hard_state == HardState(3, m.id, 250)
    assert m.raftlog.snapshot().metadata.index == 100
    with m.engine.env.begin() as txn:
        assert txn.stat(m.engine.db(b"log"))["entries"] == 0  # moved, not copied
    close(m)
    m = make_member(d)
    m.open_storage()  # and it reopens from the WAL alone
    assert m.raftlog.last_index() == 300 and m.raftlog.hard_state.commit == 250
    close(m)


def _set_applied(m, index):
    m.committer.run_sync(lambda txn: m.kv.apply(txn, index, []))


def test_a_cut_snapshot_installation_is_completed_at_start(tmp_path):
    d = tmp_path / "d"
    m = make_member(d)
    m.open_storage()
    meta = SnapshotMetadata(ConfState(voters=[m.id]), 50, 2)
    # What _install_snapshot's restore txn leaves when the member dies before the WAL record:
    kvmeta = m.engine.db("kvmeta")
    m.committer.run_sync(lambda txn: txn.put(PENDING_INSTALL_KEY, pack_snap_meta(meta), db=kvmeta))
    m.committer.run_sync(lambda txn: txn.put(INSTALLED_APPLIED_KEY, (60).to_bytes(8, "big"),
                                             db=kvmeta))
    _set_applied(m, 60)
    close(m)

    m = make_member(d)
    m.open_storage()
    assert m.raftlog.snapshot().metadata.index == 50
    assert m.raftlog.first_index() == 51 and m.raftlog.last_index() == 50
    assert m._restart_applied == 50 and m.kv.applied_index == 60  # the image was newer
    with m.engine.env.begin() as txn:
        assert txn.get(PENDING_INSTALL_KEY, db=m.engine.db("kvmeta")) is None
    close(m)


@pytest.mark.parametrize("installed", [None, 55])
def test_a_store_applied_beyond_its_wal_refuses_to_start(tmp_path, installed):
    """Entries the store applied are missing from the WAL (it was cut, damaged or replaced)
    and no snapshot image explains it: starting would give new entries indexes the store has
    applied and skip them, acknowledged writes lost (found by hand: a flipped WAL byte was cut
    as a torn tail, then a put answered OK was never applied)."""
    d = tmp_path / "d"
    m = make_member(d)
    m.open_storage()
    seq, _ = m.wal.append(ENTRIES, [Entry(1, i, EntryType.NORMAL, b"") for i in range(1, 6)])
    m.wal.wait_synced(seq)
    if installed is not None:  # an earlier install's image, since applied past
        m.committer.run_sync(lambda txn: txn.put(
            INSTALLED_APPLIED_KEY, installed.to_bytes(8, "big"), db=m.engine.db("kvmeta")))
    _set_applied(m, 60)
    close(m)
    m = make_member(d)
    with pytest.raises(DataDirStateError) as info:
        m.open_storage()
    text = str(info.value)
    assert "applied to index 60" in text and "ends at index 5" in text and \
        "refusing to start" in text, text
    m.committer.close()
    m.wal.close()
    m.engine.close()


def test_a_store_behind_the_compaction_point_refuses_to_start(tmp_path):
    d = tmp_path / "d"
    m = make_member(d)
    m.open_storage()
    meta = SnapshotMetadata(ConfState(voters=[m.id]), 40, 2)
    seq, _ = m.wal.append(INSTALL, meta)  # the log now starts after 40; the store is at 0
    m.wal.wait_synced(seq)
    close(m)
    m = make_member(d)
    with pytest.raises(DataDirStateError) as info:
        m.open_storage()
    assert "applied to index 0" in str(info.value) and "refusing to start" in str(info.value)
    m.committer.close()
    m.wal.close()
    m.engine.close()


def test_a_damaged_wal_refuses_to_start(tmp_path):
    from raftkv.storage.wal import WalCorruptError
    d = tmp_path / "d"
    m = make_member(d)
    m.open_storage()
    close(m)
    wal_dir = os.path.join(d, "wal")
    first = os.path.join(wal_dir, sorted(os.listdir(wal_dir))[0])
    # a second, later segment makes the first one "older": damage there is corruption
    open(os.path.join(wal_dir, "0000000000000002.wal"), "wb").close()
    data = bytearray(open(first, "rb").read())
    data[20] ^= 0xFF
    open(first, "wb").write(bytes(data))
    m = make_member(d)
    with pytest.raises(WalCorruptError, match="refuses to start"):
        m.open_storage()


def test_idempotency_table_survives_a_restart_and_evicts_the_oldest(tmp_path, monkeypatch):
    from raftkv import errors
    from raftkv.server import member as member_mod
    monkeypatch.setattr(member_mod, "DEDUP_REQUESTS_MAX", 3)
    d = tmp_path / "d"
    m = make_member(d)
    m.open_storage()
    resps = {(1, k): {"header": {"revision": k}} for k in range(1, 5)}
    resps[(2, 1)] = errors.RaftkvError("EMPTY_KEY")
    resps[(2, 2)] = [{"header": {}}, errors.RaftkvError("NO_SPACE", "full")]
    for rid, resp in resps.items():
        m.committer.run_sync(lambda txn, rid=rid, resp=resp: m._remember(txn, rid, resp))
    assert list(m.dedup) == [(1, 4), (2, 1), (2, 2)]
    close(m)
    m = make_member(d)
    m.open_storage()
    assert list(m.dedup) == [(1, 4), (2, 1), (2, 2)]  # oldest first, the evicted ones gone
    assert m.dedup[(1, 4)] == {"header": {"revision": 4}}
    err = m.dedup[(2, 1)]
    assert isinstance(err, errors.RaftkvError) and err.code == "EMPTY_KEY"
    ok, full = m.dedup[(2, 2)]
    assert ok == {"header": {}} and full.code == "NO_SPACE" and full.message == "full"
    m.committer.run_sync(lambda txn: m._remember(txn, (3, 1), {}))
    assert list(m.dedup) == [(2, 1), (2, 2), (3, 1)]
    with m.engine.env.begin() as txn:
        assert txn.stat(m.engine.db("dedup"))["entries"] == 3
        assert txn.stat(m.engine.db("dedup_order"))["entries"] == 3
    close(m)


def test_restart_replays_conf_changes_the_stored_conf_state_has_not_seen(tmp_path):
    """After a snapshot install whose image is newer than its index, the store is applied
    beyond the conf state; the core must restart at the conf state's index so the conf changes
    in between are applied to the member table again (the store skips their data)."""
    from raftkv.server.member import CONF_INDEX_KEY
    d = tmp_path / "d"
    m = make_member(d)
    m.open_storage()
    m.wal.write_now([(ENTRIES, [Entry(1, i, EntryType.NORMAL, b"") for i in range(2, 71)], 70)])
    _set_applied(m, 60)
    close(m)
    m = make_member(d)
    m.open_storage()
    assert m._restart_applied == 60  # no conf index stored: the store's applied index
    kvmeta = m.engine.db("kvmeta")
    m.committer.run_sync(lambda txn: txn.put(CONF_INDEX_KEY, (50).to_bytes(8, "big"), db=kvmeta))
    close(m)
    m = make_member(d)
    m.open_storage()
    assert m._restart_applied == 50
    assert m.raftlog.hard_state.commit >= 50
    close(m)


@pytest.mark.parametrize("calls_in_flight", [0, 1])
def test_wal_records_leave_the_loop_while_front_end_calls_are_in_flight(tmp_path,
                                                                         calls_in_flight):
    """A Ready's WAL record is written in the event loop's thread (durable at once) unless the
    in-process gRPC server has calls in flight: then the WAL thread writes it (the loop stays
    free to accept more calls) and the durable future completes once it is synced."""
    import asyncio
    import types

    from raftkv.raft.rawnode import Ready

    m = make_member(tmp_path / "d")
    m.open_storage()
    m.front_calls = types.SimpleNamespace(n=calls_in_flight)

    async def run():
        last = m.raftlog.last_index()
        rd = Ready(entries=[Entry(1, last + 1, EntryType.NORMAL, b"x")],
                   hard_state=HardState(1, m.id, 1))
        durable, applied = m._io(rd)
        assert applied is None
        if calls_in_flight:
            assert durable is not None  # handed to the WAL thread
            await asyncio.wait_for(durable, 10)
        else:
            assert durable is None  # written and synced before _io returned
        return last + 1

    index = asyncio.run(run())
    close(m)
    m = make_member(tmp_path / "d")
    m.open_storage()  # the record is in the WAL either way
    assert m.raftlog.last_index() == index
    assert m.raftlog.entries(index, index + 1)[0].data == b"x"
    close(m)
