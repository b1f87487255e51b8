/* burn: one thread spinning in user space until it has used SECS (argv[1], default 2) seconds of
 * CPU time. Measured in CPU time, not wall time, so the number of on-CPU samples it can collect
 * (frequency x SECS) does not depend on what else the machine is running.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 2.0;
    volatile unsigned long x = 0;
    double start = cpu_seconds();
    while (cpu_seconds() - start < secs) {
        for (int i = 0; i < 100000; i++)
            x += i;
    }
    fprintf(stderr, "burn: %.3f s of CPU\n", cpu_seconds() - start);
    return 0;
}
