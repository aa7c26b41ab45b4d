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
