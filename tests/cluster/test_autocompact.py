"""etcd's auto-compaction on a real 3-member cluster: with --auto-compaction-retention 2s
(periodic), the leader keeps compacting the history to what is about 2 s old, through the log,
so every member agrees; old revisions become COMPACTED while the latest data stays."""
from __future__ import annotations

import time

import pytest

from raftkv.api import wire

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_periodic_auto_compaction(make_cluster):
    h = make_cluster(3, extra_args=["--auto-compaction-retention", "2s"])
    c = h.client(timeout=10.0)
    revs = []  # (time, revision of that put)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 7.0:
        c.put("/ac/k", str(len(revs)))
        revs.append((time.monotonic(), c.get("/ac/k")[1].mod_revision))
        time.sleep(0.05)
    leader = h.leader()
    status = h.status(leader)
    compacted = h.client([leader]).call("range", {"key": b"/ac/k", "count_only": True})
    # Compacted, and only what is at least ~2 s old (the newest 2 s of history stay readable).
    first = revs[0][1]
    with pytest.raises(wire.RaftkvError) as info:
        c.get("/ac/k", revision=first)
    assert info.value.code == "COMPACTED"
    recent = [r for t, r in revs if time.monotonic() - t < 1.0]
    assert c.get("/ac/k", revision=recent[0])[0] is not None
    assert c.get("/ac/k")[0] == str(len(revs) - 1).encode()
    assert status["header"]["revision"] >= revs[-1][1] and compacted["count"] == 1
    assert "auto-compaction (periodic" in h.log_text(leader)
