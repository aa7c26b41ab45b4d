"""A member whose own data is damaged refuses to start, exit status 2, with a message that
says what is wrong and what to do, and leaves the damaged files as they were (found by hand,
each a real process on a copy of a data dir):

- a flipped byte in a WAL record that later appends followed: it was cut as a torn tail, the
  member started, and a put it then answered OK was never applied (the store had applied the
  cut entries' indexes), so an acknowledged write was lost;
- data.mdb cut short: LMDB mapped it and the process died of SIGBUS;
- a damaged LMDB page, or a member-identity.json that is not JSON: a Python traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest

from raftkv.api import wire
from raftkv.raft.types import HardState
from raftkv.storage import wal as wal_mod
from raftkv.storage.logstore import pack_hard_state, unpack_hard_state

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

WAIT_S = 20.0  # a restarted member catching up


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _stopped_member_with_data(make_cluster):
    h = make_cluster(members=1)
    c = h.client()
    for i in range(20):  # one entry each: many WAL records
        c.put(f"k{i}", f"v{i}")
    h.close_clients()
    m = h.members[0]
    assert h.stop_member(m) == 0
    return h, m


def _refused(h, m, *words, wait_s=60):
    seen = len(h.log_text(m))
    h.cluster.start_member(m)
    assert m.proc.wait(timeout=wait_s) == 2
    text = h.log_text(m)[seen:]
    assert "refusing to start" in text and "Traceback" not in text, text
    for w in words:
        assert w in text, text
    return text


def _wal_records(path):
    """(offset, length) of each record of a WAL segment, as wal._read_records walks them."""
    with open(path, "rb") as f:
        data = f.read()
    out, off = [], 0
    while off + wal_mod._HEAD_BYTES <= len(data):
        length, crc, _, _ = wal_mod._HEAD.unpack_from(data, off)
        if length == 0 and crc == 0:
            break
        out.append((off, 8 + length))
        off += 8 + length
    return out


def test_a_flipped_byte_before_later_wal_records_is_refused(make_cluster):
    h, m = _stopped_member_with_data(make_cluster)
    wal_dir = os.path.join(m.data_dir, "wal")
    seg = os.path.join(wal_dir, sorted(n for n in os.listdir(wal_dir) if n.endswith(".wal"))[-1])
    records = _wal_records(seg)
    assert len(records) > 10
    off, length = records[len(records) // 2]  # acknowledged, with later appends after it
    with open(seg, "r+b") as f:
        f.seek(off + length - 3)
        byte = f.read(1)
        f.seek(off + length - 3)
        f.write(bytes([byte[0] ^ 0x10]))
    before = _digest(seg)
    _refused(h, m, "CRC32C mismatch", f"at byte {off}", "remove it from the cluster")
    assert _digest(seg) == before


def _cut_short(data_file):
    os.truncate(data_file, os.path.getsize(data_file) // 2)


def _zero_pages(data_file):
    size = os.path.getsize(data_file)
    with open(data_file, "r+b") as f:  # every page after LMDB's two meta pages
        f.seek(2 * 4096)
        f.write(b"\0" * (size - 2 * 4096))


@pytest.mark.parametrize("damage, words", [(_cut_short, "cut short"),
                                           (_zero_pages, "is damaged")])
def test_a_damaged_store_file_is_refused(make_cluster, damage, words):
    h, m = _stopped_member_with_data(make_cluster)
    data_file = os.path.join(m.data_dir, "data.mdb")
    damage(data_file)
    before = _digest(data_file)
    _refused(h, m, "data.mdb", words)
    assert _digest(data_file) == before


def test_a_damaged_member_identity_is_refused(make_cluster):
    h, m = _stopped_member_with_data(make_cluster)
    path = os.path.join(m.data_dir, "member-identity.json")
    with open(path, "w") as f:
        f.write("{")
    before = _tree_digest(m.data_dir)
    _refused(h, m, "member-identity.json is damaged")
    # raftkv.lock too: the start recorded its PID before it read the identity file
    assert _tree_digest(m.data_dir) == before


# ---------------------------------------------------------------- a matrix of damage
#
# One member's data dir is built once (several WAL segments, an older copy of its store) and
# each case damages a fresh copy of it, then starts the member: a refusal must say why, with
# exit status 2, and change no file; a start must serve every acknowledged put. Found by this
# matrix (each was a real member process): a segment cut inside its first record header was a
# traceback (UnboundLocalError); a HARD_STATE record whose term went back, or whose vote
# changed within its term, was taken (the member could vote twice in a term); one whose commit
# index was past the log's end was a traceback after the PID was recorded; a store or
# member-identity.json of another cluster was taken (the member replayed its WAL onto the other
# cluster's state, or waited for ever for a leader); a start refused after the replay cut a
# torn tail had already rewritten the segment.

SMALL_SEGMENT_BYTES = 64 << 10  # a few hundred KB of puts make several segments
MATRIX_PUTS = 100
MATRIX_VALUE_BYTES = 2000
STALE_AFTER_PUTS = 20


def _value(i):
    return (b"%05d" % i) * (MATRIX_VALUE_BYTES // 5)


def _tree_digest(path):
    """sha256 of every file under path except lock.mdb (LMDB rewrites it at every open)."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            if name != "lock.mdb":
                full = os.path.join(root, name)
                out[os.path.relpath(full, path)] = _digest(full)
    return out


@pytest.fixture(scope="module")
def built(make_module_cluster, tmp_path_factory):
    """(harness, member, pristine copy of its stopped data dir, {key: value} acknowledged,
    extra files): an older copy of its store, another cluster's store and identity file."""
    spare = tmp_path_factory.mktemp("damage")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAFTKV_WAL_SEGMENT_BYTES", str(SMALL_SEGMENT_BYTES))
        other = make_module_cluster(members=1)
        h = make_module_cluster(members=1)
        files = _build(other, h, spare)
    m = h.members[0]
    pristine = str(spare / "pristine")
    shutil.copytree(m.data_dir, pristine)
    assert len(_segments(pristine)) >= 3
    acked = {f"k{i:05d}".encode(): _value(i) for i in range(MATRIX_PUTS)}
    return h, m, pristine, acked, files


def _build(other, h, spare):
    other.client().put("k00000", "another cluster's")
    other.close_clients()
    om = other.members[0]
    assert other.stop_member(om) == 0
    files = {"other-store": spare / "other-data.mdb", "other-identity": spare / "other-id.json",
             "stale-store": spare / "stale-data.mdb"}
    shutil.copyfile(os.path.join(om.data_dir, "data.mdb"), files["other-store"])
    shutil.copyfile(os.path.join(om.data_dir, "member-identity.json"), files["other-identity"])
    m = h.members[0]
    for i in range(MATRIX_PUTS):
        if i == STALE_AFTER_PUTS:
            h.close_clients()
            assert h.stop_member(m) == 0
            shutil.copyfile(os.path.join(m.data_dir, "data.mdb"), files["stale-store"])
            h.start_member(m)
            h.leader()
        h.client(timeout=10.0).put(f"k{i:05d}", _value(i))
    h.close_clients()
    assert h.stop_member(m) == 0
    return files


def _segments(data_dir):
    wal_dir = os.path.join(data_dir, "wal")
    return [os.path.join(wal_dir, n) for n in sorted(os.listdir(wal_dir)) if n.endswith(".wal")]


def _append_hard_state(data_dir, change):
    """Append, with the WAL's own encoder, a HARD_STATE record change(last hard state) after
    the last record of the newest segment."""
    last_seq, hs = 0, None
    for seg in _segments(data_dir):
        with open(seg, "rb") as f:
            data = f.read()
        for off, length in _wal_records(seg):
            _, _, rtype, seq = wal_mod._HEAD.unpack_from(data, off)
            last_seq = max(last_seq, seq)
            if rtype == wal_mod.HARD_STATE:
                hs = unpack_hard_state(data[off + wal_mod._HEAD_BYTES:off + length])
    seg = _segments(data_dir)[-1]
    off, length = _wal_records(seg)[-1]
    with open(seg, "r+b") as f:
        f.seek(off + length)
        f.write(wal_mod._record(wal_mod.HARD_STATE, last_seq + 1, pack_hard_state(change(hs))))


def _swap(a, b):
    os.rename(a, a + ".swap")
    os.rename(b, a)
    os.rename(a + ".swap", b)


def _zero_block_inside_newest(data_dir):
    seg = _segments(data_dir)[-1]
    off, length = _wal_records(seg)[-1]
    with open(seg, "r+b") as f:
        f.seek((off + length) // 2 // 4096 * 4096)
        f.write(bytes(4096))


def _copy_as_next(data_dir):
    segs = _segments(data_dir)
    number = int(os.path.basename(segs[-1])[:-len(wal_mod.SUFFIX)], 16) + 1
    shutil.copyfile(segs[0], os.path.join(os.path.dirname(segs[0]),
                                          wal_mod._segment_name(number)))


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def _rewrite_json(path, **fields):
    with open(path, encoding="utf-8") as f:
        rec = json.load(f)
    rec.update(fields)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rec, f)


STARTS = None  # the expectation of a case the member starts from
MATRIX = {
    # WAL segments
    "middle segment deleted": (lambda d, f: os.unlink(_segments(d)[1]), ("is missing",)),
    # (the older segment's header, or a record's seq, gives it away)
    "two segments swapped": (lambda d, f: _swap(*_segments(d)[:2]), ("is corrupt",)),
    "a segment copied as the next one": (lambda d, f: _copy_as_next(d), ("is corrupt",)),
    "newest segment deleted": (lambda d, f: os.unlink(_segments(d)[-1]), ("ends at index",)),
    "newest segment cut inside its header": (
        lambda d, f: os.truncate(_segments(d)[-1], 13), ("ends at index",)),
    "newest segment cut at a record boundary": (
        lambda d, f: os.truncate(_segments(d)[-1], _wal_records(_segments(d)[-1])[-3][0]),
        ("ends at index",)),
    "4 KiB of zeros inside the newest segment": (
        lambda d, f: _zero_block_inside_newest(d), ("ends at index",)),
    "newest segment's COMPACT header flipped": (
        lambda d, f: _flip(_segments(d)[-1], 20), ("CRC32C mismatch", "at byte 0")),
    # hard state records (a good CRC: no torn write explains them)
    "hard state term goes back": (
        lambda d, f: _append_hard_state(d, lambda hs: HardState(hs.term - 1, 0, hs.commit)),
        ("a term never goes back",)),
    "hard state vote changes within its term": (
        lambda d, f: _append_hard_state(d, lambda hs: HardState(hs.term, hs.vote + 1,
                                                                 hs.commit)),
        ("one vote per term",)),
    "hard state commit past the log": (
        lambda d, f: _append_hard_state(d, lambda hs: HardState(hs.term, hs.vote,
                                                                 hs.commit + 1000)),
        ("beyond the log's last entry",)),
    # identities
    "wal-id removed": (lambda d, f: os.unlink(os.path.join(d, "wal", "wal-id")),
                       ("has no identity",)),
    "wal-identity.json names another WAL": (
        lambda d, f: _rewrite_json(os.path.join(d, "wal-identity.json"), wal_id="ab" * 16),
        ("is another one",)),
    "member-identity.json of another cluster": (
        lambda d, f: shutil.copyfile(f["other-identity"], os.path.join(d, "member-identity.json")),
        ("one of them is another cluster's",)),
    # the store
    "data.mdb of another cluster": (
        lambda d, f: shutil.copyfile(f["other-store"], os.path.join(d, "data.mdb")),
        ("one of them is another cluster's",)),
    "data.mdb an older copy of itself": (
        lambda d, f: shutil.copyfile(f["stale-store"], os.path.join(d, "data.mdb")), STARTS),
    "lock.mdb removed": (lambda d, f: os.unlink(os.path.join(d, "lock.mdb")), STARTS),
    "data.mdb removed": (lambda d, f: os.unlink(os.path.join(d, "data.mdb")),
                         ("no data.mdb", "remove the member from the cluster")),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(MATRIX))
def test_damage_matrix(built, case):
    h, m, pristine, acked, files = built
    damage, words = MATRIX[case]
    shutil.rmtree(m.data_dir)
    shutil.copytree(pristine, m.data_dir)
    damage(m.data_dir, files)
    try:
        if words is not STARTS:
            before = _tree_digest(m.data_dir)
            _refused(h, m, *words, wait_s=20)
            assert _tree_digest(m.data_dir) == before  # a refused start changes no file
            return
        h.start_member(m)
        h.leader()
        c = h.client([m], timeout=10.0)
        got = {meta.key: value for value, meta in c.get_prefix("k")}
        assert got == acked  # every acknowledged put, once
        c.put("after", "x")
        assert c.get("after")[0] == b"x"
        h.close_clients()
        assert h.stop_member(m) == 0
    finally:  # a member that started where it should have refused must not hold the next case
        h.close_clients()
        if m.alive():
            h.stop_member(m)


# ---------------------------------------------------------------- in a 3-member cluster

def _same_everywhere(h, acked):
    """Every acknowledged put on every member, and HashKV equal at one revision."""
    rev = h.client(timeout=10.0).put("final", "x")["header"]["revision"]
    acked = dict(acked, final=b"x")
    deadline = time.monotonic() + WAIT_S
    hashes = {}
    for m in h.members:
        alone = h.client([m], timeout=5.0)
        while True:
            try:
                got = {meta.key.decode(): v for v, meta in alone.get_all(serializable=True)}
                if got == acked:
                    hashes[m.name] = alone.hash_kv(rev)["hash"]
                    break
            except (wire.RaftkvError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"{m.name} lacks acknowledged puts"
            time.sleep(0.1)
    assert len(set(hashes.values())) == 1, hashes


def _three_with_puts(make_cluster):
    h = make_cluster(3)
    leader = h.leader()
    c = h.client(timeout=10.0)
    acked = {}
    for i in range(20):
        c.put(f"k{i:03d}", f"v{i}")
        acked[f"k{i:03d}"] = f"v{i}".encode()
    h.close_clients()
    return h, leader, next(m for m in h.members if m is not leader), acked


def test_another_members_identity_file_is_refused(make_cluster):
    """member-identity.json copied from another member of the cluster: the member ran under
    that member's ID (two processes as one Raft member; it never found a leader). It is
    refused now, names the two IDs, and starts once its own file is back."""
    h, leader, m, acked = _three_with_puts(make_cluster)
    assert h.stop_member(m) == 0
    path = os.path.join(m.data_dir, "member-identity.json")
    shutil.copyfile(path, path + ".own")
    shutil.copyfile(os.path.join(leader.data_dir, "member-identity.json"), path)
    before = _tree_digest(m.data_dir)
    _refused(h, m, "the member ID is another member's", "member-identity.json says member")
    assert _tree_digest(m.data_dir) == before
    os.replace(path + ".own", path)
    h.start_member(m)
    _same_everywhere(h, acked)


def test_a_new_data_dir_on_a_kept_wal_of_a_three_member_cluster(make_cluster, tmp_path):
    """The data dir lost, its WAL kept (moved to a --wal-dir): the member rebuilds its store
    from the WAL, holds every acknowledged put, and announces the 3 voters once the replay has
    applied them (it said "1 voter(s), tolerates 0 failure(s)" and warned that a 1-member
    cluster tolerates no failure, from the first of the bootstrap's conf changes)."""
    h, _, m, acked = _three_with_puts(make_cluster)
    assert h.stop_member(m) == 0
    wal_dir = str(tmp_path / "kept-wal")
    shutil.move(os.path.join(m.data_dir, "wal"), wal_dir)
    shutil.rmtree(m.data_dir)
    h.cluster.member_args[m.name] = ["--wal-dir", wal_dir]
    seen = len(h.log_text(m))
    h.start_member(m)
    _same_everywhere(h, acked)
    text = h.log_text(m)[seen:]
    assert "the members are not known until the log replays" in text, text
    assert "3 voter(s), quorum 2, tolerates 1 failure(s)" in text, text
    assert "1 voter(s)" not in text and "a cluster of 1 member(s)" not in text, text


def _zero_block_after(data_dir, keep_end):
    """Zero the 4 KiB block halfway between keep_end and the end of the newest segment's
    records (a torn write explains it: the log is cut there at start)."""
    seg = _segments(data_dir)[-1]
    off, length = _wal_records(seg)[-1]
    block = (keep_end + off + length) // 2 // 4096 * 4096
    assert keep_end <= block < off, (keep_end, block, off)
    with open(seg, "r+b") as f:
        f.seek(block)
        f.write(bytes(4096))


def _wal_end(data_dir):
    off, length = _wal_records(_segments(data_dir)[-1])[-1]
    return off + length


def test_a_member_whose_committed_entries_a_quorum_lost_stops_with_advice(make_cluster,
                                                                         tmp_path):
    """Both followers' data dirs damaged alike (an older copy of data.mdb, a zeroed block in
    the newest WAL segment, which the start cuts as a torn tail) while the leader was down:
    they elect one of them without the entries they lost, acknowledged puts among them. When
    the old leader came back, the new leader took its commit index (past the new leader's
    own log) as its match and died on its next append, as did the other damaged member once
    it led: no leader for good. Now the new leader goes on with the damaged pair, and the old
    leader, whose log holds those entries as committed, stops with exit status 2 and says
    what happened and what to do; its data dir holds every acknowledged put, which
    --force-new-cluster then serves."""
    h = make_cluster(3)
    old_leader = h.leader()
    pair = [m for m in h.members if m is not old_leader]
    c = h.client(timeout=10.0)
    acked = {}

    def put(i):
        key, value = f"k{i:03d}", f"{i:03d}".encode() * 500
        c.put(key, value)
        acked[key] = value

    for i in range(30):
        put(i)
    h.close_clients()
    stale = {}
    for m in pair:  # an older copy of the store, taken from the stopped member
        assert h.stop_member(m) == 0
        stale[m.name] = (str(tmp_path / f"{m.name}-data.mdb"), _wal_end(m.data_dir))
        shutil.copyfile(os.path.join(m.data_dir, "data.mdb"), stale[m.name][0])
        h.start_member(m)
    h.leader()
    c = h.client(timeout=10.0)
    for i in range(30, 60):
        put(i)
    h.close_clients()
    for m in h.members:
        assert h.stop_member(m) == 0
    for m in pair:
        copy, keep_end = stale[m.name]
        shutil.copyfile(copy, os.path.join(m.data_dir, "data.mdb"))
        _zero_block_after(m.data_dir, keep_end)
    for m in pair:
        h.start_member(m)
    new_leader = h.leader(among=pair)
    got = {meta.key.decode(): v for v, meta in h.client(pair, timeout=10.0).get_prefix("k")}
    assert set(got) < set(acked)  # the pair lost acknowledged puts: the expected loss

    seen = len(h.log_text(old_leader))
    h.cluster.start_member(old_leader)
    assert old_leader.proc.wait(timeout=WAIT_S) == 2
    text = h.log_text(old_leader)[seen:]
    assert "Traceback" not in text, text
    for words in ("refusing to go on", f"leader {h.status(new_leader)['leader']:x} of term",
                  "the leader lacks committed entries", "acknowledged",
                  "remove it from the cluster", "--force-new-cluster"):
        assert words in text, text
    assert h.leader(among=pair) is new_leader and all(m.alive() for m in pair)
    h.client(pair, timeout=10.0).put("after", "x")
    h.close_clients()

    for m in pair:
        assert h.stop_member(m) == 0
    h.cluster.member_args[old_leader.name] = ["--force-new-cluster"]
    h.start_member(old_leader)
    assert h.leader(among=[old_leader]) is old_leader
    got = {meta.key.decode(): v for v, meta in h.client([old_leader]).get_prefix("k")}
    assert got == acked
