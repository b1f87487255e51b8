/* pprof_burn: one thread burning CPU in a named function, burn_cpu_spin, until it has used SECS
 * (argv[1], default 1) seconds of CPU time or 15 s of wall time have passed. Most of the work is
 * burn_cpu_spin's own loop; about a tenth is mix_bits, inlined into it, so a build with -g has
 * addresses whose source lines are an inlined call (the pprof test checks both). Prints
 * "pprof_burn: X s of CPU" to stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline __attribute__((always_inline)) unsigned long mix_bits(unsigned long x, long n)
{
    volatile unsigned long y = x;
    for (long j = 0; j < n; j++)
        y = y * 6364136223846793005UL + (unsigned long)j;
    return y;
}

__attribute__((noinline)) unsigned long burn_cpu_spin(long n)
{
    volatile unsigned long x = 0;
    for (long i = 0; i < n; i++)
        x += (unsigned long)i;
    return mix_bits(x, n / 10);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    double cpu0 = seconds(CLOCK_PROCESS_CPUTIME_ID), wall0 = seconds(CLOCK_MONOTONIC);
    unsigned long sink = 0;
    while (seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0 < secs && seconds(CLOCK_MONOTONIC) - wall0 < 15)
        sink += burn_cpu_spin(2000000);
    fprintf(stderr, "pprof_burn: %.3f s of CPU (%lu)\n", seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0,
            sink & 1);
    return 0;
}
