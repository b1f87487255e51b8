/* Two threads 60 frames deep in a program built without frame pointers (-O2
 * -fomit-frame-pointer): `kpath_spin` burns CPU at the bottom of one thread's recursion,
 * `kpath_sleep_here` sleeps at the bottom of main's. A whole stack is
 * root;...;kpath_recurse x61;kpath_spin|kpath_sleep_here.
 *
 * usage: deep_stacks SECONDS
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define DEPTH 60

static double seconds;
static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void kpath_spin(void) {
    double end = now() + seconds;
    while (now() < end) {
        for (int i = 0; i < 10000; i++)
            sink += i;
    }
}

__attribute__((noinline)) void kpath_sleep_here(void) {
    double end = now() + seconds;
    struct timespec ts = {0, 5 * 1000 * 1000};
    while (now() < end)
        nanosleep(&ts, NULL);
}

/* The work after the call keeps it a real call (no tail call), noinline keeps each level a
 * frame of its own. */
__attribute__((noinline)) int kpath_recurse(int depth, void (*leaf)(void)) {
    if (depth == 0) {
        leaf();
        return (int)(sink & 1);
    }
    int r = kpath_recurse(depth - 1, leaf);
    sink += r;
    return r + 1;
}

static void *spinner(void *arg) {
    (void)arg;
    kpath_recurse(DEPTH, kpath_spin);
    return NULL;
}

int main(int argc, char **argv) {
    seconds = argc > 1 ? atof(argv[1]) : 2.0;
    pthread_t t;
    if (pthread_create(&t, NULL, spinner, NULL) != 0) {
        perror("pthread_create");
        return 1;
    }
    int r = kpath_recurse(DEPTH, kpath_sleep_here);
    pthread_join(t, NULL);
    printf("deep_stacks: done %d\n", r);
    return 0;
}
