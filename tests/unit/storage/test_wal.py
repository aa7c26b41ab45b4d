"""The WAL (raftkv/storage/wal.py) and the Raft Storage over it (raftkv/storage/raftlog.py):
replay semantics, segment rotation and release, torn tails, corruption, and SIGKILL durability."""
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from raftkv.raft.errors import CompactedError
from raftkv.raft.types import ConfState, Entry, EntryType, HardState, SnapshotMetadata
from raftkv.storage import encode_entries
from raftkv.storage import wal as wal_mod
from raftkv.storage.raftlog import WalLog
from raftkv.storage.wal import (
    COMPACT,
    ENTRIES,
    HARD_STATE,
    ID_FILE,
    INSTALL,
    SUFFIX,
    WAL,
    WalCorruptError,
    read_wal_id,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]
CONF = ConfState(voters=[1, 2, 3])


def ents(lo, hi, term=1):
    return [Entry(term, i, EntryType.NORMAL, b"v%d-t%d" % (i, term) * 3) for i in range(lo, hi + 1)]


def meta(index, term=1):
    return SnapshotMetadata(conf_state=CONF, index=index, term=term)


def open_wal(path, segment_bytes=1 << 20):
    w = WAL(path, segment_bytes=segment_bytes)
    img = w.open()
    return w, img


def write_sync(w, rtype, obj, max_index=0):
    seq, _ = w.append(rtype, obj, max_index=max_index)
    w.wait_synced(seq)
    return seq


def fill_small_segments(path):
    """Entries 1..200 in 4 KiB segments (several of them), closed."""
    w, _ = open_wal(path, segment_bytes=4096)
    for lo in range(1, 200, 10):
        write_sync(w, ENTRIES, ents(lo, lo + 9), lo + 9)
    w.close()


def segments(path):
    return sorted(n for n in os.listdir(os.path.join(path, "wal")) if n.endswith(SUFFIX))


def test_identity_is_made_once_and_kept(tmp_path):
    """A WAL gets its identity (ID_FILE) before its first segment and keeps it; a WAL written
    before identities existed gets one at its next open, written only by save_id() (the member
    calls it once its start passed every check: a refused start leaves the WAL as it was)."""
    w, _ = open_wal(tmp_path)
    write_sync(w, ENTRIES, ents(1, 3), 3)
    w.close()
    first = w.id
    assert len(first) == 32 and read_wal_id(str(tmp_path / "wal")) == first
    w, img = open_wal(tmp_path)
    w.close()
    assert w.id == first and len(img.entries) == 3
    os.unlink(tmp_path / "wal" / ID_FILE)
    w, img = open_wal(tmp_path)
    assert w.id != first and w.id_unsaved and read_wal_id(str(tmp_path / "wal")) is None
    w.save_id()
    w.close()
    assert not w.id_unsaved and read_wal_id(str(tmp_path / "wal")) == w.id
    assert len(img.entries) == 3 and segments(tmp_path) == [f"{1:016x}{SUFFIX}"]


def test_empty_and_round_trip(tmp_path):
    w, img = open_wal(tmp_path)
    assert img.entries == [] and img.hard_state == HardState() and img.meta.index == 0
    write_sync(w, ENTRIES, ents(1, 10), 10)
    write_sync(w, HARD_STATE, HardState(3, 2, 7))
    w.close()
    w, img = open_wal(tmp_path)
    assert [e.index for e in img.entries] == list(range(1, 11))
    assert img.entries == ents(1, 10)
    assert img.hard_state == HardState(3, 2, 7)
    assert img.last_seq == 2
    # seqs continue after a reopen
    assert write_sync(w, HARD_STATE, HardState(3, 2, 8)) == 3
    w.close()


def test_conflicting_suffix_is_replaced(tmp_path):
    w, _ = open_wal(tmp_path)
    write_sync(w, ENTRIES, ents(1, 8, term=1), 8)
    write_sync(w, ENTRIES, ents(5, 6, term=2), 6)  # a new leader overwrote 5.. with term 2
    w.close()
    _, img = open_wal(tmp_path)
    assert img.entries == ents(1, 4, term=1) + ents(5, 6, term=2)


def test_many_appends_and_overwrites_replay_like_the_model(tmp_path):
    """Hundreds of records, each appending after the last entry or overwriting a suffix from
    an index inside the run (a new leader's entries), replay to what a plain list model holds:
    the replay extends its run in place, and must still replace exactly the suffix."""
    rng = random.Random(7)
    w, _ = open_wal(tmp_path)
    model, term = [], 1
    for _ in range(600):
        if model and rng.random() < 0.15:
            term += 1
            first = rng.randint(max(1, len(model) - 20), len(model))  # a conflicting suffix
        else:
            first = len(model) + 1
        batch = ents(first, first + rng.randint(0, 3), term=term)
        del model[first - 1:]
        model.extend(batch)
        w.append(ENTRIES, batch, max_index=batch[-1].index)
    write_sync(w, HARD_STATE, HardState(term, 1, len(model)))
    w.close()
    _, img = open_wal(tmp_path)
    assert img.entries == model
    assert img.last_seq == 601


def test_compact_and_install(tmp_path):
    w, _ = open_wal(tmp_path)
    write_sync(w, ENTRIES, ents(1, 20), 20)
    write_sync(w, COMPACT, meta(12))
    w.close()
    w, img = open_wal(tmp_path)
    assert img.meta == meta(12)
    assert [e.index for e in img.entries] == list(range(13, 21))
    write_sync(w, INSTALL, meta(100, 4))  # a leader's snapshot: everything before is gone
    write_sync(w, ENTRIES, ents(101, 102, term=4), 102)
    w.close()
    _, img = open_wal(tmp_path)
    assert img.meta == meta(100, 4)
    assert img.entries == ents(101, 102, term=4)


def test_rotation_and_release(tmp_path):
    w, _ = open_wal(tmp_path, segment_bytes=4096)
    for lo in range(1, 400, 10):
        write_sync(w, ENTRIES, ents(lo, lo + 9), lo + 9)
        write_sync(w, HARD_STATE, HardState(1, 1, lo + 9))
    assert len(segments(tmp_path)) >= 4
    before = len(segments(tmp_path))
    write_sync(w, COMPACT, meta(350))
    after = segments(tmp_path)
    assert len(after) < before  # segments holding only entries <= 350 are gone
    w.close()
    w, img = open_wal(tmp_path, segment_bytes=4096)
    assert img.meta == meta(350)
    assert [e.index for e in img.entries] == list(range(351, 401))
    assert img.hard_state == HardState(1, 1, 400)
    # the log keeps growing after a reopen and survives another reopen
    write_sync(w, ENTRIES, ents(401, 420), 420)
    w.close()
    _, img = open_wal(tmp_path, segment_bytes=4096)
    assert img.entries[-1].index == 420 and img.entries[0].index == 351


def _last_segment(path):
    return os.path.join(path, "wal", segments(path)[-1])


def _end_of_records(path):
    w, _ = open_wal(path)
    end = w._offset
    w.close()
    return end


def _tear(path, end, damage):
    """After the records ending at byte end, what a crash during the next append's pwrite can
    leave in the preallocated (zero) segment: the write reached only some sectors."""
    record = wal_mod._record(ENTRIES, 3, encode_entries(ents(6, 60)))
    assert len(record) > 3 * wal_mod.SECTOR_BYTES
    sector = wal_mod.SECTOR_BYTES
    first = (end // sector + 1) * sector  # the first sector boundary inside the record
    seg = _last_segment(path)
    with open(seg, "r+b") as f:
        if damage == "first-sectors":  # the start of the record made it, the rest did not
            f.seek(end)
            f.write(record[:first + sector - end])
        elif damage == "later-sectors":  # a later sector made it, the header's did not
            f.seek(first + sector)
            f.write(record[first + sector - end:first + 2 * sector - end])
        elif damage == "middle-sector-missing":  # every sector but one in the middle
            f.seek(end)
            f.write(record[:first - end])
            f.seek(first + sector)
            f.write(record[first + sector - end:])
        elif damage == "header-only":  # a header straddling a boundary, its start written
            pass
        elif damage == "short-file":  # no preallocation: the file ends inside the record
            f.seek(end)
            f.write(record[:first + sector - end])
            f.truncate(first + sector)
    return record


@pytest.mark.parametrize("damage", ["first-sectors", "later-sectors", "middle-sector-missing",
                                    "short-file"])
def test_torn_tail_is_cut(tmp_path, damage):
    w, _ = open_wal(tmp_path)
    write_sync(w, ENTRIES, ents(1, 5), 5)
    write_sync(w, HARD_STATE, HardState(1, 1, 5))
    w.close()
    end = _end_of_records(tmp_path)
    _tear(tmp_path, end, damage)
    w, img = open_wal(tmp_path)
    assert img.entries == ents(1, 5)  # the torn append is gone, the rest intact
    write_sync(w, ENTRIES, ents(6, 7), 7)  # and the log goes on from there
    w.close()
    _, img = open_wal(tmp_path)
    assert img.entries == ents(1, 7)


@pytest.mark.parametrize("damage", ["garbage", "bit-flip"])
def test_damage_no_torn_write_explains_in_the_last_record_is_refused(tmp_path, damage):
    """After the last acknowledged record, a torn write leaves zero sectors, never other
    bytes: a record there whose bytes are all written but wrong, or a flipped bit in a record
    whose sectors were all written, is damage to synced data, and the WAL refuses to open
    (cutting there could lose an acknowledged append). (A length that runs past the end of the
    file is taken for a torn write, as etcd takes an unexpected EOF.)"""
    w, _ = open_wal(tmp_path)
    write_sync(w, ENTRIES, ents(1, 5), 5)
    w.close()
    end = _end_of_records(tmp_path)
    with open(_last_segment(tmp_path), "r+b") as f:
        if damage == "garbage":  # a header with a length that fits, then other bytes
            f.seek(end)
            f.write((200).to_bytes(4, "little") + bytes(range(1, 201)))
        else:
            f.seek(end - 10)
            byte = f.read(1)
            f.seek(end - 10)
            f.write(bytes([byte[0] ^ 0x04]))
    with pytest.raises(WalCorruptError):
        open_wal(tmp_path)


def test_damage_in_an_older_segment_refuses_to_open(tmp_path):
    fill_small_segments(tmp_path)
    first = os.path.join(tmp_path, "wal", segments(tmp_path)[0])
    data = bytearray(open(first, "rb").read())
    data[300] ^= 0x40
    open(first, "wb").write(bytes(data))
    with pytest.raises(WalCorruptError) as info:
        open_wal(tmp_path, segment_bytes=4096)
    assert "refuses to start" in str(info.value) and segments(tmp_path)[0] in str(info.value)


def test_bit_flip_before_later_records_of_the_last_segment_is_refused(tmp_path):
    """TESTING.md: a flipped WAL gives a detected error (or a truncation to the last good
    record), never silently wrong data. A record followed by later appends was synced and
    acknowledged: cutting the log there lost acknowledged entries, and the member then took
    new writes at indexes its store had already applied (found by hand)."""
    w, _ = open_wal(tmp_path)
    for lo in range(1, 50, 10):
        write_sync(w, ENTRIES, ents(lo, lo + 9), lo + 9)
    w.close()
    path = _last_segment(tmp_path)
    data = bytearray(open(path, "rb").read())
    end = _end_of_records(tmp_path)
    data[end // 3] ^= 0x01  # inside an early record
    open(path, "wb").write(bytes(data))
    with pytest.raises(WalCorruptError) as info:
        open_wal(tmp_path)
    assert "CRC32C mismatch" in str(info.value) and "refuses to start" in str(info.value)


def test_missing_segment_is_corruption(tmp_path):
    fill_small_segments(tmp_path)
    names = segments(tmp_path)
    assert len(names) >= 3
    os.unlink(os.path.join(tmp_path, "wal", names[1]))
    with pytest.raises(WalCorruptError, match="missing"):
        open_wal(tmp_path, segment_bytes=4096)


def test_a_last_segment_cut_inside_its_header_is_a_torn_tail(tmp_path):
    """A newest segment that ends inside its first record header (a crash while it was made,
    on a file system without preallocation) is a torn tail like any other: it was a traceback
    (UnboundLocalError) that kept the member from starting, with no word of what was wrong."""
    fill_small_segments(tmp_path)
    last = _last_segment(tmp_path)
    os.truncate(last, wal_mod._HEAD_BYTES - 4)
    w, img = open_wal(tmp_path, segment_bytes=4096)
    assert img.entries[-1].index < 200 and img.entries[0].index == 1
    w.close()


def test_a_newest_segment_without_its_header_gets_one_at_the_first_write(tmp_path):
    """Every segment begins with the compaction point and the hard state: once the older
    segments are deleted, the replay starts there. A newest segment with no records (a crash
    right after it was created, or a torn tail cut at its byte 0) got none, and the appends
    went on without them: after the next compaction deleted the older segments, the member's
    term and vote were gone (a second vote in a term it had voted in)."""
    w, _ = open_wal(tmp_path, segment_bytes=4096)
    for lo in range(1, 100, 10):
        write_sync(w, ENTRIES, ents(lo, lo + 9, term=3), lo + 9)
    write_sync(w, HARD_STATE, HardState(3, 2, 100))
    w.close()
    number = int(segments(tmp_path)[-1][:-len(SUFFIX)], 16) + 1
    with open(os.path.join(tmp_path, "wal", f"{number:016x}{SUFFIX}"), "wb") as f:
        f.write(bytes(4096))  # created and preallocated, its header never written
    w, img = open_wal(tmp_path, segment_bytes=4096)
    assert img.hard_state == HardState(3, 2, 100)
    write_sync(w, ENTRIES, ents(101, 102, term=3), 102)
    write_sync(w, COMPACT, meta(101, term=3))  # every older segment is deleted
    assert len(segments(tmp_path)) == 1
    w.close()
    _, img = open_wal(tmp_path, segment_bytes=4096)
    assert img.hard_state == HardState(3, 2, 100)
    assert img.meta == meta(101, term=3) and [e.index for e in img.entries] == [102]


def test_a_torn_tail_is_left_as_it_was_until_the_first_write(tmp_path):
    """The replay cuts a torn tail in memory; the file is repaired by the first write, so that
    a start refused after the replay leaves the files as they were."""
    w, _ = open_wal(tmp_path)
    write_sync(w, ENTRIES, ents(1, 5), 5)
    w.close()
    end = _end_of_records(tmp_path)
    _tear(tmp_path, end, "first-sectors")
    with open(_last_segment(tmp_path), "rb") as f:
        torn = f.read()
    w, img = open_wal(tmp_path)
    w.close()
    assert img.entries == ents(1, 5)
    with open(_last_segment(tmp_path), "rb") as f:
        assert f.read() == torn
    w, _ = open_wal(tmp_path)
    write_sync(w, HARD_STATE, HardState(1, 1, 5))
    w.close()
    with open(_last_segment(tmp_path), "rb") as f:
        data = f.read()
    assert data[:end] == torn[:end] and data.rstrip(b"\0") != torn.rstrip(b"\0")
    _, img = open_wal(tmp_path)
    assert img.entries == ents(1, 5) and img.hard_state == HardState(1, 1, 5)


@pytest.mark.parametrize("later,why", [(HardState(2, 1, 5), "term 2 after term 3"),
                                       (HardState(3, 2, 5), "vote 2 after vote 1 in term 3")])
def test_a_hard_state_that_goes_back_is_refused(tmp_path, later, why):
    """Raft §5.2: a term never goes back and a vote stands for its term. A HARD_STATE record
    that says otherwise has a good CRC (no torn write made it): the member started from it and
    could vote a second time in a term."""
    w, _ = open_wal(tmp_path)
    write_sync(w, ENTRIES, ents(1, 5), 5)
    write_sync(w, HARD_STATE, HardState(3, 1, 5))
    write_sync(w, HARD_STATE, later)
    w.close()
    with pytest.raises(WalCorruptError) as info:
        open_wal(tmp_path)
    assert why in str(info.value) and "refuses to start" in str(info.value)


def test_a_commit_index_beyond_the_log_is_refused(tmp_path):
    """Entries a hard state counts as committed are written before it: a commit index past
    the log's end means entries are missing (it was a ValueError traceback from the Raft core,
    after the start had recorded its PID)."""
    w, _ = open_wal(tmp_path)
    write_sync(w, ENTRIES, ents(1, 5), 5)
    write_sync(w, HARD_STATE, HardState(1, 1, 9))
    w.close()
    with pytest.raises(WalCorruptError, match="commit index 9 is beyond the log's last entry 5"):
        open_wal(tmp_path)


def test_wallog_storage_interface(tmp_path):
    w, img = open_wal(tmp_path)
    st = WalLog(w, img, CONF)
    assert st.first_index() == 1 and st.last_index() == 0
    fut = st.save(ents(1, 10), HardState(2, 1, 3), None)
    assert fut is None
    assert st.last_index() == 10 and st.term(10) == 1
    st.save(ents(8, 9, term=2), None, None)
    assert st.last_index() == 9 and st.term(9) == 2
    assert st.compact_to(meta(5)) is True
    assert st.first_index() == 6 and st.snapshot().metadata == meta(5)
    with pytest.raises(CompactedError):
        st.entries(4, 6)
    assert st.compact_to(meta(4)) is False  # already past it
    w.wait_synced(st.last_seq())
    w.close()
    w, img = open_wal(tmp_path)
    st2 = WalLog(w, img, CONF)
    assert st2.first_index() == 6 and st2.last_index() == 9 and st2.term(9) == 2
    assert st2.initial_state() == (HardState(2, 1, 3), CONF)
    assert st2.entries(6, 10) == ents(6, 7) + ents(8, 9, term=2)
    w.close()


def test_async_futures_resolve_after_sync(tmp_path):
    import asyncio

    async def main():
        w, img = open_wal(tmp_path)
        st = WalLog(w, img, CONF)
        fut = st.save(ents(1, 3), HardState(1, 1, 0), asyncio.get_running_loop())
        await asyncio.wait_for(fut, 5)
        assert w.synced_seq >= st.last_seq()
        w.close()
    asyncio.run(main())


CHILD = r'''
import sys
from raftkv.raft.types import Entry, EntryType, HardState, SnapshotMetadata, ConfState
from raftkv.storage.wal import WAL, ENTRIES, HARD_STATE, COMPACT
w = WAL(sys.argv[1], segment_bytes=64 * 1024)
img = w.open()
last = img.entries[-1].index if img.entries else img.meta.index
while True:
    n = 1 + (last % 7)
    batch = [Entry(1, i, EntryType.NORMAL, b"%d" % i * 20) for i in range(last + 1, last + n + 1)]
    w.append(ENTRIES, batch, max_index=batch[-1].index)
    seq, _ = w.append(HARD_STATE, HardState(1, 1, batch[-1].index))
    if batch[-1].index // 500 != last // 500 and last > 1000:
        w.append(COMPACT, SnapshotMetadata(ConfState([1]), last - 1000, 1))
    w.wait_synced(seq)
    last = batch[-1].index
    print("ACK", last, flush=True)
'''


def test_sigkill_loop_keeps_every_acknowledged_entry(tmp_path):
    rng = random.Random(int(os.environ.get("RAFTKV_CRASH_SEED", "1")))
    acked = 0
    deadline = time.monotonic() + 20
    kills = 0
    while kills < 12 and (kills < 5 or time.monotonic() < deadline):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()
            assert first.startswith("ACK"), proc.stderr.read()
            time.sleep(rng.uniform(0.01, 0.3))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=10)
        lines = [first] + out.split("\n")[:-1]  # whole lines only: the kill may cut the last
        acks = [int(x.split()[1]) for x in lines if x.startswith("ACK ")]
        acked = max([acked] + acks)
        kills += 1
        w, img = open_wal(tmp_path, segment_bytes=64 * 1024)
        w.close()
        last = img.entries[-1].index
        assert last >= acked, f"acknowledged {acked}, log ends at {last} (kill {kills})"
        for e in img.entries:
            assert e.data == b"%d" % e.index * 20
        assert img.entries[0].index == img.meta.index + 1
        assert img.hard_state.commit <= last
    assert acked > 100


def test_write_now_writes_after_what_is_queued(tmp_path):
    w, _ = open_wal(tmp_path)
    w.append(ENTRIES, ents(1, 3), max_index=3)  # queued, maybe not written yet
    w.append(HARD_STATE, HardState(1, 1, 2))
    seq = w.write_now([(ENTRIES, ents(4, 5), 5), (HARD_STATE, HardState(1, 1, 5), 0)])
    assert w.synced_seq >= seq == 4
    w.close()
    _, img = open_wal(tmp_path)
    assert img.entries == ents(1, 5) and img.hard_state == HardState(1, 1, 5)
