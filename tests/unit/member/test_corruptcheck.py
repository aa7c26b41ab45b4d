"""The corruption check's verdict, the replicated CORRUPT alarm in the store, and the flag."""
import pytest

from raftkv.errors import RaftkvError
from raftkv.server.config import ConfigError, load_config
from raftkv.server.corruptcheck import verdict
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
