/* epoll_close: a close-per-connection epoll server and its client in one process.
 *
 * usage: epoll_close [CONNS [EPOLLS]]   (defaults 2000 and 4)
 *
 * The main thread is the server: for each of CONNS connections it accepts, registers the accepted
 * socket in EPOLLS epoll instances (EPOLLIN), waits in epoll_wait for the request byte, reads it,
 * writes one response byte and close()s the socket while it is still registered. So every close runs
 * tcp_close and eventpoll_release_file, and the latter removes one epitem per epoll instance: EPOLLS
 * scales how much time close spends in eventpoll_release_file, so on-CPU sampling sees it.
 * A client thread connects, sends the byte, reads the reply, waits for EOF and closes. The server
 * closes first, so the TIME_WAIT sockets hold no client ports and runs can follow one another.
 * Syscalls per connection: server accept, EPOLLS epoll_ctl ADD, epoll_wait, read, write, close;
 * client socket, connect, write, two reads, close. Exit code 0 on success.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EPOLLS 64

static long conns = 2000;
static struct sockaddr_in addr;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void *client(void *arg)
{
    (void)arg;
    for (long i = 0; i < conns; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0)
            die("client socket");
        if (connect(c, (struct sockaddr *)&addr, sizeof(addr)) < 0)
            die("client connect");
        char b = 'q';
        if (write(c, &b, 1) != 1)
            die("client write");
        if (read(c, &b, 1) != 1)
            die("client read");
        if (read(c, &b, 1) != 0) /* EOF: the server closed first */
            die("client read eof");
        close(c);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int nep = 4;
    if (argc > 1)
        conns = atol(argv[1]);
    if (argc > 2)
        nep = atoi(argv[2]);
    if (nep < 1 || nep > MAX_EPOLLS) {
        fprintf(stderr, "epoll_close: EPOLLS must be 1..%d\n", MAX_EPOLLS);
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("bind");
    socklen_t alen = sizeof(addr);
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
        die("getsockname");
    if (listen(lfd, 128) < 0)
        die("listen");
    int eps[MAX_EPOLLS];
    for (int e = 0; e < nep; e++) {
        eps[e] = epoll_create1(0);
        if (eps[e] < 0)
            die("epoll_create1");
    }

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t th;
    if (pthread_create(&th, NULL, client, NULL) != 0)
        die("pthread_create");
    for (long i = 0; i < conns; i++) {
        int s = accept(lfd, NULL, NULL);
        if (s < 0)
            die("accept");
        for (int e = 0; e < nep; e++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
            if (epoll_ctl(eps[e], EPOLL_CTL_ADD, s, &ev) < 0)
                die("epoll_ctl ADD");
        }
        struct epoll_event out;
        if (epoll_wait(eps[0], &out, 1, 5000) != 1)
            die("epoll_wait");
        char b;
        if (read(s, &b, 1) != 1)
            die("server read");
        if (write(s, &b, 1) != 1)
            die("server write");
        close(s); /* still registered: eventpoll_release_file + tcp_close */
    }
    pthread_join(th, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "epoll_close: %ld connections, %d epoll instances, %.3f s\n", conns, nep,
            (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
