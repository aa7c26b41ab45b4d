"""The client port's byte relay, C (raftkv.api._crelay over csrc/relay.c) and its pure-Python
twin (raftkv.api._pyrelay), over socketpairs: bytes both ways, large transfers with a slow
reader (partial writes), half-close passed on, a reset closing both sides, stop closing
everything, and no fd left behind."""
import importlib
import os
import socket
import struct
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["c", "pure"])
def relay(request):
    name = {"c": "_crelay", "pure": "_pyrelay"}[request.param]
    try:
        mod = importlib.import_module(f"raftkv.api.{name}")
    except ImportError as exc:
        if os.environ.get("RAFTKV_REQUIRE_C") == "1" or request.param == "pure":
            raise
        pytest.skip(f"the C relay is not built: {exc}")
    r = mod.Relay()
    yield r
    r.stop()


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def _wait(pred, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _pair(relay):
    """(client end, backend end): sockets whose other ends the relay joins."""
    client, a = socket.socketpair()
    backend, b = socket.socketpair()
    relay.add(a.detach(), b.detach())
    for s in (client, backend):
        s.settimeout(5.0)
    return client, backend


def _recv_exactly(sock, n):
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def test_bytes_go_both_ways(relay):
    client, backend = _pair(relay)
    client.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert _recv_exactly(backend, 24) == b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    backend.sendall(b"answer")
    assert _recv_exactly(client, 6) == b"answer"
    assert relay.pairs() == 1
    _wait(lambda: relay.bytes() == 30)  # counted just after the write
    client.close()
    backend.close()


def test_a_large_transfer_to_a_slow_reader_arrives_whole(relay):
    """Far more than the socket buffers and the relay's buffer hold: the relay's writes are
    partial and it waits for the reader (EPOLLOUT) without losing or reordering a byte."""
    client, backend = _pair(relay)
    data = os.urandom(8 << 20)
    sender = threading.Thread(target=backend.sendall, args=(data,))
    sender.start()
    got = bytearray()
    while len(got) < len(data):
        if len(got) < (1 << 20):
            time.sleep(0.001)  # slow at first, so the relay's buffers fill up
        got += client.recv(65536)
    sender.join()
    assert bytes(got) == data
    client.close()
    backend.close()


def test_half_close_is_passed_on_and_the_pair_ends_when_both_have(relay):
    client, backend = _pair(relay)
    client.sendall(b"request")
    client.shutdown(socket.SHUT_WR)
    assert _recv_exactly(backend, 7) == b"request"
    assert backend.recv(10) == b""  # the client's half-close, passed on
    backend.sendall(b"late answer")  # the other direction still flows
    assert _recv_exactly(client, 11) == b"late answer"
    assert relay.pairs() == 1
    backend.shutdown(socket.SHUT_WR)
    assert client.recv(10) == b""
    _wait(lambda: relay.pairs() == 0)
    client.close()
    backend.close()


def test_a_reset_closes_both_sides(relay):
    client, backend = _pair(relay)
    client.sendall(b"x")
    assert _recv_exactly(backend, 1) == b"x"
    # SO_LINGER 0: close sends a reset (on a socketpair, the relay's read fails or sees EOF).
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    assert backend.recv(10) == b""
    backend.close()
    _wait(lambda: relay.pairs() == 0)


def test_a_tcp_reset_closes_both_sides(relay):
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    listener.close()
    backend, b = socket.socketpair()
    relay.add(accepted.detach(), b.detach())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    backend.settimeout(5.0)
    assert backend.recv(10) == b""
    _wait(lambda: relay.pairs() == 0)
    backend.close()


def test_writing_to_a_closed_side_ends_the_pair(relay):
    client, backend = _pair(relay)
    client.close()
    try:  # a socketpair's close is a hang-up: the relay may have closed the pair already
        backend.sendall(b"nobody reads this")
    except (BrokenPipeError, ConnectionResetError):
        pass
    _wait(lambda: relay.pairs() == 0)
    backend.close()


def test_no_fd_is_left_behind_and_stop_closes_open_pairs(relay):
    before = _open_fds()
    for _ in range(200):
        client, backend = _pair(relay)
        client.sendall(b"ping")
        assert _recv_exactly(backend, 4) == b"ping"
        client.close()
        backend.close()
    _wait(lambda: relay.pairs() == 0)
    assert _open_fds() == before
    held = [_pair(relay) for _ in range(20)]
    _wait(lambda: relay.pairs() == 20)
    relay.stop()
    for client, backend in held:
        assert client.recv(10) == b""  # the relay closed its ends
        client.close()
        backend.close()
    assert relay.pairs() == 0
    relay.stop()  # a second stop does nothing


def test_bad_fds_are_refused_and_closed(relay):
    a, b = socket.socketpair()
    fd = a.detach()
    with pytest.raises(OSError):
        relay.add(fd, fd)
    with pytest.raises(OSError):
        os.fstat(fd)  # closed by the relay, which owns what it was given
    with pytest.raises(OSError):
        relay.add(-1, b.detach())
    relay.stop()
    c, d = socket.socketpair()
    fds = c.detach(), d.detach()
    with pytest.raises(OSError):
        relay.add(*fds)
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
