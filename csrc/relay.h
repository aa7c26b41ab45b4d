/* Byte relay: one background thread that copies bytes both ways between pairs of connected
 * stream sockets, with one epoll loop for all of them.
 *
 * The member's client port (raftkv/api/mux.py) hands each gRPC connection it accepted to the
 * relay, paired with a connection to the member's own grpc.aio server on an internal address,
 * so that relaying costs the member's event loop (and the GIL) nothing.
 *
 * Per pair and direction there is one buffer of RK_RELAY_BUF_BYTES: a side is read only when
 * the bytes read from it before have all been written to the other side (so a slow reader
 * slows its writer down, as a direct connection would). EOF on one side is passed on as
 * shutdown(SHUT_WR) of the other once its buffer is written (half-close); an error on either
 * side (a reset, a write to a closed peer) closes both. A pair whose two directions have both
 * ended is closed. The relay owns every fd given to rk_relay_add and closes each exactly once.
 */
#ifndef RK_RELAY_H
#define RK_RELAY_H

#include <stdint.h>

/* Bytes buffered per pair and direction: a few loopback segments, enough that a bulk stream
 * (a snapshot) moves in few system calls, small enough for thousands of connections. */
#define RK_RELAY_BUF_BYTES (32 * 1024)

typedef struct rk_relay rk_relay;

/* Starts the relay thread. 0 and *out, or -errno (nothing started). */
int rk_relay_start(rk_relay **out);

/* Hands a pair of connected stream sockets to the relay, which owns them from now on, also
 * when this fails (it closes both then). 0 or -errno (-EBADF: an fd < 0, -EINVAL: the same fd
 * twice, -ESHUTDOWN: the relay is stopping). Thread-safe. */
int rk_relay_add(rk_relay *r, int fd_a, int fd_b);

/* Pairs the relay thread holds open (those added and not yet closed). */
int64_t rk_relay_pairs(const rk_relay *r);

/* Bytes the relay has written, both directions of every pair together. */
int64_t rk_relay_bytes(const rk_relay *r);

/* Closes every pair, stops and joins the thread, frees the relay. Call once, not from the
 * relay thread. */
void rk_relay_stop(rk_relay *r);

#endif /* RK_RELAY_H */
