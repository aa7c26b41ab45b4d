"""Pure-Python twin of raftkv.api._crelay (csrc/relay.c): same API, same behaviour.

A background thread with a selector copies bytes both ways between each pair of sockets
handed to it: a side is read only when what was read from it before is all written to the
other side; EOF is passed on as shutdown(SHUT_WR) once its bytes are written; an error on
either side closes both; a pair whose two directions have ended is closed. It runs Python,
so it takes the GIL for each transfer: the reference and fallback (RAFTKV_PUREPYTHON=1), not
the member's normal path.
"""
from __future__ import annotations

import errno
import os
import selectors
import socket
import threading

__all__ = ["Relay"]

BUF_BYTES = 32 * 1024  # as RK_RELAY_BUF_BYTES


class _Pair:
    __slots__ = ("socks", "buf", "eof", "shut", "events", "dead")

    def __init__(self, fd_a, fd_b):
        self.socks = [socket.socket(fileno=fd_a), socket.socket(fileno=fd_b)]
        for s in self.socks:
            s.setblocking(False)
        self.buf = [b"", b""]  # buf[d]: read from socks[d], to write to socks[1 - d]
        self.eof = [False, False]
        self.shut = [False, False]
        self.events = [None, None]  # the interest the selector holds (None: not registered)
        self.dead = False


class Relay:
    """Relay(): starts the relay thread. add(fd_a, fd_b) hands it a pair of connected stream
    sockets (it owns and closes them from then on, also when add raises); pairs() counts the
    pairs still open, bytes() the bytes written; stop() closes every pair and joins the
    thread (once; later calls do nothing)."""

    def __init__(self):
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._queue = []
        self._stopping = False
        self._live = set()
        self._pairs = 0
        self._bytes = 0
        self._thread = threading.Thread(target=self._run, name="raftkv-relay", daemon=True)
        self._thread.start()

    def add(self, fd_a, fd_b):
        if fd_a < 0 or fd_b < 0 or fd_a == fd_b:
            for fd in {fd_a, fd_b}:
                if fd >= 0:
                    os.close(fd)
            code = errno.EINVAL if fd_a == fd_b and fd_a >= 0 else errno.EBADF
            raise OSError(code, os.strerror(code))
        with self._lock:
            if self._stopping:
                os.close(fd_a)
                os.close(fd_b)
                raise OSError(errno.ESHUTDOWN, "the relay is stopped")
            self._queue.append(_Pair(fd_a, fd_b))
            self._pairs += 1
        os.write(self._wake_w, b"x")

    def pairs(self):
        return self._pairs

    def bytes(self):
        return self._bytes

    def stop(self):
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        for p in self._queue:
            self._close(p)
        self._sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self):
        while True:
            for key, events in self._sel.select():
                if key.data is None:
                    if self._take_queue():
                        for p in list(self._live):
                            self._close(p)
                        return
                else:
                    self._on_event(*key.data, events)

    def _take_queue(self):
        try:
            os.read(self._wake_r, 4096)
        except BlockingIOError:
            pass
        with self._lock:
            queue, self._queue, stopping = self._queue, [], self._stopping
        for p in queue:
            self._live.add(p)
            if not self._rearm(p):
                self._close(p)
        return stopping

    def _on_event(self, p, i, events):
        if p.dead:
            return
        ok = True
        if events & selectors.EVENT_WRITE:
            ok = self._flush(p, 1 - i)
        if ok and events & selectors.EVENT_READ:
            ok = self._fill(p, i) and self._flush(p, i)
        if not ok or not self._rearm(p):
            self._close(p)

    def _flush(self, p, d):
        while p.buf[d]:
            try:
                n = p.socks[1 - d].send(p.buf[d], socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            p.buf[d] = p.buf[d][n:]
            self._bytes += n
        if p.eof[d] and not p.shut[1 - d]:
            p.shut[1 - d] = True
            try:
                p.socks[1 - d].shutdown(socket.SHUT_WR)
            except OSError:
                pass  # shows up at the next read
        return True

    def _fill(self, p, d):
        if p.eof[d] or p.buf[d]:
            return True
        try:
            data = p.socks[d].recv(BUF_BYTES)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if data:
            p.buf[d] = data
        else:
            p.eof[d] = True
        return True

    def _rearm(self, p):
        if all(p.eof) and not p.buf[0] and not p.buf[1]:
            return False
        for i in (0, 1):
            want = (selectors.EVENT_READ if not p.eof[i] and not p.buf[i] else 0) | \
                (selectors.EVENT_WRITE if p.buf[1 - i] else 0)
            if want == p.events[i]:
                continue
            if p.events[i]:
                self._sel.unregister(p.socks[i])
            if want:
                self._sel.register(p.socks[i], want, (p, i))
            p.events[i] = want
        return True

    def _close(self, p):
        if p.dead:
            return
        p.dead = True
        for i, s in enumerate(p.socks):
            if p.events[i]:
                self._sel.unregister(s)
            s.close()
        self._live.discard(p)
        with self._lock:
            self._pairs -= 1
