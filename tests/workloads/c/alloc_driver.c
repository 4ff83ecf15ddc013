/* alloc_driver MODE ARGS... [--wait]: calls libxlalloc.so (xl_alloc.c) in known ways.
 *
 *   blocks K S F M   M x xl_alloc_blocks(K, S, F); after each call, outside any
 *                    crossing, 3 x malloc(333) that it frees again
 *   outer K S F M    M x xl_alloc_outer(K, S, F)
 *   variety S M      M x xl_alloc_variety(S)
 *   map N LEN M      M x xl_map(N, LEN)
 *   pipes N M        M x xl_pipes(N)
 *   leaky K S F M MS M x (xl_alloc_blocks(K, S, F); xl_sleep_ms(MS)): blocks leak
 *                    all through the run, and half the time is spent asleep
 *   sleep MS N       N x xl_sleep_ms(MS)
 *   writes N M       M x xl_write_null(N): one openat, N writes and one close each
 *   spin MS N        N x xl_spin_ms(MS), at nice -20
 *   runq same MS     two threads at nice -20, both pinned to CPU 0, each calls
 *   runq split MS    xl_spin_ms(MS) once, starting together; split pins them to CPUs
 *                    0 and 1. Prints "spinners TID TID" when both are done.
 *   fifo PATH        opens the FIFO PATH for reading (blocks until a writer opens it),
 *                    then xl_read_fd once; prints "read C". Dies after 30 s (alarm),
 *                    so a test that fails leaves no reader behind.
 *
 * Spinners run at the highest fair-scheduling priority, so that a spinner's run-queue
 * wait is the business of this program alone: the spin and runq modes start a session
 * of their own (with sched autogroup on, the kernel's default, nice only weighs threads
 * within one session's group, and every session's group gets an equal share), give
 * that group nice -20 (/proc/self/autogroup) and each spinning thread nice -20. Other
 * nice-0 work on a spinner's CPU then gets about 1% of it. (Root only; a warning
 * otherwise.)
 *
 * With --wait it first prints "ready" and waits for a line on stdin, so a tracer can
 * attach to its pid before it does anything. Exits 0 on success, 2 on bad usage. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "xl_alloc.h"

#define OUTSIDE_SIZE 333
#define OUTSIDE_BLOCKS 3

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s blocks K S F M | outer K S F M | variety S M | map N LEN M | sleep MS N | writes N M"
            " | spin MS N | runq same|split MS | fifo PATH  [--wait]\n",
            prog);
    return 2;
}

/* Allocations outside any crossing: they belong to the thread's outside bucket. */
static void outside(void)
{
    void *p[OUTSIDE_BLOCKS];
    for (int i = 0; i < OUTSIDE_BLOCKS; i++) {
        volatile unsigned char *v = p[i] = malloc(OUTSIDE_SIZE);
        if (!p[i])
            abort();
        v[0] = 1;
    }
    for (int i = 0; i < OUTSIDE_BLOCKS; i++)
        free(p[i]);
}

/* Nice -20 for the calling thread. */
static void high_priority(void)
{
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), -20) != 0)
        perror("alloc_driver: setpriority(-20)");
}

/* A session of its own, hence an autogroup of its own, at nice -20 (where the kernel
 * has autogroups: no /proc/self/autogroup otherwise, and nothing to do). */
static void own_priority_group(void)
{
    if (setsid() < 0)
        perror("alloc_driver: setsid");
    FILE *ag = fopen("/proc/self/autogroup", "w");
    if (ag) {
        if (fputs("-20", ag) < 0 || fclose(ag) != 0)
            perror("alloc_driver: autogroup nice -20");
    }
}

struct spinner {
    int cpu, ms;
    pid_t tid;
};

static pthread_barrier_t start_together;

static void *spin_pinned(void *arg)
{
    struct spinner *s = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(s->cpu, &set);
    int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (err) {
        fprintf(stderr, "alloc_driver: pinning to CPU %d: %s\n", s->cpu, strerror(err));
        exit(4);
    }
    high_priority();
    s->tid = gettid();
    pthread_barrier_wait(&start_together);
    xl_spin_ms(s->ms);
    return NULL;
}

static int runq(int split, int ms)
{
    struct spinner s[2] = {{0, ms, 0}, {split ? 1 : 0, ms, 0}};
    pthread_t t[2];
    pthread_barrier_init(&start_together, NULL, 2);
    for (int i = 0; i < 2; i++)
        if (pthread_create(&t[i], NULL, spin_pinned, &s[i]) != 0)
            return 4;
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    printf("spinners %d %d\n", (int)s[0].tid, (int)s[1].tid);
    return 0;
}

static int fifo(const char *path)
{
    alarm(30);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 4;
    }
    int c = xl_read_fd(fd);
    printf("read %d\n", c);
    return c < 0 ? 4 : 0;
}

int main(int argc, char **argv)
{
    int wait = argc > 1 && strcmp(argv[argc - 1], "--wait") == 0;
    if (wait)
        argc--;
    if (argc < 3)
        return usage(argv[0]);
    const char *mode = argv[1];
    if (wait) {
        char line[16];
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin))
            return 3;
    }
    if (strcmp(mode, "blocks") == 0 && argc == 6) {
        int k = atoi(argv[2]), f = atoi(argv[4]);
        size_t s = strtoul(argv[3], NULL, 10);
        long m = atol(argv[5]);
        for (long i = 0; i < m; i++) {
            xl_alloc_blocks(k, s, f);
            outside();
        }
    } else if (strcmp(mode, "outer") == 0 && argc == 6) {
        int k = atoi(argv[2]), f = atoi(argv[4]);
        size_t s = strtoul(argv[3], NULL, 10);
        long m = atol(argv[5]);
        for (long i = 0; i < m; i++)
            xl_alloc_outer(k, s, f);
    } else if (strcmp(mode, "variety") == 0 && argc == 4) {
        size_t s = strtoul(argv[2], NULL, 10);
        long m = atol(argv[3]);
        for (long i = 0; i < m; i++)
            xl_alloc_variety(s);
    } else if (strcmp(mode, "map") == 0 && argc == 5) {
        int n = atoi(argv[2]);
        size_t len = strtoul(argv[3], NULL, 10);
        long m = atol(argv[4]);
        for (long i = 0; i < m; i++)
            xl_map(n, len);
    } else if (strcmp(mode, "pipes") == 0 && argc == 4) {
        int n = atoi(argv[2]);
        long m = atol(argv[3]);
        for (long i = 0; i < m; i++)
            xl_pipes(n);
    } else if (strcmp(mode, "leaky") == 0 && argc == 7) {
        int k = atoi(argv[2]), f = atoi(argv[4]), ms = atoi(argv[6]);
        size_t s = strtoul(argv[3], NULL, 10);
        long m = atol(argv[5]);
        for (long i = 0; i < m; i++) {
            xl_alloc_blocks(k, s, f);
            xl_sleep_ms(ms);
        }
    } else if (strcmp(mode, "sleep") == 0 && argc == 4) {
        int ms = atoi(argv[2]);
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++)
            xl_sleep_ms(ms);
    } else if (strcmp(mode, "writes") == 0 && argc == 4) {
        int n = atoi(argv[2]);
        long m = atol(argv[3]);
        for (long i = 0; i < m; i++)
            xl_write_null(n);
    } else if (strcmp(mode, "spin") == 0 && argc == 4) {
        int ms = atoi(argv[2]);
        long n = atol(argv[3]);
        own_priority_group();
        high_priority();
        for (long i = 0; i < n; i++)
            xl_spin_ms(ms);
    } else if (strcmp(mode, "runq") == 0 && argc == 4 &&
               (strcmp(argv[2], "same") == 0 || strcmp(argv[2], "split") == 0)) {
        own_priority_group();
        return runq(strcmp(argv[2], "split") == 0, atoi(argv[3]));
    } else if (strcmp(mode, "fifo") == 0 && argc == 3) {
        return fifo(argv[2]);
    } else {
        return usage(argv[0]);
    }
    printf("done\n");
    return 0;
}
