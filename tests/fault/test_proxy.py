"""The fault proxy forwards, delays, stalls, blocks one way and resets, as tests rely on."""
import socket
import threading
import time

import pytest

from tests.fault.proxy import FaultProxy


@pytest.fixture
def echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    def _echo(conn):
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    srv.close()


def _roundtrip(port, payload=b"ping", timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        return s.recv(4096)


def test_forwards_and_delays(echo_server):
    with FaultProxy("127.0.0.1", echo_server) as p:
        assert _roundtrip(p.port) == b"ping"
        p.delay_s = 0.1
        t0 = time.monotonic()
        assert _roundtrip(p.port) == b"ping"
        assert time.monotonic() - t0 >= 0.2  # 0.1 s each way
        assert p.bytes_up >= 8 and p.bytes_down >= 8


def test_one_way_block_and_stall_time_out_then_heal(echo_server):
    with FaultProxy("127.0.0.1", echo_server) as p:
        p.block_down = True
        with pytest.raises(socket.timeout):
            _roundtrip(p.port, timeout=0.3)
        p.heal()
        p.set_stall(True)
        with pytest.raises(socket.timeout):
            _roundtrip(p.port, timeout=0.3)
        p.set_stall(False)
        assert _roundtrip(p.port) == b"ping"


def test_reset_and_refuse(echo_server):
    with FaultProxy("127.0.0.1", echo_server) as p:
        s = socket.create_connection(("127.0.0.1", p.port), timeout=2)
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        deadline = time.monotonic() + 2
        while p.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        p.reset()
        with pytest.raises(OSError):
            s.sendall(b"y")
            data = s.recv(10)
            if not data:
                raise ConnectionResetError("closed")
        s.close()
        p.refuse = True
        with pytest.raises(OSError):
            got = _roundtrip(p.port, timeout=1)
            if not got:
                raise ConnectionResetError("closed")
