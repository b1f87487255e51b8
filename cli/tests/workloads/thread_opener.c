/* thread_opener: a worker thread opens and closes /dev/null 700 times and the main thread 300
 * times, both once the file argv[1] exists. The worker's thread id is printed first (one line on
 * stdout), so a test can trace that thread alone with -t.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *go;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t told = PTHREAD_COND_INITIALIZER;
static long worker_tid;

static int wait_go(void)
{
    struct timespec tick = {0, 5 * 1000 * 1000};
    for (int waited = 0; access(go, F_OK) != 0; waited++) {
        if (waited > 6000) /* 30 s */
            return 3;
        nanosleep(&tick, NULL);
    }
    return 0;
}

static int open_close(int n)
{
    for (int i = 0; i < n; i++) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0)
            return 1;
        close(fd);
    }
    return 0;
}

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    worker_tid = syscall(SYS_gettid);
    pthread_cond_signal(&told);
    pthread_mutex_unlock(&lock);
    if (wait_go())
        return (void *)3;
    return (void *)(long)open_close(700);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    go = argv[1];
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL))
        return 4;
    pthread_mutex_lock(&lock);
    while (!worker_tid)
        pthread_cond_wait(&told, &lock);
    pthread_mutex_unlock(&lock);
    printf("%ld\n", worker_tid);
    fflush(stdout);
    int rc = wait_go() || open_close(300);
    void *wrc;
    pthread_join(t, &wrc);
    return rc ? rc : (int)(long)wrc;
}
