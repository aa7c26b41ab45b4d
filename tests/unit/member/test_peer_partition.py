"""The partition failpoint of the peer transport (PeerTransport.blocked and its file): a cut
peer gets no Raft messages, its connections are refused, a forward to it times out, and
clearing the file restores the link. A bad file blocks nobody."""
import asyncio
import json
import os

import pytest

from raftkv.errors import RaftkvError
from raftkv.raft.types import Message, MsgType
from raftkv.server.peer import PeerTransport
from tests.unit.member.helpers import wait_until

TOKEN = "t"


def _heartbeat(frm, to):
    return Message(MsgType.HEARTBEAT, to=to, frm=frm, term=2)


async def _pair(received):
    async def answer(op, body):
        return {"op": op}

    a = PeerTransport(1, TOKEN, {}, "127.0.0.1", on_message=received[1].append,
                      on_forward=answer)
    b = PeerTransport(2, TOKEN, {}, "127.0.0.1", on_message=received[2].append,
                      on_forward=answer)
    aport = await a.start("127.0.0.1", 0)
    bport = await b.start("127.0.0.1", 0)
    a.set_peers({2: ("127.0.0.1", bport)})
    b.set_peers({1: ("127.0.0.1", aport)})
    return a, b


def _write(path, ids):
    with open(path + ".tmp", "w") as f:
        f.write(ids if isinstance(ids, str) else json.dumps(ids))
    os.replace(path + ".tmp", path)


@pytest.mark.timeout(60)
def test_a_partition_file_cuts_the_link_and_clearing_it_heals(tmp_path):
    received = {1: [], 2: []}
    path = str(tmp_path / "m1.partition")

    async def main():
        a, b = await _pair(received)
        watcher = asyncio.get_running_loop().create_task(
            a.watch_partition_file(path, interval_s=0.01))
        try:
            a.send([_heartbeat(1, 2)])
            b.send([_heartbeat(2, 1)])
            await wait_until(lambda: received[1] and received[2])
            assert await a.forward(2, "ping", {}) == {"op": "ping"}
            assert a.describe() == "2 out up, 0 queued, in 1"

            _write(path, [2])  # a cuts itself off from b, in both directions
            await wait_until(lambda: a.blocked == {2})
            received[1].clear()
            received[2].clear()
            for _ in range(5):
                a.send([_heartbeat(1, 2)])
                b.send([_heartbeat(2, 1)])
                await asyncio.sleep(0.05)
            assert received == {1: [], 2: []}
            with pytest.raises(RaftkvError) as exc:
                await a.forward(2, "ping", {}, timeout_s=0.2)
            assert exc.value.code == "TIMEOUT"

            _write(path, "not json")  # unreadable: nobody is blocked
            await wait_until(lambda: not a.blocked)
            _write(path, [2])
            await wait_until(lambda: a.blocked == {2})
            _write(path, [])  # healed
            await wait_until(lambda: not a.blocked)
            await wait_until(lambda: (a.send([_heartbeat(1, 2)]), b.send([_heartbeat(2, 1)]),
                                 received[1] and received[2])[-1], timeout_s=10.0)
            assert await a.forward(2, "ping", {}) == {"op": "ping"}
        finally:
            watcher.cancel()
            await a.close()
            await b.close()

    asyncio.run(main())
