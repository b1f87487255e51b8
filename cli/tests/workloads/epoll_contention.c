/* epoll_contention: lock contention in the epoll and mmap paths of one process.
 *
 * usage: epoll_contention [SECS [EPOLL_THREADS [MMAP_THREADS]]]   (defaults 2, 2, 2)
 *
 * EPOLL_THREADS threads share ONE epoll instance. Each owns a batch of eventfds and loops:
 * epoll_ctl ADD, MOD and DEL on some of them, then ADD again and close() them while registered
 * (eventpoll_release_file), then makes fresh ones. All of that serializes on the instance's ep->mtx
 * (a mutex) and ep->lock (a spinlock), so threads on different CPUs contend.
 * MMAP_THREADS threads mmap a few pages, touch them and munmap them in a loop: both calls take the
 * shared mm's mmap_lock for writing, so they contend with each other (and with the page faults).
 * Runs for SECS seconds of wall time, then prints what it did to stderr. Exit code 0 on success.
 *
 * Threads of each kind are pinned round-robin to the online CPUs: contention needs two of them
 * running at once, and without pinning a busy 2-CPU machine sometimes stacked both epoll threads on
 * one CPU for a whole run (156000 fds through epoll, zero ep->mtx contention).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define BATCH 32
#define PAGES 4

static int ep;
static long ncpu = 1;
static volatile int stop;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

struct worker {
    int cpu;
    long ops;
};

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set); /* best effort */
}

static void *epoll_worker(void *arg)
{
    struct worker *w = arg;
    long *ops = &w->ops;
    pin(w->cpu);
    int fds[BATCH];
    while (!stop) {
        for (int i = 0; i < BATCH; i++) {
            fds[i] = eventfd(0, EFD_NONBLOCK);
            if (fds[i] < 0)
                die("eventfd");
        }
        for (int i = 0; i < BATCH; i++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0)
                die("epoll_ctl ADD");
            ev.events = EPOLLIN | EPOLLOUT;
            if (epoll_ctl(ep, EPOLL_CTL_MOD, fds[i], &ev) < 0)
                die("epoll_ctl MOD");
        }
        /* Half leave through DEL then close, half are closed while still registered. */
        for (int i = 0; i < BATCH; i++) {
            if (i % 2 == 0 && epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL) < 0)
                die("epoll_ctl DEL");
            close(fds[i]);
        }
        *ops += BATCH;
    }
    return NULL;
}

static void *mmap_worker(void *arg)
{
    struct worker *w = arg;
    long *ops = &w->ops;
    pin(w->cpu);
    long pg = sysconf(_SC_PAGESIZE);
    while (!stop) {
        char *p = mmap(NULL, PAGES * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap");
        for (int i = 0; i < PAGES; i++)
            p[i * pg] = 1;
        if (munmap(p, PAGES * pg) < 0)
            die("munmap");
        *ops += 1;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    int ne = argc > 2 ? atoi(argv[2]) : 2;
    int nm = argc > 3 ? atoi(argv[3]) : 2;
    if (ne < 0 || nm < 0 || ne + nm > 256) {
        fprintf(stderr, "epoll_contention: bad thread counts\n");
        return 2;
    }
    ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    pthread_t th[256];
    struct worker w[256];
    memset(w, 0, sizeof(w));
    for (int i = 0; i < ne + nm; i++) {
        w[i].cpu = (i < ne ? i : i - ne) % ncpu;
        if (pthread_create(&th[i], NULL, i < ne ? epoll_worker : mmap_worker, &w[i]) != 0)
            die("pthread_create");
    }
    struct timespec ts = {.tv_sec = (time_t)secs, .tv_nsec = (long)((secs - (time_t)secs) * 1e9)};
    nanosleep(&ts, NULL);
    stop = 1;
    long eops = 0, mops = 0;
    for (int i = 0; i < ne + nm; i++) {
        pthread_join(th[i], NULL);
        if (i < ne)
            eops += w[i].ops;
        else
            mops += w[i].ops;
    }
    fprintf(stderr, "epoll_contention: %.1f s, %d epoll threads: %ld fds through epoll; %d mmap threads: %ld mmap+munmap\n",
            secs, ne, eops, nm, mops);
    return 0;
}
