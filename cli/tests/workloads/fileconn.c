/* fileconn: a deterministic syscall mix for exact-count tests.
 *
 * From main() on it makes exactly:
 *   1000 x open(temp file) + close          -> 1000 openat, 1000 close
 *    500 x mmap(4 KiB anonymous) + munmap   ->  500 mmap,   500 munmap
 *    200 x loopback TCP connection pair     ->  200 socket, 200 connect, 200 accept,
 *          (socket, connect, accept, epoll_ctl ADD + DEL of the accepted fd, close both)
 *                                               400 epoll_ctl, 400 close
 * plus a fixed setup (one getpid and one openat for the scratch file, one listening socket, one
 * epoll_create1) that is the same on every run. Single-threaded, no stdio: nothing allocates or buffers behind our back.
 * Exit code 0 on success, 1 with a message on the first failing call.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define FILES 1000
#define MMAPS 500
#define CONNS 200

static void die(const char *what)
{
    (void)!write(2, "fileconn: ", 10);
    (void)!write(2, what, strlen(what));
    (void)!write(2, " failed\n", 8);
    exit(1);
}

int main(void)
{
    /* Not mkstemp: glibc 2.36's name generator draws a 64-bit value and redraws it, from
     * getrandom(2), when it falls in the biased top of the range (62^10 does not divide 2^64),
     * about 4.5% of the time, so one run in ~22 made a getrandom call the next did not. The
     * pid makes the name unique with one getpid. */
    char path[] = "/tmp/kpath-fileconn-0000000000";
    unsigned long pid = (unsigned long)getpid();
    for (int i = (int)sizeof(path) - 2; pid && path[i] == '0'; i--, pid /= 10)
        path[i] = (char)('0' + pid % 10);
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0)
        die("open(O_CREAT)");
    close(fd);

    for (int i = 0; i < FILES; i++) {
        fd = open(path, O_RDONLY);
        if (fd < 0)
            die("open");
        close(fd);
    }
    unlink(path);

    for (int i = 0; i < MMAPS; i++) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap");
        munmap(p, 4096);
    }

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0)
        die("socket(listen)");
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("bind");
    socklen_t alen = sizeof(addr);
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0)
        die("getsockname");
    if (listen(lfd, 16) < 0)
        die("listen");
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");

    for (int i = 0; i < CONNS; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0)
            die("socket");
        if (connect(c, (struct sockaddr *)&addr, sizeof(addr)) < 0)
            die("connect");
        /* glibc's accept() is the accept syscall on x86_64 (not accept4). */
        int s = accept(lfd, NULL, NULL);
        if (s < 0)
            die("accept");
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) < 0)
            die("epoll_ctl ADD");
        if (epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL) < 0)
            die("epoll_ctl DEL");
        close(s);
        close(c);
    }
    close(ep);
    close(lfd);
    return 0;
}
