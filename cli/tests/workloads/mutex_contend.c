/* mutex_contend: THREADS (argv[1], default 4) threads take turns on one pthread mutex for SECS
 * (argv[2], default 1.5) seconds; each holds it while sleeping 1 ms (kpath_hold_here), so the
 * others wait for it in the kernel (futex) in kpath_wait_here: user-space lock contention.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static double end;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void kpath_hold_here(void)
{
    struct timespec ms = {0, 1000000L};
    nanosleep(&ms, NULL);
}

__attribute__((noinline)) void kpath_wait_here(void)
{
    pthread_mutex_lock(&lock);
    __asm__ volatile("" ::: "memory"); /* not a tail call: this frame stays on the stack */
}

static void *worker(void *arg)
{
    (void)arg;
    while (now() < end) {
        kpath_wait_here();
        kpath_hold_here();
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 4;
    double secs = argc > 2 ? atof(argv[2]) : 1.5;
    pthread_t t[64];
    if (n > 64)
        n = 64;
    end = now() + secs;
    for (int i = 0; i < n; i++)
        pthread_create(&t[i], NULL, worker, NULL);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    return 0;
}
