"""member_publish: a member's name, client URLs and (raftkv's own, optional) native URLs in its
stored record, and what member_list answers; records and publishes of an earlier raftkv (no
native URLs) still load and apply."""
import types

import msgpack

from raftkv.server.config import load_config
from raftkv.server.member import MEMBER_KEY_PREFIX, Member
from raftkv.server.service import Service


def _member(data_dir, *flags):
    m = Member(load_config(["--name", "m1", "--data-dir", str(data_dir), *flags], environ={}))
    m.open_storage()
    return m


def _publish(m, body):
    m.committer.run_sync(lambda txn: m._op_member_publish(types.SimpleNamespace(txn=txn),
                                                          dict(body, ID=m.id)))


def _listed(m):
    """The member_list answer's members (Service._member_dicts over this member's table)."""
    return Service._member_dicts(types.SimpleNamespace(m=m))


_EARLIER = {"name": "m1", "peer_urls": ["http://127.0.0.1:2380"],
            "client_urls": ["http://127.0.0.1:2379"], "is_learner": False}  # no native_urls


def _member_with_record(data_dir, rec):
    """A member whose data dir holds rec as its own member record (as an earlier raftkv
    stored it), reopened so that the table is loaded from the store."""
    m = _member(data_dir)
    try:
        key = MEMBER_KEY_PREFIX + m.id.to_bytes(8, "big")
        m.committer.run_sync(lambda txn: txn.put(key, msgpack.packb(rec),
                                                 db=m.engine.db("kvmeta")))
    finally:
        m.close_storage()
    return _member(data_dir)


def test_a_record_of_an_earlier_raftkv_loads_without_native_urls(tmp_path):
    m = _member_with_record(tmp_path / "d", _EARLIER)
    try:
        assert _listed(m) == [{"ID": m.id, "name": "m1", "peerURLs": ["http://127.0.0.1:2380"],
                               "clientURLs": ["http://127.0.0.1:2379"], "isLearner": False,
                               "nativeURLs": []}]
    finally:
        m.close_storage()


def test_native_urls_are_stored_and_listed_and_an_earlier_publish_clears_them(tmp_path):
    m = _member_with_record(tmp_path / "d", _EARLIER)
    try:
        _publish(m, {"name": "m1", "clientURLs": ["http://c:1"], "nativeURLs": ["http://n:2"]})
    finally:
        m.close_storage()
    m = _member(tmp_path / "d")
    try:
        (listed,) = _listed(m)
        assert listed["clientURLs"] == ["http://c:1"] and listed["nativeURLs"] == ["http://n:2"]
        assert listed["peerURLs"] == ["http://127.0.0.1:2380"]
        # an earlier raftkv's publish has no nativeURLs: its native port is unknown now
        _publish(m, {"name": "m1", "clientURLs": ["http://c:3"]})
        (listed,) = _listed(m)
        assert listed["clientURLs"] == ["http://c:3"] and listed["nativeURLs"] == []
        assert "native_urls" not in m.members[m.id]
    finally:
        m.close_storage()


def test_advertise_native_urls_defaults_to_the_listen_urls(tmp_path):
    def cfg(*flags):
        return load_config(["--name", "m1", "--data-dir", str(tmp_path), *flags], environ={})
    assert cfg("--listen-native-urls", "http://127.0.0.1:7").advertise_native_urls == \
        "http://127.0.0.1:7"
    assert cfg("--listen-native-urls", "http://0.0.0.0:7", "--advertise-native-urls",
               "http://h1:7,unix:///s").advertise_native_urls == "http://h1:7,unix:///s"
