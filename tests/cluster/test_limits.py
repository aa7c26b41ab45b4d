"""etcd's --max-txn-ops on a member: checked before proposing, as etcd's gRPC layer does, so
members started with different values still apply every entry alike."""
from __future__ import annotations

import pytest

from raftkv.api import wire

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def _puts(n):
    return {"success": [{"request_put": {"key": b"/lim/%d" % i, "value": b"v"}}
                        for i in range(n)]}


def test_max_txn_ops(make_cluster):
    h = make_cluster(1, extra_args=["--max-txn-ops", "3"])
    c = h.client()
    assert c.call("txn", _puts(3))["succeeded"]
    with pytest.raises(wire.RaftkvError) as info:
        c.call("txn", _puts(4))
    assert info.value.code == "TOO_MANY_OPS"
    with pytest.raises(wire.RaftkvError):  # nested transactions count too
        c.call("txn", {"success": [{"request_txn": _puts(4)}]})
    h2 = make_cluster(1)  # etcd's default, 128
    c2 = h2.client()
    assert c2.call("txn", _puts(128))["succeeded"]
    with pytest.raises(wire.RaftkvError) as info:
        c2.call("txn", _puts(129))
    assert info.value.code == "TOO_MANY_OPS"
