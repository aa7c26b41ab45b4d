"""The C byte relay (csrc/relay.c): twin of raftkv.api._pyrelay, same API and results.

One background pthread with an epoll loop copies bytes both ways between each pair of sockets
handed to it, never taking the GIL: the member's client port (raftkv/api/mux.py) relays its
gRPC connections to the member's grpc.aio server through it.
"""
from libc.stdint cimport int64_t

__all__ = ["Relay"]


cdef extern from "relay.h" nogil:
    ctypedef struct rk_relay:
        pass
    int RK_RELAY_BUF_BYTES
    int rk_relay_start(rk_relay **out)
    int rk_relay_add(rk_relay *r, int fd_a, int fd_b)
    int64_t rk_relay_pairs(const rk_relay *r)
    int64_t rk_relay_bytes(const rk_relay *r)
    void rk_relay_stop(rk_relay *r)


BUF_BYTES = RK_RELAY_BUF_BYTES


cdef int raise_for_status(int rc) except -1:
    """relay.c's status codes (-errno) as OSError."""
    if rc < 0:
        import os
        raise OSError(-rc, os.strerror(-rc))
    return 0


cdef class Relay:
    """Relay(): starts the relay thread. add(fd_a, fd_b) hands it a pair of connected stream
    sockets (it owns and closes them from then on, also when add raises); pairs() counts the
    pairs still open, bytes() the bytes written; stop() closes every pair and joins the
    thread (once; later calls do nothing)."""

    cdef rk_relay *r

    def __cinit__(self):
        cdef rk_relay *r = NULL
        cdef int rc
        with nogil:
            rc = rk_relay_start(&r)
        raise_for_status(rc)
        self.r = r

    def add(self, int fd_a, int fd_b):
        cdef int rc
        if self.r is NULL:
            import os
            os.close(fd_a)
            os.close(fd_b)
            raise OSError(108, "the relay is stopped")  # ESHUTDOWN, as relay.c says it
        with nogil:
            rc = rk_relay_add(self.r, fd_a, fd_b)
        raise_for_status(rc)

    def pairs(self):
        return 0 if self.r is NULL else rk_relay_pairs(self.r)

    def bytes(self):
        return 0 if self.r is NULL else rk_relay_bytes(self.r)

    def stop(self):
        cdef rk_relay *r = self.r
        self.r = NULL
        if r is not NULL:
            with nogil:
                rk_relay_stop(r)

    def __dealloc__(self):
        if self.r is not NULL:
            with nogil:
                rk_relay_stop(self.r)
            self.r = NULL
