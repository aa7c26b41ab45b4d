"""raftkv/utl/restore.py and raftkvutl: data dirs from snapshot files, and every way a restore
refuses (a bad file, bad flags, an existing data dir) without leaving anything behind."""
import hashlib
import io
import json
import os

import pytest

from raftkv.cli import ctl
from raftkv.mvcc import snapshot
from raftkv.server.config import ServerConfig
from raftkv.server.member import Member
from raftkv.utl import main as utl_main, restore
from tests.unit.mvcc.helpers import Harness

CLUSTER = "m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803"


def write_snapshot(tmp_path, trailer=True):
    """A snapshot file of a store with 3 keys at revision 4: the image, and with trailer the
    SHA-256 snapshot save appends. Returns its path."""
    h = Harness(tmp_path / "src")
    try:
        for k in (b"a", b"b", b"c"):
            h.put(k, b"v-" + k)
        path = tmp_path / "snap.db"
        with open(path, "wb") as f:
            snapshot.export_bbolt(h.store, f)
    finally:
        h.close()
    if trailer:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).digest()
        with open(path, "ab") as f:
            f.write(digest)
    return str(path)


@pytest.fixture
def snap(tmp_path):
    return write_snapshot(tmp_path)


def cfg_for(name, tmp_path, **kw):
    port = CLUSTER.split(f"{name}=")[1].split(",")[0]
    return restore.restore_config(name, CLUSTER, "tok", port,
                                  str(kw.get("data_dir", tmp_path / f"{name}.raftkv")))


def test_restore_gives_a_bootstrapped_member(tmp_path, snap):
    infos = [restore.restore(snap, cfg_for(n, tmp_path)) for n in ("m1", "m2", "m3")]
    assert {i["cluster_id"] for i in infos} == {infos[0]["cluster_id"]}  # one cluster
    cfg = cfg_for("m2", tmp_path)
    assert infos[1]["member_id"] == cfg.member_ids()["m2"]
    assert (infos[1]["revision"], infos[1]["keys"]) == (4, 3)
    data_dir = tmp_path / "m2.raftkv"
    assert sorted(os.listdir(data_dir)) == ["data.mdb", "lock.mdb", "member-identity.json",
                                            "raftkv.lock", "wal", "wal-identity.json"]
    assert not os.path.exists(str(data_dir) + restore.SCRATCH_SUFFIX)
    # Opened as the member's first start would: the bootstrap entries are there, not redone.
    m = Member(cfg)
    try:
        m.open_storage()
        assert m.raftlog.last_index() == 3 and m.raftlog.hard_state.commit == 3
        assert sorted(m.conf.voters) == sorted(cfg.member_ids().values())
        assert m.kv.current_revision == 4 and m.kv.applied_index == 0
        assert m.kv.range({"key": b"b"})["kvs"][0]["value"] == b"v-b"
    finally:
        m.close_storage()


def test_refusals_leave_nothing_behind(tmp_path, snap, monkeypatch):
    cfg = cfg_for("m1", tmp_path)
    target = tmp_path / "m1.raftkv"
    target.mkdir()
    (target / "x").write_text("keep me")
    with pytest.raises(restore.RestoreError, match="exists"):
        restore.restore(snap, cfg)
    assert (target / "x").read_text() == "keep me"
    os.unlink(target / "x")  # an empty dir is fine

    def boom(engine, reader):
        raise snapshot.SnapshotError("boom")
    monkeypatch.setattr(snapshot, "import_bbolt", boom)
    with pytest.raises(restore.RestoreError, match="boom"):
        restore.restore(snap, cfg)
    assert not os.path.exists(str(target) + restore.SCRATCH_SUFFIX)
    monkeypatch.undo()
    os.makedirs(str(target) + restore.SCRATCH_SUFFIX + "/junk")  # left by a crashed restore
    assert restore.restore(snap, cfg)["keys"] == 3
    assert not os.path.exists(str(target) + restore.SCRATCH_SUFFIX)


def test_hash_trailer(tmp_path, snap):
    with open(snap, "rb") as f:
        data = f.read()
    image = tmp_path / "image.db"
    image.write_bytes(data[:-restore.HASH_BYTES])  # a copied member db: no trailer
    with pytest.raises(restore.RestoreError, match="missing hash but --skip-hash-check=false"):
        restore.restore(str(image), cfg_for("m1", tmp_path))
    assert restore.restore(str(image), cfg_for("m1", tmp_path), skip_hash_check=True)
    bad = tmp_path / "bad.db"
    flipped = bytearray(data)
    flipped[5000] ^= 1
    bad.write_bytes(bytes(flipped))
    with pytest.raises(restore.RestoreError, match="expected sha256"):
        restore.restore(str(bad), cfg_for("m2", tmp_path))
    assert not os.path.exists(tmp_path / "m2.raftkv")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x01" * 8192)
    with pytest.raises(restore.RestoreError, match="not a valid backend image"):
        restore.restore(str(junk), cfg_for("m3", tmp_path), skip_hash_check=True)
    with pytest.raises(restore.RestoreError, match="no such snapshot file"):
        restore.restore(str(tmp_path / "nope.db"), cfg_for("m3", tmp_path))
    assert not os.path.exists(tmp_path / "m3.raftkv")


@pytest.mark.parametrize("name, cluster, urls, message", [
    ("m4", CLUSTER, "http://127.0.0.1:23804", "no member named 'm4'"),
    ("m1", CLUSTER, "http://127.0.0.1:23809", "must name the same URLs"),
    ("m1", "m1=nonsense", "nonsense", "bad URL|no port"),
])
def test_bad_flags(tmp_path, name, cluster, urls, message):
    with pytest.raises(restore.RestoreError, match=message):
        restore.restore_config(name, cluster, "tok", urls, str(tmp_path / "d"))


def test_defaults_are_the_members(tmp_path, snap, monkeypatch):
    d = ServerConfig()
    assert (utl_main.DEFAULT_NAME, utl_main.DEFAULT_TOKEN, utl_main.DEFAULT_PEER_URL) == \
        (d.name, d.initial_cluster_token, d.listen_peer_urls)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert utl_main.main(["snapshot", "restore", snap], out=out) == 0
    assert "into default.raftkv: member default" in out.getvalue()
    # what a plain `raftkv` start would derive
    assert json.loads((tmp_path / "default.raftkv" / "member-identity.json").read_text())[
        "member_id"] == ServerConfig().finish().member_ids()["default"]


def test_cli_status_and_errors(tmp_path, snap, capsys):
    out = io.StringIO()
    assert utl_main.main(["snapshot", "status", snap, "-w", "json"], out=out) == 0
    st = json.loads(out.getvalue())
    assert (st["revision"], st["totalKey"]) == (4, 3 + 1 + 1)  # keys, meta, version
    out = io.StringIO()
    assert ctl.main(["snapshot", "status", snap], out=out) == 0  # raftkvctl runs the same
    assert out.getvalue() == f"{st['hash']:x}, 4, 5, 16 kB\n"
    out = io.StringIO()
    assert ctl.main(["-w", "table", "snapshot", "status", snap], out=out) == 0
    h = f"{st['hash']:x}"
    assert out.getvalue().splitlines()[1:4] == [  # etcdctl's: headers centred, cells right
        f"| {'HASH':^{len(h)}} | REVISION | TOTAL KEYS | TOTAL SIZE |",
        f"+-{'-' * len(h)}-+----------+------------+------------+",
        f"| {h} |        4 |          5 |      16 kB |"]
    assert ctl.main(["snapshot", "restore", snap, "--name", "m1", "--initial-cluster",
                     CLUSTER, "--initial-advertise-peer-urls", "http://127.0.0.1:23809",
                     "--data-dir", str(tmp_path / "x")], out=io.StringIO()) == 1
    assert "Error: --initial-cluster has m1=" in capsys.readouterr().err
    assert utl_main.main(["snapshot", "status", str(tmp_path / "nope.db")]) == 1
    assert "Error:" in capsys.readouterr().err
