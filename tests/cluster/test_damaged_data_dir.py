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
import os

import pytest

from raftkv.storage import wal as wal_mod

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


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


def _refused(h, m, *words):
    seen = len(h.log_text(m))
    h.cluster.start_member(m)
    assert m.proc.wait(timeout=60) == 2
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
    _refused(h, m, "member-identity.json is damaged")
