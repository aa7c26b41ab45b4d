"""A TCP fault proxy for tests, on 127.0.0.1 only (after asyncpg's TCPFuzzingProxy).

The kernel here has no netem (TESTING.md §5.1), so latency, stalls, resets and one-way loss are
injected in user space: the proxy listens on a fresh port, forwards to a target, and applies the
current fault mode to every chunk in each direction:

    delay_s      extra latency per chunk, per direction
    stall        hold all traffic (connections stay open, bytes wait) until cleared
    block_up     drop client->server bytes (one-way; TCP itself stays up)
    block_down   drop server->client bytes
    reset()      close every open connection abruptly (RST where the OS allows)
    refuse       close new connections at once

It runs its own event loop in a thread so synchronous tests can use it too.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading

CHUNK_BYTES_MAX = 64 * 1024  # read size per hop: bounds the memory one connection holds
START_TIMEOUT_S = 5.0


class FaultProxy:
    def __init__(self, target_host, target_port):
        assert target_host.startswith("127.") or target_host == "localhost", target_host
        self.target = (target_host, target_port)
        self.delay_s = 0.0
        self.block_up = False
        self.block_down = False
        self.refuse = False
        self._stall = None  # asyncio.Event while stalled (set means flowing)
        self._loop = None
        self._server = None
        self._conns = set()
        self._thread = None
        self.port = None
        self.bytes_up = 0
        self.bytes_down = 0

    # ---- lifecycle ----
    def start(self):
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S):
            raise TimeoutError("fault proxy did not start")
        return self

    def _run(self, ready):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._stall = asyncio.Event()
        self._stall.set()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._on_client, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self):
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        fut.result(timeout=START_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=START_TIMEOUT_S)

    async def _shutdown(self):
        self._server.close()
        self._abort_all()
        await self._server.wait_closed()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- fault controls (thread-safe) ----
    def set_stall(self, stalled):
        def apply():
            if stalled:
                self._stall.clear()
            else:
                self._stall.set()

        self._loop.call_soon_threadsafe(apply)

    def reset(self):
        """Abort every open connection now."""
        done = threading.Event()

        def apply():
            self._abort_all()
            done.set()

        self._loop.call_soon_threadsafe(apply)
        done.wait(START_TIMEOUT_S)

    def heal(self):
        self.delay_s = 0.0
        self.block_up = self.block_down = self.refuse = False
        self.set_stall(False)

    @property
    def connections(self):
        return len(self._conns)

    # ---- forwarding ----
    def _abort_all(self):
        for writer in list(self._conns):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    # SO_LINGER with a zero timeout turns close() into a reset.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            writer.transport.abort()
        self._conns.clear()

    async def _on_client(self, creader, cwriter):
        if self.refuse:
            cwriter.transport.abort()
            return
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.transport.abort()
            return
        self._conns.update((cwriter, swriter))
        await asyncio.gather(
            self._pump(creader, swriter, up=True),
            self._pump(sreader, cwriter, up=False),
            return_exceptions=True,
        )
        for w in (cwriter, swriter):
            self._conns.discard(w)
            w.transport.abort()

    async def _pump(self, reader, writer, up):
        while True:
            data = await reader.read(CHUNK_BYTES_MAX)
            if not data:
                writer.transport.abort()
                return
            await self._stall.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if (self.block_up if up else self.block_down):
                continue
            if up:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            writer.write(data)
            await writer.drain()
