/* Byte relay between pairs of stream sockets: see relay.h. */
#define _GNU_SOURCE
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rk_assert.h"

#define EVENTS_MAX 64

struct pair;

/* One socket of a pair, as epoll sees it (epoll_event.data.ptr). */
struct end {
    struct pair *pair;
    int side; /* 0 or 1: index into the pair's arrays */
};

/* Direction d moves the bytes read from fd[d] to fd[1 - d] through buf[d].
 * Invariant: off[d] + len[d] <= RK_RELAY_BUF_BYTES; len[d] == 0 implies off[d] == 0. */
struct pair {
    int fd[2];
    uint32_t events[2];   /* the interest epoll holds for fd[i] */
    int registered[2];    /* fd[i] is in the epoll set */
    int eof[2];           /* fd[i] has nothing more to read (EOF seen) */
    int shut[2];          /* fd[i]'s write side is shut down */
    int dead;             /* closed; freed after the current batch of events */
    size_t off[2], len[2];
    struct end ends[2];
    struct pair *prev, *next; /* the relay's list of live pairs */
    struct pair *queued;      /* the add queue, or the batch's dead list */
    char buf[2][RK_RELAY_BUF_BYTES];
};

struct rk_relay {
    int epfd;
    int wakefd;          /* eventfd: an add was queued, or stop was asked */
    pthread_t thread;
    pthread_mutex_t lock; /* guards queue and stopping */
    struct pair *queue;   /* added, not yet registered by the thread */
    int stopping;
    struct pair *live;    /* the thread's own: pairs registered and not closed */
    int64_t pairs;        /* atomic: pairs added and not closed */
    int64_t bytes;        /* atomic: bytes written */
};

static void close_fd(int fd) {
    /* close(2) frees the fd even when it reports EINTR on Linux: never retry. */
    (void)close(fd);
}

static void pair_close(struct rk_relay *r, struct pair *p, struct pair **dead) {
    if (p->dead) return;
    for (int i = 0; i < 2; i++) {
        if (p->registered[i]) (void)epoll_ctl(r->epfd, EPOLL_CTL_DEL, p->fd[i], NULL);
        close_fd(p->fd[i]);
        p->registered[i] = 0;
    }
    p->dead = 1;
    if (p->prev) p->prev->next = p->next; else r->live = p->next;
    if (p->next) p->next->prev = p->prev;
    p->queued = *dead; /* freed once no event of this batch can point at it */
    *dead = p;
    __atomic_sub_fetch(&r->pairs, 1, __ATOMIC_RELAXED);
}

/* Write what buf[d] holds to fd[1 - d]; on EOF of fd[d] with nothing left, pass the
 * half-close on. 0, or -1 on an error that ends the pair. */
static int flush(struct rk_relay *r, struct pair *p, int d) {
    int to = 1 - d;
    while (p->len[d] > 0) {
        ssize_t n = send(p->fd[to], p->buf[d] + p->off[d], p->len[d], MSG_NOSIGNAL);
        if (n > 0) {
            RK_ASSERT((size_t)n <= p->len[d]);
            p->off[d] += (size_t)n;
            p->len[d] -= (size_t)n;
            __atomic_add_fetch(&r->bytes, n, __ATOMIC_RELAXED);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        return -1; /* EPIPE, ECONNRESET...: the other side is gone */
    }
    p->off[d] = 0;
    if (p->eof[d] && !p->shut[to]) {
        p->shut[to] = 1;
        (void)shutdown(p->fd[to], SHUT_WR); /* an error here shows up at the next read */
    }
    return 0;
}

/* Read from fd[d] into its empty buffer. 0, or -1 on an error that ends the pair. */
static int fill(struct pair *p, int d) {
    if (p->eof[d] || p->len[d] > 0) return 0;
    for (;;) {
        ssize_t n = recv(p->fd[d], p->buf[d], RK_RELAY_BUF_BYTES, 0);
        if (n > 0) {
            p->off[d] = 0;
            p->len[d] = (size_t)n;
            return 0;
        }
        if (n == 0) {
            p->eof[d] = 1;
            return 0;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -1;
    }
}

/* Point epoll at what each side waits for now. 0, or -1 when the pair is finished. */
static int rearm(struct rk_relay *r, struct pair *p) {
    if (p->eof[0] && p->eof[1] && p->len[0] == 0 && p->len[1] == 0) return -1;
    for (int i = 0; i < 2; i++) {
        uint32_t want = 0;
        if (!p->eof[i] && p->len[i] == 0) want |= EPOLLIN;
        if (p->len[1 - i] > 0) want |= EPOLLOUT;
        if (p->registered[i] && want == p->events[i]) continue;
        struct epoll_event ev = {.events = want, .data.ptr = &p->ends[i]};
        int op = p->registered[i] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(r->epfd, op, p->fd[i], &ev) != 0) return -1;
        p->registered[i] = 1;
        p->events[i] = want;
    }
    return 0;
}

static void on_event(struct rk_relay *r, struct end *e, uint32_t events, struct pair **dead) {
    struct pair *p = e->pair;
    int i = e->side;
    if (p->dead) return;
    int failed = 0;
    if (events & EPOLLOUT) failed |= flush(r, p, 1 - i);
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        failed |= fill(p, i);
        if (!failed) failed |= flush(r, p, i);
    }
    if (!failed && (events & (EPOLLHUP | EPOLLERR))) {
        /* Both directions of fd[i] are shut (or it failed): nothing more can be written to
         * it, and epoll reports this without end. What it sent is written above; if some of
         * it still waits for the other side, or the other side still has bytes for fd[i],
         * the pair cannot finish cleanly: end it. */
        if (!p->eof[i] || p->len[i] > 0 || p->len[1 - i] > 0 || !p->eof[1 - i]) failed = 1;
    }
    if (failed || rearm(r, p) != 0) pair_close(r, p, dead);
}

static void set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK)) (void)fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

/* Register the queued pairs. 1 when the relay is stopping. */
static int take_queue(struct rk_relay *r, struct pair **dead) {
    uint64_t count;
    (void)read(r->wakefd, &count, sizeof count);
    pthread_mutex_lock(&r->lock);
    struct pair *q = r->queue;
    r->queue = NULL;
    int stopping = r->stopping;
    pthread_mutex_unlock(&r->lock);
    while (q != NULL) {
        struct pair *p = q;
        q = p->queued;
        p->queued = NULL;
        p->prev = NULL;
        p->next = r->live;
        if (r->live) r->live->prev = p;
        r->live = p;
        if (rearm(r, p) != 0) pair_close(r, p, dead);
    }
    return stopping;
}

static void free_dead(struct pair *dead) {
    while (dead != NULL) {
        struct pair *next = dead->queued;
        free(dead);
        dead = next;
    }
}

static void *run(void *arg) {
    struct rk_relay *r = arg;
    struct epoll_event events[EVENTS_MAX];
    int stopping = 0;
    while (!stopping) {
        int n = epoll_wait(r->epfd, events, EVENTS_MAX, -1);
        RK_ASSERT(n >= 0 || errno == EINTR);
        struct pair *dead = NULL;
        for (int k = 0; k < n; k++) {
            if (events[k].data.ptr == NULL) stopping |= take_queue(r, &dead);
            else on_event(r, events[k].data.ptr, events[k].events, &dead);
        }
        free_dead(dead);
    }
    struct pair *dead = NULL;
    while (r->live != NULL) pair_close(r, r->live, &dead);
    free_dead(dead);
    return NULL;
}

int rk_relay_start(rk_relay **out) {
    struct rk_relay *r = calloc(1, sizeof *r);
    if (r == NULL) return -ENOMEM;
    r->epfd = epoll_create1(EPOLL_CLOEXEC);
    r->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int err = (r->epfd < 0 || r->wakefd < 0) ? errno : 0;
    if (!err) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->wakefd, &ev) != 0) err = errno;
    }
    if (!err) err = pthread_mutex_init(&r->lock, NULL);
    if (!err) {
        err = pthread_create(&r->thread, NULL, run, r);
        if (err) pthread_mutex_destroy(&r->lock);
    }
    if (err) {
        if (r->epfd >= 0) close_fd(r->epfd);
        if (r->wakefd >= 0) close_fd(r->wakefd);
        free(r);
        return -err;
    }
    *out = r;
    return 0;
}

static void wake(struct rk_relay *r) {
    uint64_t one = 1;
    ssize_t n = write(r->wakefd, &one, sizeof one);
    /* EAGAIN: the counter is at its maximum, so the thread is due to wake anyway. */
    RK_ASSERT(n == (ssize_t)sizeof one || errno == EAGAIN);
}

int rk_relay_add(rk_relay *r, int fd_a, int fd_b) {
    RK_ASSERT(r != NULL);
    if (fd_a < 0 || fd_b < 0 || fd_a == fd_b) {
        if (fd_a >= 0) close_fd(fd_a);
        if (fd_b >= 0 && fd_b != fd_a) close_fd(fd_b);
        return fd_a == fd_b && fd_a >= 0 ? -EINVAL : -EBADF;
    }
    struct pair *p = calloc(1, sizeof *p);
    if (p == NULL) {
        close_fd(fd_a);
        close_fd(fd_b);
        return -ENOMEM;
    }
    p->fd[0] = fd_a;
    p->fd[1] = fd_b;
    for (int i = 0; i < 2; i++) {
        set_nonblocking(p->fd[i]);
        p->ends[i].pair = p;
        p->ends[i].side = i;
    }
    pthread_mutex_lock(&r->lock);
    int stopping = r->stopping;
    if (!stopping) {
        p->queued = r->queue;
        r->queue = p;
        __atomic_add_fetch(&r->pairs, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&r->lock);
    if (stopping) {
        close_fd(fd_a);
        close_fd(fd_b);
        free(p);
        return -ESHUTDOWN;
    }
    wake(r);
    return 0;
}

int64_t rk_relay_pairs(const rk_relay *r) {
    return __atomic_load_n(&r->pairs, __ATOMIC_RELAXED);
}

int64_t rk_relay_bytes(const rk_relay *r) {
    return __atomic_load_n(&r->bytes, __ATOMIC_RELAXED);
}

void rk_relay_stop(rk_relay *r) {
    RK_ASSERT(r != NULL);
    RK_ASSERT(!pthread_equal(pthread_self(), r->thread));
    pthread_mutex_lock(&r->lock);
    r->stopping = 1;
    pthread_mutex_unlock(&r->lock);
    wake(r);
    RK_ASSERT(pthread_join(r->thread, NULL) == 0);
    /* The thread has closed its live pairs; pairs queued after its last look are closed here. */
    struct pair *q = r->queue;
    while (q != NULL) {
        struct pair *next = q->queued;
        close_fd(q->fd[0]);
        close_fd(q->fd[1]);
        free(q);
        __atomic_sub_fetch(&r->pairs, 1, __ATOMIC_RELAXED);
        q = next;
    }
    RK_ASSERT(__atomic_load_n(&r->pairs, __ATOMIC_RELAXED) == 0);
    pthread_mutex_destroy(&r->lock);
    close_fd(r->epfd);
    close_fd(r->wakefd);
    free(r);
}
