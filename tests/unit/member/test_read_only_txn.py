"""A read-only txn (no put or delete anywhere, as etcd's isTxnReadonly) is a linearizable read:
refused for want of a leader (NO_LEADER before it was proposed, LEADER_CHANGED after), the
Service sends it again until --request-timeout has passed since it arrived, then answers
TIMEOUT (`etcdserver: request timed out`, etcd 3.4.23's answer). A txn that writes is not
retried here (its refusal reaches the client at once, as before)."""
import asyncio
import time

import pytest

from raftkv.errors import RaftkvError
from raftkv.mvcc import txncheck
from raftkv.server.leaderless import LEADER_POLL_S
from raftkv.server.service import Service

GET = {"request_range": {"key": b"k"}}
PUT = {"request_put": {"key": b"k", "value": b"v"}}
DELETE = {"request_delete_range": {"key": b"k"}}


def test_read_only_looks_into_both_branches_and_nested_txns():
    assert txncheck.read_only({"compare": [], "success": [GET], "failure": []})
    assert txncheck.read_only({})
    assert txncheck.read_only({"success": [{"request_txn": {"failure": [GET]}}]})
    assert not txncheck.read_only({"success": [GET], "failure": [PUT]})
    assert not txncheck.read_only({"success": [DELETE]})
    assert not txncheck.read_only({"success": [{"request_txn": {"failure": [GET, DELETE]}}]})


class Refusing:
    """A Service's _write that refuses the first `refusals` calls with `code`."""

    def __init__(self, refusals, code="NO_LEADER", timeout_s=3.0):
        self.timeout_s = timeout_s
        self.refusals, self.code = refusals, code
        self.bodies = []
        self.timeouts = []

    async def _write(self, op, body, timeout_s=None):
        assert op == "txn"
        body.pop("request_id", None)
        self.bodies.append(body)
        self.timeouts.append(timeout_s)
        if len(self.bodies) <= self.refusals:
            raise RaftkvError(self.code)
        return {"succeeded": True, "responses": [], "header": {}}


def _txn(fake, body):
    return asyncio.run(Service._txn(fake, body))


@pytest.mark.parametrize("code", ["NO_LEADER", "LEADER_CHANGED"])
def test_a_read_only_txn_refused_for_want_of_a_leader_is_sent_again(code):
    fake = Refusing(2, code)
    body = {"success": [GET], "request_id": [1, 2], "user": ""}
    assert _txn(fake, body)["succeeded"]
    assert len(fake.bodies) == 3
    assert fake.bodies[1] == fake.bodies[2] == {"success": [GET], "user": ""}
    assert fake.bodies[1] is not fake.bodies[2]  # a fresh body each time
    assert fake.timeouts[0] is None  # the first: the member's own timeout
    assert all(0 < t <= fake.timeout_s for t in fake.timeouts[1:])  # then what is left


def test_a_txn_that_writes_is_not_sent_again():
    fake = Refusing(1)
    with pytest.raises(RaftkvError) as exc:
        _txn(fake, {"success": [GET], "failure": [PUT]})
    assert exc.value.code == "NO_LEADER" and len(fake.bodies) == 1


def test_other_errors_are_not_retried():
    fake = Refusing(1, "TIMEOUT")
    with pytest.raises(RaftkvError) as exc:
        _txn(fake, {"success": [GET]})
    assert exc.value.code == "TIMEOUT" and len(fake.bodies) == 1


def test_without_a_leader_until_the_request_timeout_it_times_out():
    fake = Refusing(10 ** 6, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(RaftkvError) as exc:
        _txn(fake, {"success": [GET]})
    took = time.monotonic() - started
    assert exc.value.code == "TIMEOUT" and str(exc.value) == "etcdserver: request timed out"
    assert fake.timeout_s - LEADER_POLL_S <= took < fake.timeout_s + 0.3, took
    assert len(fake.bodies) >= 3
