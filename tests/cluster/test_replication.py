"""Acceptance 1: writes through any member are readable from every member, and a
linearizable read after a write (through another member) always sees it."""
from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_writes_through_any_member_readable_everywhere(shared_cluster3):
    h = shared_cluster3
    per_member = [h.client([m]) for m in h.members]
    for i, writer in enumerate(per_member):
        writer.put(f"/any/{i}", f"from-m{i + 1}")
    for reader in per_member:
        got = {k.key: v for v, k in reader.get_prefix("/any/")}
        assert got == {f"/any/{i}".encode(): f"from-m{i + 1}".encode() for i in range(3)}
    # Serializable (local) reads converge too: every member applies the writes shortly.
    deadline = time.monotonic() + 5.0
    for reader in per_member:
        while reader.get("/any/2", serializable=True)[0] != b"from-m3":
            assert time.monotonic() < deadline, "a member never applied the write"
            time.sleep(0.02)


def test_linearizable_read_after_write_through_another_member(shared_cluster3):
    h = shared_cluster3
    per_member = [h.client([m]) for m in h.members]
    n = len(per_member)
    for i in range(150):
        writer = per_member[i % n]
        reader = per_member[(i + 1 + i // n) % n]
        if reader is writer:
            reader = per_member[(i + 1) % n]
        writer.put("/lin/key", f"v{i}")
        value, _ = reader.get("/lin/key")
        assert value == f"v{i}".encode(), f"iteration {i}: stale read {value!r}"


def test_deletes_replicate(shared_cluster3):
    h = shared_cluster3
    a, b, c = (h.client([m]) for m in h.members)
    a.put("/del/x", "1")
    assert b.get("/del/x")[0] == b"1"
    assert c.delete("/del/x") is True
    assert a.get("/del/x") == (None, None)
    assert b.get("/del/x") == (None, None)


def test_put_many_replicates_with_per_item_errors(shared_cluster3):
    """put_many: every pair a put at its own revision on every member; an empty key and a
    value over --max-request-bytes fail alone."""
    h = shared_cluster3
    client = h.client()
    client.put("/bulk/k0001", "old")
    before = client.get("/bulk/k0001")[1]
    items = [(f"/bulk/k{i:04d}", f"v{i}") for i in range(2500)]
    items.insert(10, ("", "empty key"))
    items.insert(20, ("/bulk/huge", b"x" * (1536 * 1024)))
    res = client.put_many(items, batch_max=1000)
    assert (res.done, res.failed) == (2500, 2), res
    assert any("key is not provided" in e for e in res.errors)
    assert any("too large" in e for e in res.errors)
    want = [(f"/bulk/k{i:04d}".encode(), f"v{i}".encode()) for i in range(2500)]
    per_member = [h.client([m]) for m in h.members]
    for reader in per_member:
        kvs = reader.get_prefix("/bulk/", sort_order="ascend")
        assert [(m.key, v) for v, m in kvs] == want
        metas = {m.key: m for _, m in kvs}
        k1 = metas[b"/bulk/k0001"]
        assert (k1.version, k1.create_revision) == (2, before.create_revision)
        revs = sorted(m.mod_revision for m in metas.values())
        assert len(set(revs)) == 2500  # one revision per put


def test_a_serializable_read_sees_the_members_own_acknowledged_writes(shared_cluster3):
    """Read your writes on one member, as in etcd: a serializable get right after a put
    acknowledged by the same member (leader or follower) returns it. Acknowledgements leave
    before the store's LMDB round commits, so the read waits for that commit; before, 296 of
    300 such reads on the leader returned the old value."""
    h = shared_cluster3
    for m in h.members:
        c = h.client([m])
        for i in range(60):
            c.put("/ryw/key", f"{m.name}-{i}")
            value, _ = c.get("/ryw/key", serializable=True)
            assert value == f"{m.name}-{i}".encode(), f"{m.name}, put {i}: read {value!r}"
