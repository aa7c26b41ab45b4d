"""Snapshot transfer between two peer transports on loopback: chunked through spool files on
both sides, and resumable: a transfer cut off mid-way continues where it stopped."""
import asyncio
import os

import pytest

from raftkv.raft.types import ConfState, Message, MsgType, Snapshot, SnapshotMetadata
from raftkv.server.peer import PeerTransport, read_spooled_chunks
from tests.unit.member.helpers import wait_until

CHUNKS = [os.urandom(1000 + i) for i in range(40)]
TOKEN = "t"


def _snap_msg(index=100):
    meta = SnapshotMetadata(ConfState(voters=[1, 2]), index, 3)
    return Message(MsgType.SNAP, to=2, frm=1, term=3, snapshot=Snapshot(b"", meta))


async def _pair(tmp_path, received, sent):
    leader = PeerTransport(1, TOKEN, {}, "127.0.0.1", on_message=lambda m: None,
                           on_forward=None, snapshot_source=lambda: iter(CHUNKS),
                           on_snapshot_sent=lambda pid, ok: sent.append(ok),
                           spool_dir=str(tmp_path / "leader"))
    follower = PeerTransport(2, TOKEN, {}, "127.0.0.1", on_message=received.append,
                             on_forward=None, spool_dir=str(tmp_path / "follower"))
    os.makedirs(leader.spool_dir)
    os.makedirs(follower.spool_dir)
    lport = await leader.start("127.0.0.1", 0)
    fport = await follower.start("127.0.0.1", 0)
    leader.set_peers({2: ("127.0.0.1", fport)})
    follower.set_peers({1: ("127.0.0.1", lport)})
    return leader, follower


@pytest.mark.timeout(60)
def test_snapshot_transfer_resumes_after_a_cut(tmp_path):
    received, sent, seqs = [], [], []

    async def main():
        leader, follower = await _pair(tmp_path, received, sent)
        cut = {"armed": True}

        def hook(seq):
            seqs.append(seq)
            if seq == 25 and cut["armed"]:
                cut["armed"] = False
                raise ConnectionResetError("cut by the test")
        leader.snapshot_chunk_hook = hook
        try:
            leader.send([_snap_msg()])
            await wait_until(lambda: sent)
            assert sent == [False] and not received  # the first attempt was cut
            leader.send([_snap_msg()])  # Raft offers the snapshot again
            await wait_until(lambda: received)
            assert sent == [False, True]
        finally:
            await leader.close()
            await follower.close()

    asyncio.run(main())
    first, second = seqs[:seqs.index(25) + 1], seqs[seqs.index(25) + 1:]
    assert first == list(range(26))
    assert second[0] == 25 and second == list(range(25, len(CHUNKS)))  # resumed, not restarted
    m = received[0]
    assert m.type == MsgType.SNAP and m.snapshot.metadata.index == 100
    path = m.snapshot.data.decode()[len("file:"):]
    assert list(read_spooled_chunks(path)) == CHUNKS
    assert not [n for n in os.listdir(tmp_path / "follower") if n.endswith(".part")]


@pytest.mark.timeout(60)
def test_an_image_is_reused_for_a_snapshot_it_covers(tmp_path):
    received, sent = [], []

    async def main():
        leader, follower = await _pair(tmp_path, received, sent)
        try:
            leader.send([_snap_msg(100)])
            await wait_until(lambda: len(received) == 1)
            first = leader._image
            leader.send([_snap_msg(90)])  # an older snapshot point: same image
            await wait_until(lambda: len(received) == 2)
            assert leader._image == first
            leader.send([_snap_msg(200)])  # newer: exported again, old image removed
            await wait_until(lambda: len(received) == 3)
            assert leader._image[0] == 200 and not os.path.exists(first[2])
        finally:
            await leader.close()
            await follower.close()

    asyncio.run(main())
    assert sent == [True, True, True]


@pytest.mark.timeout(60)
def test_a_snapshot_offer_to_an_unreachable_peer_is_reported_failed(tmp_path):
    """The core waits for every MsgSnap's outcome before it offers that peer another: an offer
    dropped with the queue of a peer that cannot be reached must be reported as failed."""
    sent = []

    async def main():
        leader = PeerTransport(1, TOKEN, {}, "127.0.0.1", on_message=lambda m: None,
                               on_forward=None, snapshot_source=lambda: iter(CHUNKS),
                               on_snapshot_sent=lambda pid, ok: sent.append((pid, ok)),
                               spool_dir=str(tmp_path))
        await leader.start("127.0.0.1", 0)
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
        s.close()  # nothing listens there
        leader.set_peers({2: ("127.0.0.1", dead_port)})
        try:
            leader.send([_snap_msg()])
            await wait_until(lambda: sent)
            assert sent == [(2, False)]
        finally:
            await leader.close()

    asyncio.run(main())


@pytest.mark.timeout(60)
def test_the_dialer_survives_an_unexpected_error_in_a_connection(tmp_path):
    """An error that is not a connection error (here in the snapshot stream) used to end the
    dialer's task silently: nothing was ever sent to that peer again. It reconnects now."""
    received, sent = [], []

    async def main():
        leader, follower = await _pair(tmp_path, received, sent)
        armed = {"on": True}

        def hook(seq):
            if seq == 3 and armed["on"]:
                armed["on"] = False
                raise ValueError("not a connection error")
        leader.snapshot_chunk_hook = hook
        try:
            leader.send([_snap_msg()])
            await wait_until(lambda: sent)
            assert sent == [False] and not received
            assert not leader._peers[2].task.done()
            leader.send([_snap_msg()])  # the dialer reconnected: the retry gets through
            await wait_until(lambda: received, timeout_s=20.0)
            assert sent == [False, True]
        finally:
            await leader.close()
            await follower.close()

    asyncio.run(main())
