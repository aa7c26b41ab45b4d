"""A peer message the Raft core refuses. A dropped forwarded proposal is routine (leadership
moved while it was on its way) and stays at debug level; any other refusal means a confused or
damaged peer and is a warning, logged at most once a minute per message type and error, with
the count of those not logged in between. The loop goes on either way."""
import logging
import types

import pytest

from raftkv.raft import Message, MsgType
from raftkv.raft.errors import LogDivergedError, ProposalDroppedError, UnavailableError
from raftkv.server import raft_loop
from raftkv.server.raft_loop import RaftLoop


class RefusingNode:
    """Raises the given error for every message stepped into it."""

    def __init__(self, exc):
        self.raft = types.SimpleNamespace(term=3, vote=0, lead=2)
        self.exc = exc
        self.stepped = []

    def step(self, m):
        self.stepped.append(m)
        raise self.exc

    def has_ready(self):
        return False


def _step(loop, m):
    loop._enqueue(("step", m))
    loop._drain_inbox()


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == "raftkv.raft_loop" and r.levelno == logging.WARNING]


APP = Message(MsgType.APP, to=1, frm=2, term=3, index=9)


def test_a_dropped_forwarded_proposal_is_not_a_warning(caplog):
    node = RefusingNode(ProposalDroppedError("no leader"))
    loop = RaftLoop(node, 1, io=None, send=None, tick_s=0.1)
    with caplog.at_level(logging.DEBUG, logger="raftkv.raft_loop"):
        _step(loop, Message(MsgType.PROP, to=1, frm=3, term=3))
    assert len(node.stepped) == 1
    assert _warnings(caplog) == []
    assert any("dropped peer message" in r.getMessage() for r in caplog.records)


def test_another_refusal_is_a_warning_naming_the_peer_and_the_error(caplog):
    loop = RaftLoop(RefusingNode(UnavailableError("term(12) beyond 9")), 1, io=None, send=None,
                    tick_s=0.1)
    with caplog.at_level(logging.WARNING, logger="raftkv.raft_loop"):
        _step(loop, APP)
    [msg] = _warnings(caplog)
    assert "refused a APP from member 2 (term 3)" in msg
    assert "UnavailableError: term(12) beyond 9" in msg


def test_repeats_are_counted_and_logged_once_a_minute(caplog, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(raft_loop.time, "monotonic", lambda: now[0])
    node = RefusingNode(UnavailableError("beyond"))
    loop = RaftLoop(node, 1, io=None, send=None, tick_s=0.1)
    with caplog.at_level(logging.WARNING, logger="raftkv.raft_loop"):
        for _ in range(5):
            _step(loop, APP)
        # another message type is its own kind: logged at once
        _step(loop, Message(MsgType.HEARTBEAT, to=1, frm=2, term=3))
        assert len(_warnings(caplog)) == 2
        now[0] += raft_loop.DROPPED_WARN_EVERY_S
        _step(loop, APP)
    assert len(node.stepped) == 7  # every message was stepped; none stopped the loop
    warnings = _warnings(caplog)
    assert len(warnings) == 3
    assert "HEARTBEAT" in warnings[1]
    assert warnings[2].endswith("(4 more like it since the last warning)")


def test_a_diverged_log_still_stops_the_loop():
    loop = RaftLoop(RefusingNode(LogDivergedError(2, 3, 5, 1, 2, 7)), 1, io=None, send=None,
                    tick_s=0.1)
    with pytest.raises(LogDivergedError):
        _step(loop, APP)
