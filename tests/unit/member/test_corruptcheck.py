"""The corruption checks' verdicts (periodic and initial), the initial check against fake
peers, the replicated CORRUPT alarm in the store, and the flags."""
import asyncio
import logging
import types

import pytest

from raftkv.errors import RaftkvError
from raftkv.raft import ConfState
from raftkv.server import corruptcheck
from raftkv.server.config import ConfigError, load_config
from raftkv.server.corruptcheck import InitialCheckError, initial_verdict, verdict
from raftkv.storage.gate import StoreGate
from tests.unit.mvcc.helpers import Harness


@pytest.mark.parametrize("hashes,bad", [
    ({1: 7, 2: 7, 3: 7}, []),
    ({1: 7, 2: 7, 3: 9}, [3]),
    ({1: 9, 2: 7, 3: 7}, [1]),  # the leader's own copy differs
    ({1: 7, 2: 8, 3: 9}, [1]),  # no majority: the leader is named
    ({1: 7, 2: 9}, [1]),
    ({1: 7}, []),  # nothing to compare with
    ({1: 7, 2: 7, 3: 7, 4: 7, 5: 1}, [5]),
])
def test_verdict(hashes, bad):
    assert verdict(hashes, leader_id=1) == bad


def test_the_corrupt_alarm_stops_writes_until_disarmed(tmp_path):
    h = Harness(tmp_path / "d")
    h.put(b"k", b"v")
    h.one("alarm_set", {"on": True, "alarm": 2, "memberID": 0xABC})
    for op, body in [("put", {"key": b"k", "value": b"w"}), ("delete_range", {"key": b"k"}),
                     ("lease_grant", {"TTL": 10}), ("compact", {"revision": 1})]:
        with pytest.raises(RaftkvError) as info:
            h.one(op, body)
        assert info.value.code == "CORRUPT"
    assert h.get(b"k")["kvs"][0]["value"] == b"v"  # reads go on
    store = h.reopen()  # the alarm is durable
    assert store.corrupt and store.corrupt_member == 0xABC and not store.alarm
    h.one("alarm_set", {"on": False, "alarm": 2})
    h.put(b"k", b"w")
    with pytest.raises(RaftkvError):
        h.one("alarm_set", {"on": True, "alarm": 7})
    h.close()


def test_flag():
    cfg = load_config(["--name", "m1"], environ={})
    assert cfg.corrupt_check_s == 0
    cfg = load_config(["--name", "m1", "--experimental-corrupt-check-time", "2m"], environ={})
    assert cfg.corrupt_check_s == 120
    with pytest.raises(ConfigError, match="--experimental-corrupt-check-time"):
        load_config(["--name", "m1", "--experimental-corrupt-check-time", "often"], environ={})


REV, OWN, COMPACT = 40, 0xAAAA, 10


def _ok(h, compact=COMPACT):
    return {"hash": h, "compact_revision": compact, "header": {"revision": 41}}


@pytest.mark.parametrize("answers,mismatched,skipped", [
    ({2: _ok(OWN), 3: _ok(OWN)}, [], {}),
    ({2: _ok(OWN), 3: _ok(0xBBBB)}, [3], {}),
    ({2: _ok(0xBBBB), 3: _ok(0xCCCC)}, [2, 3], {}),  # every peer differs: named, all of them
    ({2: _ok(0xBBBB, compact=20), 3: _ok(OWN)}, [], {2: "compacted to revision 20"}),
    ({2: _ok(OWN, compact=20)}, [], {}),  # equal hashes agree whatever the compaction (etcd)
    ({2: RaftkvError("COMPACTED"), 3: _ok(OWN)}, [], {2: "compacted past revision 40"}),
    ({2: RaftkvError("FUTURE_REV")}, [], {2: "not applied revision 40"}),
    ({2: RaftkvError("TIMEOUT"), 3: ConnectionRefusedError()}, [],
     {2: "unreachable", 3: "unreachable"}),
    ({2: RaftkvError("UNKNOWN_OP")}, [], {2: "an older raftkv"}),
    ({}, [], {}),  # a single-member cluster: nothing to compare with
])
def test_initial_verdict(answers, mismatched, skipped):
    bad, why = initial_verdict(REV, OWN, COMPACT, answers)
    assert bad == mismatched
    assert sorted(why) == sorted(skipped)
    for mid, text in skipped.items():
        assert text in why[mid]


class _FakeTransport:
    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    async def forward(self, mid, op, body, timeout_s):
        self.asked.append((mid, op, body))
        ans = self.answers[mid]
        if isinstance(ans, BaseException):
            raise ans
        return ans


def _fake_member(answers, applied=7):
    kv = types.SimpleNamespace(applied_index=applied, current_revision=REV,
                               engine=types.SimpleNamespace(gate=StoreGate()))
    return types.SimpleNamespace(
        kv=kv, id=1, conf=ConfState(voters=[1, 2, 3], learners=[4]),
        members={1: {"name": "m1"}, 2: {"name": "m2"}, 3: {"name": "m3"}, 4: {}},
        transport=_FakeTransport(answers))


@pytest.fixture
def own_hash(monkeypatch):
    def fake_hash(kv, rev):
        assert rev == REV
        return OWN, REV, COMPACT
    monkeypatch.setattr(corruptcheck.mvcc_snapshot, "etcd_hash_kv", fake_hash)


def test_check_initial_names_the_mismatching_peer(own_hash, caplog):
    m = _fake_member({2: _ok(OWN), 3: _ok(0xBBBB), 4: RaftkvError("TIMEOUT")})
    with pytest.raises(InitialCheckError) as info:
        asyncio.run(corruptcheck.check_initial(m, timeout_s=1.0))
    text = str(info.value)
    assert "differs from that of member(s) m3 (3)" in text and "revision 40" in text
    assert "m2" not in text
    assert sorted(mid for mid, _, _ in m.transport.asked) == [2, 3, 4]  # learners too
    assert all(op == "hash_kv" and body == {"revision": REV} for _, op, body in
               m.transport.asked)
    assert "member 4 not compared: unreachable" in caplog.text


def test_check_initial_passes_when_peers_agree_or_cannot_answer(own_hash, caplog):
    caplog.set_level(logging.INFO, "raftkv.corruptcheck")
    m = _fake_member({2: _ok(OWN), 3: RaftkvError("FUTURE_REV"), 4: _ok(OWN)})
    asyncio.run(corruptcheck.check_initial(m, timeout_s=1.0))
    assert "passed at revision 40: 2 peer(s) agree, 1 not compared" in caplog.text
    assert "m3 (3) not compared: behind" in caplog.text


def test_check_initial_skips_an_empty_store(own_hash):
    m = _fake_member({}, applied=0)
    asyncio.run(corruptcheck.check_initial(m, timeout_s=1.0))
    assert m.transport.asked == []


def test_initial_check_flag():
    assert not load_config(["--name", "m1"], environ={}).experimental_initial_corrupt_check
    cfg = load_config(["--name", "m1", "--experimental-initial-corrupt-check"], environ={})
    assert cfg.experimental_initial_corrupt_check
    env = {"RAFTKV_EXPERIMENTAL_INITIAL_CORRUPT_CHECK": "true"}
    assert load_config(["--name", "m1"], environ=env).experimental_initial_corrupt_check
    with pytest.raises(ConfigError, match="--experimental-initial-corrupt-check"):
        load_config(["--name", "m1", "--experimental-initial-corrupt-check", "maybe"],
                    environ={})
