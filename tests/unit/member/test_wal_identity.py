"""A data dir records which WAL is its own (raftkv/server/member.py _check_wal_identity): a start
that finds that WAL missing, or another WAL, where --wal-dir (or DATA_DIR/wal) says it is refuses
with a message and touches nothing, even when the member only bootstrapped (nothing applied
yet, where the store alone cannot tell that a log existed). A moved WAL started with its new
--wal-dir, --force-new-cluster, snapshot restore and data dirs from before the record work."""
import hashlib
import json
import logging
import os
import shutil

import pytest

from raftkv.mvcc.kvstore import KVStore
from raftkv.server.member import IDENTITY_FILE, WAL_RECORD_FILE, DataDirStateError, record_wal
from raftkv.storage.engine import Engine
from raftkv.storage.wal import ID_FILE, WAL, read_wal_id
from raftkv.utl import restore
from tests.unit.member.test_force_new_cluster import apply_conf_changes
from tests.unit.member.test_force_new_cluster import make_member as make_3
from tests.unit.member.test_ops_flags_member import applied_member, make_member
from tests.unit.utl.test_restore import CLUSTER, write_snapshot


def bootstrapped(d, *flags):
    """A data dir whose member bootstrapped (its WAL holds the bootstrap entry and hard
    state) and stopped before applying anything."""
    m = make_member(d, *flags)
    m.open_storage()
    assert m.kv.applied_index == 0 and m.raftlog.last_index() == 1
    m.close_storage()
    return m.wal


def tree(*dirs):
    """{path: sha256} of every file under dirs (what a refused start must leave alone)."""
    out = {}
    for top in dirs:
        for root, _, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as f:
                    out[path] = hashlib.sha256(f.read()).hexdigest()
    return out


def refused(d, *flags, match):
    m = make_member(d, *flags)
    with pytest.raises(DataDirStateError, match=match) as info:
        m.open_storage()
    m.close_storage()
    return str(info.value)


def reopens(d, *flags):
    m = make_member(d, *flags)
    m.open_storage()
    try:
        assert m.raftlog.last_index() == 1 and m.raftlog.hard_state.commit == 1
        assert m.conf.voters == [m.id]
        return m.wal.id
    finally:
        m.close_storage()


def record(d):
    with open(os.path.join(d, WAL_RECORD_FILE), encoding="utf-8") as f:
        return json.load(f)


def test_the_wal_and_the_data_dir_record_one_identity(tmp_path):
    d, a = tmp_path / "d", tmp_path / "a"
    wal = bootstrapped(d, "--wal-dir", str(a))
    assert wal.id and read_wal_id(str(a)) == wal.id
    assert record(d) == {"wal_id": wal.id, "wal_dir": str(a)}
    assert reopens(d, "--wal-dir", str(a)) == wal.id


def test_a_bootstrapped_member_under_another_wal_dir_is_refused(tmp_path):
    d, a, b = tmp_path / "d", tmp_path / "a", tmp_path / "b"
    wal = bootstrapped(d, "--wal-dir", str(a))
    before = tree(d, a)
    os.makedirs(b)  # an empty directory: the WAL that would be started afresh
    msg = refused(d, "--wal-dir", str(b), match=f"there is no WAL in {b}")
    assert f"WAL has identity {wal.id} (last opened in {a})" in msg
    assert "refusing to start" in msg and "--wal-dir that holds its WAL" in msg
    assert os.listdir(b) == [] and tree(d, a) == before  # nothing written anywhere
    # and without --wal-dir (DATA_DIR/wal): refused too, nothing created
    refused(d, match=f"there is no WAL in {d / 'wal'}")
    assert not os.path.exists(d / "wal") and tree(d, a) == before
    assert reopens(d, "--wal-dir", str(a)) == wal.id  # its own WAL: it starts


@pytest.mark.parametrize("wal_flags", [(), ("--wal-dir", "A")])
def test_a_deleted_wal_is_refused(tmp_path, wal_flags):
    d, a = tmp_path / "d", tmp_path / "a"
    flags = [str(a) if f == "A" else f for f in wal_flags]
    bootstrapped(d, *flags)
    where = a if flags else d / "wal"
    shutil.rmtree(where)
    refused(d, *flags, match=f"there is no WAL in {where}")
    assert not os.path.exists(where)


def test_lost_segments_another_wal_and_a_wal_without_identity_are_refused(tmp_path):
    d, a = tmp_path / "d", tmp_path / "a"
    bootstrapped(d, "--wal-dir", str(a))
    other = bootstrapped(tmp_path / "e", "--wal-dir", str(tmp_path / "b"))
    refused(d, "--wal-dir", str(tmp_path / "b"),
            match=f"the WAL in {tmp_path / 'b'} is another one \\(identity {other.id}\\)")
    saved = tmp_path / "saved"
    shutil.copytree(a, saved)
    for name in os.listdir(a):
        if name.endswith(".wal"):
            os.unlink(a / name)
    refused(d, "--wal-dir", str(a), match="has lost its segment files")
    shutil.rmtree(a)
    shutil.copytree(saved, a)
    os.unlink(a / ID_FILE)
    refused(d, "--wal-dir", str(a), match="has no identity: it is not this data dir's")
    os.unlink(a / f"{1:016x}.wal")  # the ID file's absence is not mistaken for a fresh WAL
    refused(d, "--wal-dir", str(a), match="there is no WAL in")


def test_a_moved_wal_starts_from_its_new_dir_and_is_recorded_there(tmp_path):
    d, b = tmp_path / "d", tmp_path / "disk2" / "wal"
    wal = bootstrapped(d)
    os.makedirs(b.parent)
    os.rename(d / "wal", b)
    assert reopens(d, "--wal-dir", str(b)) == wal.id
    assert record(d) == {"wal_id": wal.id, "wal_dir": str(b)}
    refused(d, match=f"last opened in {b}")  # the old place is empty now


def test_a_data_dir_from_before_the_record_is_accepted_and_recorded(tmp_path):
    d, a = tmp_path / "d", tmp_path / "a"
    bootstrapped(d, "--wal-dir", str(a))
    os.unlink(d / WAL_RECORD_FILE)
    os.unlink(a / ID_FILE)  # the previous version wrote neither
    new_id = reopens(d, "--wal-dir", str(a))
    assert read_wal_id(str(a)) == new_id and record(d)["wal_id"] == new_id
    refused(d, "--wal-dir", str(tmp_path / "b"), match="there is no WAL in")


def test_force_new_cluster_keeps_the_wal_identity(tmp_path):
    d, a = tmp_path / "d", tmp_path / "a"
    m = make_3(d, "--wal-dir", str(a))
    m.open_storage()
    m.open_membership()
    apply_conf_changes(m, 1)
    wal_id = m.wal.id
    m.close_storage()
    m = make_3(d, "--wal-dir", str(a), "--force-new-cluster")
    m.open_storage()
    assert m.wal.id == wal_id and m.raftlog.last_index() > 3
    m.close_storage()
    assert record(d)["wal_id"] == wal_id == read_wal_id(str(a))
    m = make_3(d, "--force-new-cluster")  # the flag does not excuse a missing WAL
    with pytest.raises(DataDirStateError, match="there is no WAL in"):
        m.open_storage()
    m.close_storage()


@pytest.mark.parametrize("with_wal_dir", [False, True])
def test_restore_records_the_wal_where_it_ends_up(tmp_path, with_wal_dir):
    snap = write_snapshot(tmp_path, trailer=False)
    data_dir, wal_dir = tmp_path / "m1.raftkv", tmp_path / "disk2" / "m1.wal"
    cfg = restore.restore_config("m1", CLUSTER, "tok", "http://127.0.0.1:23801",
                                 str(data_dir), str(wal_dir) if with_wal_dir else "")
    restore.restore(snap, cfg, skip_hash_check=True)
    where = wal_dir if with_wal_dir else data_dir / "wal"
    assert record(data_dir) == {"wal_id": read_wal_id(str(where)), "wal_dir": str(where)}
    assert WAL.exists(data_dir, cfg.wal_dir)
    other = ("--wal-dir", str(tmp_path / "b")) if not with_wal_dir else ()
    m = make_member(data_dir, *other)
    with pytest.raises(DataDirStateError, match="there is no WAL in|its WAL is in .* but"):
        m.open_storage()
    m.close_storage()


def test_lost_identity_files_beside_an_applied_store_are_refused(tmp_path):
    """wal-identity.json (and member-identity.json) deleted from a data dir whose WAL has an
    identity and whose store has applied entries: the WAL was taken for one from before WAL
    identities and the member started, with nothing to tell whether the WAL was its own. Only
    a lost record explains an identified WAL beside an applied store (the record is written
    before anything is applied), so the start is refused and touches nothing."""
    d = tmp_path / "d"
    applied_member(d)
    os.unlink(d / WAL_RECORD_FILE)
    assert not os.path.exists(d / IDENTITY_FILE)  # open_storage alone never wrote it
    before = tree(d)
    msg = refused(d, match=f"{WAL_RECORD_FILE} and {IDENTITY_FILE} are missing")
    assert f"the WAL in {d / 'wal'} has an identity ({read_wal_id(str(d / 'wal'))})" in msg
    assert "applied to index 1" in msg and "restore this member from its peers" in msg
    assert tree(d) == before
    record_wal(str(d), read_wal_id(str(d / "wal")), str(d / "wal"))  # put back: it starts
    m = make_member(d)
    m.open_storage()
    m.close_storage()


def test_an_unrecorded_identified_wal_beside_an_unapplied_store_starts(tmp_path):
    """A first start cut short between the WAL's identity and the record (nothing applied
    yet), like a new data dir on a kept WAL, starts and records the WAL."""
    d = tmp_path / "d"
    wal = bootstrapped(d)
    os.unlink(d / WAL_RECORD_FILE)
    assert reopens(d) == wal.id and record(d)["wal_id"] == wal.id


def test_a_refused_start_leaves_a_wal_from_before_identities_without_one(tmp_path, caplog):
    """A WAL from before identities used to get its identity at open, before the checks that
    may refuse the start: the refused start changed it, and the next start found an
    identified WAL without a record (now refused as lost files). Its identity is written with
    the record, once the start passed every check, and the start says what it took the WAL
    for."""
    d = tmp_path / "d"
    applied_member(d)
    os.unlink(d / WAL_RECORD_FILE)
    os.unlink(d / "wal" / ID_FILE)  # what a raftkv from before WAL identities left
    shutil.copyfile(d / "data.mdb", tmp_path / "data.mdb")
    engine = Engine(str(d))  # the store applied beyond the WAL's end: refused after the replay
    store = KVStore(engine)
    with engine.env.begin(write=True) as txn:
        store.apply(txn, 5, [])
    engine.close()
    before = tree(d)
    refused(d, match="ends at index 1")
    assert tree(d) == before and read_wal_id(str(d / "wal")) is None
    shutil.copyfile(tmp_path / "data.mdb", d / "data.mdb")
    caplog.set_level(logging.INFO, logger="raftkv.member")
    m = make_member(d)
    m.open_storage()
    m.close_storage()
    assert read_wal_id(str(d / "wal")) == m.wal.id == record(d)["wal_id"]
    assert "taking it for a WAL written by a raftkv from before WAL identities" in caplog.text
