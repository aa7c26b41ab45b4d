"""A native watch from a compacted revision ends with etcd 3.4's answer: canceled, the
compact revision, and a header without a store revision (etcd 3.4.23's gRPC WatchResponse
has cluster_id, member_id and raft_term there and revision 0; raftkv's gRPC front end passes
the native answer on, and raftkvctl prints it as it comes)."""
from __future__ import annotations

import pytest

from raftkv.client.errors import RevisionCompactedError

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_compacted_watch_answer_has_no_store_revision(make_cluster):
    h = make_cluster(1)
    c = h.client(timeout=10.0)
    for i in range(4):
        c.put("k", f"v{i}")
    current = c.get_response("k")["header"]["revision"]
    c.compact(current)
    events, cancel = c.watch("k", start_revision=2)
    try:
        with pytest.raises(RevisionCompactedError) as caught:
            next(iter(events))
    finally:
        cancel()
    err = caught.value
    assert err.compacted_revision == current
    assert err.header.get("revision") == 0, err.header
    assert err.header["member_id"] == h.status(h.members[0])["header"]["member_id"]
    assert err.header["cluster_id"] and err.header["raft_term"]
