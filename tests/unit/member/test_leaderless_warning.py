"""A member without a leader says so every NO_LEADER_WARN_S, with its Raft state and peer
links (Member._watch_leaderless, run on every tick)."""
import logging
import types

from raftkv.server.member import NO_LEADER_WARN_S, Member


def _member(leader_id):
    status = {"term": 7, "role": "candidate", "commit": 40, "applied": 40, "last_index": 41}
    return types.SimpleNamespace(
        loop=types.SimpleNamespace(leader_id=leader_id,
                                   node=types.SimpleNamespace(status=lambda: status)),
        transport=types.SimpleNamespace(describe=lambda: "2 out down (3 failed dials)"),
        _leaderless_since=None, _leaderless_warned=None)


def test_warns_while_leaderless_and_stops_once_a_leader_is_known(caplog):
    m = _member(0)
    with caplog.at_level(logging.WARNING, logger="raftkv.member"):
        Member._watch_leaderless(m, 100.0)
        Member._watch_leaderless(m, 100.0 + NO_LEADER_WARN_S - 0.1)
        assert not caplog.records
        Member._watch_leaderless(m, 100.0 + NO_LEADER_WARN_S)
        (rec,) = caplog.records
        msg = rec.getMessage()
        assert msg.startswith(f"no leader for {NO_LEADER_WARN_S:.0f}s: term 7, role candidate")
        assert "peer links: 2 out down (3 failed dials)" in msg
        m.loop.leader_id = 5
        Member._watch_leaderless(m, 200.0)
        assert m._leaderless_since is None and len(caplog.records) == 1
