"""The native alarm op with action ACTIVATE raises the alarm through the log and answers with
it as the request named it, as etcd 3.4.23's Maintenance.Alarm does (checked over gRPC: one
AlarmMember, the request's memberID and alarm, whatever else is raised)."""
from __future__ import annotations

import pytest

from raftkv.api import wire

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

NOSPACE, CORRUPT = 1, 2
ACTIVATE, DEACTIVATE = 1, 2


def test_activate_raises_the_alarm_and_answers_it(make_cluster):
    h = make_cluster(1)
    c = h.client(timeout=10.0)
    me = h.status(h.members[0])["header"]["member_id"]
    resp = c.call("alarm", {"action": ACTIVATE, "memberID": me, "alarm": NOSPACE})
    assert resp["alarms"] == [{"memberID": me, "alarm": NOSPACE}]
    assert resp["header"]["member_id"] == me  # the native protocol keeps raftkv's header
    with pytest.raises(wire.RaftkvError) as refused:
        c.put("k", "v")
    assert refused.value.code == "NO_SPACE"
    resp = c.call("alarm", {"action": ACTIVATE, "memberID": 7, "alarm": CORRUPT})
    assert resp["alarms"] == [{"memberID": 7, "alarm": CORRUPT}]  # only the one it raised
    assert c.alarms() == [{"memberID": me, "alarm": NOSPACE}, {"memberID": 7, "alarm": CORRUPT}]
    # NONE: etcd 3.4.23 records even that; raftkv keeps only NOSPACE and CORRUPT
    assert c.call("alarm", {"action": ACTIVATE, "memberID": me, "alarm": 0})["alarms"] == []
    with pytest.raises(wire.RaftkvError) as bad:
        c.call("alarm", {"action": ACTIVATE, "memberID": "m1", "alarm": CORRUPT})
    assert bad.value.code == "BAD_REQUEST"
    assert len(c.disarm()) == 2
    assert c.alarms() == []
    c.put("k", "v")


def test_with_auth_on_only_root_raises_an_alarm(make_cluster):
    """Raising NOSPACE stops every write, so once auth is on ACTIVATE is root's (etcd 3.4.23
    takes it from any client, even one without a token); listing and disarming stay open, as
    in etcd."""
    from tests.cluster.test_auth import _client, _code, _setup
    h = make_cluster(1)
    anonymous = _setup(h)
    alice = _client(h, user="alice", password="alicepw")
    root = _client(h, user="root", password="rootpw")
    activate = {"action": ACTIVATE, "memberID": 7, "alarm": NOSPACE}
    assert _code(anonymous.call, "alarm", dict(activate)) == "USER_EMPTY"
    assert _code(alice.call, "alarm", dict(activate)) == "PERMISSION_DENIED"
    assert anonymous.alarms() == [] and alice.alarms() == []
    alice.put("/app/x", "1")  # nothing was raised
    assert root.call("alarm", dict(activate))["alarms"] == [{"memberID": 7, "alarm": NOSPACE}]
    assert _code(alice.put, "/app/x", "2") == "NO_SPACE"
    assert [a["alarm"] for a in anonymous.alarms()] == [NOSPACE]
    assert len(anonymous.disarm()) == 1  # DEACTIVATE needs no token, as in etcd
    alice.put("/app/x", "2")


def test_client_create_alarm_as_python_etcd3s(make_cluster):
    h = make_cluster(1)
    c = h.client(timeout=10.0)
    assert c.create_alarm() == [{"memberID": 0, "alarm": NOSPACE}]  # python-etcd3's default
    with pytest.raises(wire.RaftkvError) as refused:
        c.put("k", "v")
    assert refused.value.code == "NO_SPACE"
    assert [a["alarm"] for a in c.disarm()] == [NOSPACE]
    c.put("k", "v")
