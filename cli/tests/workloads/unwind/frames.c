/* Stacks for the unwind oracle test (cli/tests/unwind_oracle.rs), built -O2
 * -fomit-frame-pointer. Each mode builds one kind of stack, prints "READY <tid>" from the
 * thread to stop and blocks that thread in read(2) on stdin, which the test never writes; the
 * test stops it there with ptrace and unwinds it.
 *
 *   recurse N   main -> recurse x N -> kpath_block_here
 *   plt         main -> qsort (through the PLT, into libc) -> compare -> kpath_block_here
 *   signal      main -> deep -> raise; the SIGUSR1 handler -> kpath_block_here
 *   alloca      main -> with_alloca x 5 (variable-size frames, rbp-based CFA) -> block
 *   threads N   3 threads recursing N, N+7, N+14 deep; the first one blocks after saying so
 */
#define _GNU_SOURCE
#include <alloca.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

volatile long sink;

/* Blocks the calling thread; `announce` says it is ready (only the thread to stop does). */
__attribute__((noinline)) void kpath_block_here(int announce) {
    char c;
    if (announce) {
        char line[64];
        int n = snprintf(line, sizeof line, "READY %ld\n", (long)syscall(SYS_gettid));
        if (write(1, line, n) != n)
            return;
    }
    while (read(0, &c, 1) > 0)
        ;
}

/* Not a tail call: the volatile store after the call keeps every frame. */
__attribute__((noinline)) long recurse(int n, int announce) {
    if (n == 0) {
        kpath_block_here(announce);
        return 0;
    }
    long r = recurse(n - 1, announce);
    sink += r;
    __asm__ volatile("" ::: "memory");
    return r + 1;
}

__attribute__((noinline)) static int compare(const void *a, const void *b) {
    static int calls;
    if (++calls == 5)
        kpath_block_here(1);
    return *(const int *)a - *(const int *)b;
}

/* The handler's ucontext, for the test to find the interrupted registers on its own. */
void *volatile kpath_uc;

static void handler(int sig, siginfo_t *info, void *uc) {
    (void)sig;
    (void)info;
    kpath_uc = uc;
    kpath_block_here(1);
    sink++; /* not a tail call: the handler keeps its frame */
}

__attribute__((noinline)) long deep(int n) {
    if (n == 0) {
        raise(SIGUSR1);
        return 0;
    }
    long r = deep(n - 1);
    sink += r;
    __asm__ volatile("" ::: "memory");
    return r + 1;
}

/* A variable-size frame makes gcc address it from rbp even with -fomit-frame-pointer. */
__attribute__((noinline)) long with_alloca(int n, int size) {
    char *p = alloca(size);
    memset(p, n, size);
    if (n == 0) {
        kpath_block_here(1);
        return 0;
    }
    long r = with_alloca(n - 1, size + 48);
    sink += r + p[size / 2];
    __asm__ volatile("" ::: "memory");
    return r + 1;
}

static pthread_barrier_t barrier;
static int thread_depth;

static void *thread_main(void *arg) {
    long i = (long)arg;
    pthread_barrier_wait(&barrier);
    /* The announcing thread waits until the others are deep too (they block at once). */
    if (i == 0)
        usleep(20000);
    recurse(thread_depth + 7 * (int)i, i == 0);
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "recurse";
    int n = argc > 2 ? atoi(argv[2]) : 150;
    if (!strcmp(mode, "recurse")) {
        recurse(n, 1);
    } else if (!strcmp(mode, "plt")) {
        int v[64];
        for (int i = 0; i < 64; i++)
            v[i] = (i * 37) % 64;
        qsort(v, 64, sizeof v[0], compare);
    } else if (!strcmp(mode, "signal")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = handler;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGUSR1, &sa, NULL);
        deep(4);
    } else if (!strcmp(mode, "alloca")) {
        with_alloca(5, 100);
    } else if (!strcmp(mode, "threads")) {
        pthread_t t[3];
        thread_depth = n;
        pthread_barrier_init(&barrier, NULL, 3);
        for (long i = 0; i < 3; i++)
            pthread_create(&t[i], NULL, thread_main, (void *)i);
        for (int i = 0; i < 3; i++)
            pthread_join(t[i], NULL);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 1;
}
