/* blockers: four threads, each 300 times: nanosleep 200 us (the thread leaves the CPU inside
 * the syscall and may come back on another), then getppid (returns at once). A syscall's start
 * must follow its thread off the CPU: every nanosleep counted, and timed at >= 200 us.
 */
#include <pthread.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define THREADS 4
#define ROUNDS 300

static void *work(void *arg)
{
    (void)arg;
    struct timespec t = {0, 200 * 1000};
    for (int i = 0; i < ROUNDS; i++) {
        syscall(SYS_nanosleep, &t, NULL);
        syscall(SYS_getppid);
    }
    return NULL;
}

int main(void)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, work, NULL) != 0)
            return 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    return 0;
}
