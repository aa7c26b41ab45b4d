/*
 * put_floor: the sequential-put latency of a replicated log with no interpreter, no store
 * and no consensus logic beyond the message pattern, on this machine.
 *
 *     gcc -O2 -o put_floor bench/put_floor.c && ./put_floor DIR TOTAL
 *
 * bench/latency_floor.py builds and runs it (row `c_put`). Four processes, as in a
 * 3-member cluster with one client on the leader:
 *
 *   client --req--> leader --entry--> follower 1, follower 2
 *                   leader: pwrite + fdatasync of its own log, after sending the entries
 *                   follower: pwrite + fdatasync, then an ack
 *   client <--resp-- leader, once its own sync is done and one follower has acked
 *                    (a quorum of 2 of 3 holds the entry durably)
 *
 * Blocking TCP sockets on 127.0.0.1 with TCP_NODELAY, one 300-byte request per put (a
 * 256-byte value plus a key and framing), 8-byte acks and responses, each log preallocated
 * and synced before the run. Everything a real member adds (framing checks, the Raft step,
 * the store's apply, encoding) is left out, so no implementation of this message pattern
 * can be faster here. Prints one JSON line: {"total": N, "p50_ms": ..., "p99_ms": ...}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQ_BYTES 300
#define LOG_BYTES (64L << 20)

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) /* the peer is gone: the run is over */
            exit(0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("read");
        }
        p += r;
        n -= (size_t)r;
    }
}

static void write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0) {
            if (errno == EPIPE || errno == ECONNRESET) /* the peer is gone: the run is over */
                exit(0);
            if (errno == EINTR)
                continue;
            die("write");
        }
        p += r;
        n -= (size_t)r;
    }
}

static void nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        die("setsockopt");
}

/* A listening socket on 127.0.0.1 with an OS-assigned port, written to *port. */
static int listen_any(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1) < 0)
        die("listen");
    if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        die("getsockname");
    *port = ntohs(a.sin_port);
    return fd;
}

static int accept_one(int lfd)
{
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        die("accept");
    close(lfd);
    nodelay(fd);
    return fd;
}

static int connect_to(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    nodelay(fd);
    return fd;
}

static int open_log(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die("open log");
    if (posix_fallocate(fd, 0, LOG_BYTES) != 0 || fsync(fd) < 0)
        die("preallocate log");
    unlink(path); /* gone when the process ends */
    return fd;
}

static void append(int fd, const void *buf, size_t n, off_t *off)
{
    if (pwrite(fd, buf, n, *off) != (ssize_t)n)
        die("pwrite");
    if (fdatasync(fd) < 0)
        die("fdatasync");
    *off = (*off + (off_t)n) % LOG_BYTES;
}

static void follower(int lfd, int logfd)
{
    int fd = accept_one(lfd);
    char entry[REQ_BYTES];
    off_t off = 0;
    for (uint64_t index = 1;; index++) {
        read_full(fd, entry, sizeof entry);
        append(logfd, entry, sizeof entry, &off);
        write_full(fd, &index, sizeof index);
    }
}

static void leader(int lfd, int logfd, const int fport[2])
{
    int f[2] = {connect_to(fport[0]), connect_to(fport[1])};
    int client = accept_one(lfd);
    uint64_t acked[2] = {0, 0};
    char entry[REQ_BYTES];
    off_t off = 0;
    for (uint64_t index = 1;; index++) {
        read_full(client, entry, sizeof entry);
        write_full(f[0], entry, sizeof entry);
        write_full(f[1], entry, sizeof entry);
        append(logfd, entry, sizeof entry, &off);
        /* Wait for one follower's ack of this entry; take whatever acks have arrived. */
        while (acked[0] < index && acked[1] < index) {
            struct pollfd p[2] = {{.fd = f[0], .events = POLLIN}, {.fd = f[1], .events = POLLIN}};
            if (poll(p, 2, -1) < 0) {
                if (errno == EINTR)
                    continue;
                die("poll");
            }
            for (int i = 0; i < 2; i++)
                if (p[i].revents & (POLLIN | POLLHUP | POLLERR))
                    read_full(f[i], &acked[i], sizeof acked[i]);
        }
        write_full(client, &index, sizeof index);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR TOTAL\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    long total = atol(argv[2]);
    if (total <= 0) {
        fprintf(stderr, "TOTAL must be a positive number\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    pid_t pids[3];
    int fport[2], lport;
    for (int i = 0; i < 2; i++) {
        int lfd = listen_any(&fport[i]);
        char name[32];
        snprintf(name, sizeof name, "follower-%d.log", i + 1);
        int logfd = open_log(dir, name);
        if ((pids[i] = fork()) < 0)
            die("fork");
        if (pids[i] == 0) {
            follower(lfd, logfd);
            _exit(0);
        }
        close(lfd);
        close(logfd);
    }
    int lfd = listen_any(&lport);
    int logfd = open_log(dir, "leader.log");
    if ((pids[2] = fork()) < 0)
        die("fork");
    if (pids[2] == 0) {
        leader(lfd, logfd, fport);
        _exit(0);
    }
    close(lfd);
    close(logfd);

    int fd = connect_to(lport);
    double *lat = malloc(sizeof(double) * (size_t)total);
    if (lat == NULL)
        die("malloc");
    char req[REQ_BYTES];
    memset(req, 'x', sizeof req);
    uint64_t resp;
    for (long i = 0; i < total; i++) {
        double t = now_s();
        write_full(fd, req, sizeof req);
        read_full(fd, &resp, sizeof resp);
        lat[i] = now_s() - t;
        if (resp != (uint64_t)(i + 1)) {
            fprintf(stderr, "response %llu to request %ld\n", (unsigned long long)resp, i + 1);
            return 1;
        }
    }
    close(fd); /* the leader sees EOF and exits, then the followers do */
    for (int i = 0; i < 3; i++)
        waitpid(pids[i], NULL, 0);
    qsort(lat, (size_t)total, sizeof(double), cmp_double);
    printf("{\"total\": %ld, \"p50_ms\": %.4f, \"p99_ms\": %.4f}\n", total,
           lat[total / 2] * 1e3, lat[(total * 99) / 100] * 1e3);
    return 0;
}
