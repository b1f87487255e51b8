/* opener: waits until the file argv[1] exists (checked with access(2), so no openat while
 * waiting), then opens and closes /dev/null N (argv[2], default 1000) times and exits. Several
 * of them started before a recording and released together make exact, per-process openat
 * counts for the target tests.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    int n = argc > 2 ? atoi(argv[2]) : 1000;
    struct timespec tick = {0, 5 * 1000 * 1000};
    for (int waited = 0; access(argv[1], F_OK) != 0; waited++) {
        if (waited > 6000) /* 30 s */
            return 3;
        nanosleep(&tick, NULL);
    }
    for (int i = 0; i < n; i++) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0)
            return 1;
        close(fd);
    }
    return 0;
}
