/* xl_waker PATH [MS]: opens the FIFO PATH for writing (blocking until a reader has
 * opened it), sleeps MS milliseconds (default 250), writes one byte ('w') and exits.
 * Its comm is "xl_waker": the process a --sched test expects to be named as the
 * waker of the reader blocked in xl_read_fd. Dies after 30 s (alarm), so a test that
 * fails leaves no writer behind. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s FIFO [MS]\n", argv[0]);
        return 2;
    }
    int ms = argc == 3 ? atoi(argv[2]) : 250;
    alarm(30);
    int fd = open(argv[1], O_WRONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 4;
    }
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    if (write(fd, "w", 1) != 1) {
        perror("write");
        return 4;
    }
    return 0;
}
