/* burn: one thread spinning in user space until it has used SECS (argv[1], default 2) seconds of
 * CPU time, or MAX_WALL (argv[2], default 15) seconds of wall time have passed on a machine too busy
 * to give it that. Measured in CPU time, so the number of on-CPU samples it can collect
 * (frequency x CPU seconds) does not depend on what else the machine runs; it prints the CPU time
 * it used to stderr as "burn: X.XXX s of CPU" for the test to compare against.
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

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    double max_wall = argc > 2 ? atof(argv[2]) : 15.0;
    volatile unsigned long x = 0;
    double cpu0 = seconds(CLOCK_PROCESS_CPUTIME_ID), wall0 = seconds(CLOCK_MONOTONIC);
    while (seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0 < secs &&
           seconds(CLOCK_MONOTONIC) - wall0 < max_wall) {
        for (int i = 0; i < 100000; i++)
            x += i;
    }
    fprintf(stderr, "burn: %.3f s of CPU in %.3f s\n", seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0,
            seconds(CLOCK_MONOTONIC) - wall0);
    return 0;
}
