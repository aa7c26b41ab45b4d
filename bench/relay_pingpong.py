"""The C relay's own cost: 200-byte ping-pongs over a socketpair, direct against through
raftkv.api._crelay (`python bench/relay_pingpong.py`). Figures in bench/README.md ("The client
port's relay"); nothing here is pass/fail."""
import os
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raftkv.api._crelay import Relay  # noqa: E402

ROUND_TRIPS = 20000
MESSAGE = b"x" * 200


def echo(sock):
    while True:
        data = sock.recv(4096)
        if not data:
            return
        sock.sendall(data)


def run(relayed):
    """(wall us, process CPU us) per round trip."""
    client, a = socket.socketpair()
    b, far = socket.socketpair()
    relay = None
    if relayed:
        relay = Relay()
        relay.add(a.detach(), b.detach())
        server = far
    else:
        server = a
    t = threading.Thread(target=echo, args=(server,), daemon=True)
    t.start()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(ROUND_TRIPS):
        client.sendall(MESSAGE)
        got = 0
        while got < len(MESSAGE):
            got += len(client.recv(4096))
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
    client.close()
    t.join(5)
    if relay is not None:
        relay.stop()
    return wall / ROUND_TRIPS * 1e6, cpu / ROUND_TRIPS * 1e6


def main():
    for _ in range(3):
        for relayed in (False, True):
            wall, cpu = run(relayed)
            print(f"{'relay ' if relayed else 'direct'} round trip {wall:6.1f} us, process CPU "
                  f"{cpu:6.1f} us  load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
