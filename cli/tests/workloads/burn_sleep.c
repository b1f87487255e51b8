/* burn_sleep: the wall-clock view's workload. Spins for BURN (argv[1], default 2) seconds of wall
 * time in kpath_burn_here, then sleeps N (argv[2], default 200) times MS (argv[3], default 5)
 * milliseconds in kpath_sleep_here (clock_nanosleep to absolute deadlines). Timed by CLOCK_MONOTONIC, so the two phases keep their 2:1
 * wall-clock ratio on a busy machine too (the burn's lost CPU shows as run-queue delay); it prints
 * both phases' wall time to stderr as "burn_sleep: burn X.XXX s, sleep Y.YYY s".
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void kpath_burn_here(double secs)
{
    volatile unsigned long x = 0;
    double end = now() + secs;
    while (now() < end)
        for (int i = 0; i < 10000; i++)
            x += i;
}

/* Each sleep ends at the next MS boundary from the start (an absolute deadline), so the
 * wake-up latency of one sleep is not added to the next: the phase lasts N x MS. */
__attribute__((noinline)) void kpath_sleep_here(int n, long ms)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    for (int i = 0; i < n; i++) {
        t.tv_nsec += ms * 1000000L;
        while (t.tv_nsec >= 1000000000L) {
            t.tv_nsec -= 1000000000L;
            t.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) != 0)
            ;
    }
}

int main(int argc, char **argv)
{
    double burn = argc > 1 ? atof(argv[1]) : 2.0;
    int n = argc > 2 ? atoi(argv[2]) : 200;
    long ms = argc > 3 ? atol(argv[3]) : 5;
    prctl(PR_SET_TIMERSLACK, 1UL); /* no 50 us of slack added to each sleep */
    double t0 = now();
    kpath_burn_here(burn);
    double t1 = now();
    kpath_sleep_here(n, ms);
    double t2 = now();
    fprintf(stderr, "burn_sleep: burn %.3f s, sleep %.3f s\n", t1 - t0, t2 - t1);
    return 0;
}
