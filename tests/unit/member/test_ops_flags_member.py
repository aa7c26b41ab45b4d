"""What the member does with etcd's ops flags: --wal-dir (the WAL in its own directory through
start-up checks, --force-new-cluster and snapshot restore; a store without its WAL is refused),
--pre-vote, the initial election tick advance, --experimental-compaction-batch-limit,
--backend-batch-interval, --experimental-warning-apply-duration, --log-outputs and
--host-whitelist on the HTTP endpoint."""
import asyncio
import logging
import os
import time

import pytest

from raftkv.api import serve
from raftkv.api.http import start_http_server
from raftkv.raft import ConfChangeType, Entry, EntryType, HardState, MsgType
from raftkv.server import member as member_mod
from raftkv.server.config import load_config
from raftkv.server.member import DataDirStateError, Member
from raftkv.storage.wal import ENTRIES, HARD_STATE, WAL
from raftkv.utl import restore
from tests.unit.member.test_force_new_cluster import apply_conf_changes, changes
from tests.unit.member.test_force_new_cluster import make_member as make_3
from tests.unit.utl.test_restore import CLUSTER, write_snapshot


@pytest.fixture
def snap(tmp_path):
    """A snapshot file (no hash trailer) of a store with 3 keys at revision 4."""
    return write_snapshot(tmp_path, trailer=False)


def make_member(data_dir, *flags):
    return Member(load_config(["--name", "m1", "--data-dir", str(data_dir), *flags],
                              environ={}))


def applied_member(d, *flags):
    """A 1-member data dir whose store applied the bootstrap entry (a member that ran)."""
    m = make_member(d, *flags)
    m.open_storage()
    m.committer.run_sync(lambda txn: m.kv.apply(txn, 1, []))
    m.close_storage()


# ------------------------------------------------------------------ --wal-dir

def test_wal_dir_holds_the_wal_and_reopens(tmp_path):
    d, w = tmp_path / "d", tmp_path / "disk2" / "wal"
    applied_member(d, "--wal-dir", str(w))
    assert WAL.exists(d, str(w)) and not os.path.exists(d / "wal")
    m = make_member(d, "--wal-dir", str(w))
    m.open_storage()
    try:
        assert m.wal.dir == str(w)
        assert m.raftlog.last_index() == 1 and m.kv.applied_index == 1
        assert m.conf.voters == [m.id]
    finally:
        m.close_storage()


@pytest.mark.parametrize("recorded", [True, False])
@pytest.mark.parametrize("second", [(), ("--wal-dir", "OTHER")])
def test_a_store_without_its_wal_is_refused(tmp_path, second, recorded):
    """Refused by the data dir's WAL record (tests/unit/member/test_wal_identity.py), and
    without one (a data dir of the previous version) because the store has applied entries."""
    d, w = tmp_path / "d", tmp_path / "w"
    applied_member(d, "--wal-dir", str(w))
    if not recorded:
        os.unlink(d / member_mod.WAL_RECORD_FILE)
    flags = [str(tmp_path / "other") if f == "OTHER" else f for f in second]
    m = make_member(d, *flags)
    match = "there is no WAL in .*--wal-dir that holds" if recorded else \
        "no WAL in .*same --wal-dir"
    with pytest.raises(DataDirStateError, match=match):
        m.open_storage()
    m.close_storage()
    assert not WAL.exists(d) and not os.path.exists(tmp_path / "other")  # nothing created


def test_a_wal_in_the_data_dir_under_another_wal_dir_is_refused(tmp_path):
    d = tmp_path / "d"
    applied_member(d)
    m = make_member(d, "--wal-dir", str(tmp_path / "w"))
    with pytest.raises(DataDirStateError, match="its WAL is in .* but --wal-dir is"):
        m.open_storage()
    m.close_storage()
    # --wal-dir naming DATA_DIR/wal itself is the same WAL
    m = make_member(d, "--wal-dir", str(d / "wal"))
    m.open_storage()
    assert m.kv.applied_index == 1
    m.close_storage()


def test_force_new_cluster_with_a_wal_dir(tmp_path):
    d, w = tmp_path / "d", tmp_path / "w"
    m = make_3(d, "--wal-dir", str(w))
    m.open_storage()
    m.open_membership()
    ids = sorted(m.cfg.member_ids().values())
    apply_conf_changes(m, 1)
    ents = [Entry(2, i, EntryType.NORMAL, b"") for i in range(4, 8)]
    m.wal.write_now([(ENTRIES, ents, 7), (HARD_STATE, HardState(2, m.id, 7), 0)])
    m.close_storage()
    m = make_3(d, "--wal-dir", str(w), "--force-new-cluster")
    m.open_storage()
    others = sorted(set(ids) - {m.id})
    assert changes(m.raftlog.entries(8, 10)) == [(ConfChangeType.REMOVE_NODE, mid)
                                                 for mid in others]
    m.close_storage()
    assert not os.path.exists(d / "wal")
    m = make_3(d, "--wal-dir", str(w))
    m.open_storage()
    assert m.raftlog.last_index() == 9 and m.raftlog.hard_state.commit == 9
    m.close_storage()


def test_restore_with_a_wal_dir(tmp_path, snap):
    data_dir, wal_dir = tmp_path / "m1.raftkv", tmp_path / "disk2" / "m1.wal"
    cfg = restore.restore_config("m1", CLUSTER, "tok", "http://127.0.0.1:23801",
                                 str(data_dir), str(wal_dir))
    info = restore.restore(snap, cfg, skip_hash_check=True)
    assert info["revision"] == 4
    assert "wal" not in os.listdir(data_dir) and WAL.exists(data_dir, str(wal_dir))
    assert not os.path.exists(str(wal_dir) + restore.SCRATCH_SUFFIX)
    m = Member(cfg)
    try:
        m.open_storage()
        assert m.raftlog.last_index() == 3 and m.kv.current_revision == 4
    finally:
        m.close_storage()
    # an existing wal-dir is refused, and nothing is left behind
    other = tmp_path / "m2.raftkv"
    cfg2 = restore.restore_config("m2", CLUSTER, "tok", "http://127.0.0.1:23802", str(other),
                                  str(wal_dir))
    with pytest.raises(restore.RestoreError, match="wal-dir .* exists"):
        restore.restore(snap, cfg2, skip_hash_check=True)
    assert not os.path.exists(other)


# ------------------------------------------------------------------ Raft flags

def started_3(d, *flags):
    """m1 of a 3-member cluster whose bootstrap conf changes are applied (a member with
    unapplied conf changes may not campaign), opened with flags."""
    m = make_3(d)
    m.open_storage()
    m.open_membership()
    apply_conf_changes(m, 1)
    m.close_storage()
    m = make_3(d, *flags)
    m.open_storage()
    return m


@pytest.mark.parametrize("pre_vote, first", [("true", MsgType.PRE_VOTE),
                                             ("false", MsgType.VOTE)])
def test_pre_vote_flag_reaches_the_raft_core(tmp_path, pre_vote, first):
    m = started_3(tmp_path / "d", "--pre-vote", pre_vote)
    try:
        node = m.new_node()
        assert node.raft.c.pre_vote is (pre_vote == "true")
        node.campaign()
        rd = node.ready()
        sent = {msg.type for msg in rd.messages} | {msg.type for msg in rd.early_messages}
        assert sent == {first}
    finally:
        m.close_storage()


def test_tick_advance_brings_the_first_campaign_forward(tmp_path):
    """etcd's advanceTicks: election_ticks - 2 ticks at once leave at most election_ticks + 2
    more before a follower campaigns (its randomized timeout is below 2 x election_ticks)."""
    m = started_3(tmp_path / "d")
    try:
        slow = m.new_node()
        ticks = m.cfg.election_ticks
        member_mod._tick_n(slow, ticks - 1)  # without the advance: no campaign this early
        assert slow.raft.state.name == "FOLLOWER"
        node = m.new_node()
        member_mod._tick_n(node, ticks - 2)
        for n in range(1, ticks + 3):
            node.tick()
            if node.raft.state.name in ("PRE_CANDIDATE", "CANDIDATE"):
                break
        assert node.raft.state.name in ("PRE_CANDIDATE", "CANDIDATE")
    finally:
        m.close_storage()


# ------------------------------------------------------------------ store and apply flags

def test_compaction_batch_and_commit_linger_reach_the_store(tmp_path):
    m = make_member(tmp_path / "d", "--experimental-compaction-batch-limit", "7",
                    "--backend-batch-interval", "3ms")
    m.open_storage()
    try:
        assert m.kv.compaction_batch == 7 and m.committer.lazy_wait_s == 0.003
    finally:
        m.close_storage()
    m = make_member(tmp_path / "e")
    m.open_storage()
    try:
        assert m.committer.lazy_wait_s == member_mod.APPLY_LINGER_S_DEFAULT
    finally:
        m.close_storage()


class _ProposingLoop:
    """The RaftLoop surface the lease code uses: a role and propose()."""

    def __init__(self, role):
        self.role = role
        self.proposed = []
        self.fail_fast = []

    def propose(self, op, body, size, timeout_s, fail_fast=False):
        self.proposed.append((op, body))
        self.fail_fast.append(fail_fast)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result({})
        return fut


def _apply(m, index, requests):
    m.committer.run_sync(lambda txn: m.kv.apply(txn, index, requests))
    m.kv.committed()


@pytest.mark.parametrize("flag", [True, False])
def test_lease_checkpoint_flag_reaches_the_lessor(tmp_path, monkeypatch, flag):
    monkeypatch.setenv("RAFTKV_LEASE_CHECKPOINT_INTERVAL_S", "0.05")
    m = make_member(tmp_path / "d", *(["--experimental-enable-lease-checkpoint"]
                                      if flag else []))
    monkeypatch.setattr(member_mod, "LEASE_LOOP_S", 0.02)
    m.open_storage()
    try:
        assert m.lessor.checkpoint_interval == (0.05 if flag else 0.0)
        assert m.lessor.checkpointer == m._propose_lease_checkpoints
        _apply(m, 1, [("lease_grant", {"ID": 1, "TTL": 10}), ("lease_grant", {"ID": 2,
                                                                              "TTL": 20})])
        m.lessor.promote(time.monotonic() - 3)  # leader for 3 s: 7 s and 17 s left

        async def lease_loop_turns():
            m.loop = _ProposingLoop(member_mod.Role.LEADER)
            task = asyncio.get_running_loop().create_task(m._lease_loop())
            await asyncio.sleep(0.2)
            task.cancel()
            m._propose_lease_checkpoints([{"ID": 1, "remaining_TTL": 0}])
            m.loop.role = member_mod.Role.FOLLOWER
            m._propose_lease_checkpoints([{"ID": 1, "remaining_TTL": 0}])  # not proposed
            return m.loop.proposed

        proposed = asyncio.run(lease_loop_turns())
        cps = [body["checkpoints"] for op, body in proposed[:-1]]
        assert all(op == "lease_checkpoint" for op, _ in proposed)
        # a leader that lost its place meanwhile drops them rather than holding them for
        # the next leader (RaftLoop.propose)
        assert all(m.loop.fail_fast)
        assert proposed[-1][1] == {"checkpoints": [{"ID": 1, "remaining_TTL": 0}]}
        if flag:  # a batch every turn or two, both leases in each
            assert len(cps) >= 2 and [c["ID"] for c in cps[0]] == [1, 2]
            assert [c["remaining_TTL"] for c in cps[0]] == [7, 17]
        else:
            assert cps == []
    finally:
        m.close_storage()


def test_slow_apply_warning(caplog):
    caplog.set_level(logging.WARNING, logger="raftkv.member")
    member_mod._warn_slow_apply(Entry(3, 42, EntryType.NORMAL, b"\x90"), 0.25, 0.1)
    assert "apply request took too long: 250.0ms for log entry 42" in caplog.text
    assert "expected at most 100.0ms" in caplog.text


# ------------------------------------------------------------------ logging and HTTP

def test_log_outputs_to_stdout_and_a_file(tmp_path, capsys):
    path = tmp_path / "logs" / "m.log"
    os.makedirs(path.parent)
    cfg = load_config(["--log-outputs", f"stdout,{path}", "--max-wals", "9"], environ={})
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        serve.setup_logging(cfg)
        logging.getLogger("raftkv.test").warning("hello %s", "there")
        for h in root.handlers:
            h.flush()
        text = path.read_text()
        assert "hello there" in text and "--max-wals is accepted without effect" in text
        assert "hello there" in capsys.readouterr().out
    finally:
        for h in root.handlers:
            if isinstance(h, logging.FileHandler):
                h.close()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_log_outputs_to_a_missing_directory_stops_the_start(tmp_path, capsys):
    code = serve.main(["--log-outputs", str(tmp_path / "no" / "such" / "dir.log"),
                       "--data-dir", str(tmp_path / "d")])
    assert code == 2 and "--log-outputs" in capsys.readouterr().err


class _FakeService:
    class m:  # noqa: N801 -- the attribute HttpEndpoint reads
        kv = None
        loop = None
        wal = None
        committer = None


async def _get(port, host):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /version HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    return int(data.split()[1])


def test_host_whitelist_on_the_http_endpoint(monkeypatch):
    monkeypatch.setattr("raftkv.api.http.Metrics", lambda member: None)
    cfg = load_config(["--host-whitelist", "localhost,127.0.0.1"], environ={})

    async def run():
        server, port = await start_http_server(_FakeService(), "127.0.0.1", 0,
                                               host_allowed=cfg.host_allowed)
        try:
            return [await _get(port, h) for h in (f"127.0.0.1:{port}", "localhost",
                                                  "rebind.example:80")]
        finally:
            server.close()
    assert asyncio.run(run()) == [200, 200, 421]


