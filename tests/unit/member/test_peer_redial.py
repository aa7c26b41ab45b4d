"""A dialer backing off from a peer that was down dials again as soon as that peer dials us
(PeerTransport._serve -> _Peer.dialed_us): a restarted member hears from the leader at once,
not after the leader's next backoff step (up to BACKOFF_S[-1])."""
import asyncio

import pytest

from raftkv.cli.local_cluster import free_ports
from raftkv.raft.types import Message, MsgType
from raftkv.server import peer as peer_mod
from raftkv.server.peer import PeerTransport
from tests.unit.member.helpers import wait_until

TOKEN = "t"


@pytest.mark.timeout(60)
def test_a_peer_that_dials_us_ends_our_backoff(monkeypatch):
    # A backoff far longer than the test: only the redial can bring the link up in time.
    monkeypatch.setattr(peer_mod, "BACKOFF_S", (3600.0,))
    (bport,) = free_ports(1)
    received = []

    async def answer(op, body):
        return {}

    async def main():
        a = PeerTransport(1, TOKEN, {}, "127.0.0.1", on_message=lambda m: None,
                          on_forward=answer)
        aport = await a.start("127.0.0.1", 0)
        a.set_peers({2: ("127.0.0.1", bport)})  # nobody listens there yet
        b = None
        try:
            dialer = a._peers[2]
            await wait_until(lambda: dialer.failures >= 1)  # refused: now in its long backoff
            assert not dialer.connected
            b = PeerTransport(2, TOKEN, {1: ("127.0.0.1", aport)}, "127.0.0.1",
                              on_message=received.append, on_forward=answer)
            await b.start("127.0.0.1", bport)  # b's dialer reaches a at once
            await wait_until(lambda: dialer.connected)
            assert dialer.failures == 0
            a.send([Message(MsgType.HEARTBEAT, to=2, frm=1, term=2)])
            await wait_until(lambda: received)
            assert received[0].frm == 1 and received[0].type == MsgType.HEARTBEAT
        finally:
            await a.close()
            if b is not None:
                await b.close()

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_dialed_us_leaves_a_connected_dialer_alone():
    async def main():
        a = PeerTransport(1, TOKEN, {}, "127.0.0.1", on_message=lambda m: None,
                          on_forward=None)
        p = peer_mod._Peer(a, 2, ("127.0.0.1", 1))
        p.connected, p.failures = True, 3
        p.dialed_us()
        assert p.failures == 3 and not p.redial.is_set()
        p.connected = False
        p.dialed_us()
        assert p.failures == 0 and p.redial.is_set()

    asyncio.run(main())
