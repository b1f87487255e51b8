// The agent test's target: exactly N openat calls (default 1000), then exit. Linked
// statically so the dynamic loader adds no openat of its own.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    for (int i = 0; i < n; i++) {
        long fd = syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY);
        if (fd >= 0)
            syscall(SYS_close, fd);
    }
    return 0;
}
