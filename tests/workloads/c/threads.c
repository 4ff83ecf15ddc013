/* threads T N: T threads each call xl_add N times and xl_outer(1) once, concurrently.
 * Ground truth for per-thread call stacks: T*N adds, T nested pairs at depth 1 and 2. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "xlcalc.h"

static long calls;

static void *work(void *arg) {
    volatile int64_t sum = 0;
    for (long i = 0; i < calls; i++) sum += xl_add(i, (int64_t)(intptr_t)arg);
    xl_outer(1);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s THREADS CALLS\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[1]);
    calls = atol(argv[2]);
    pthread_t tids[64];
    if (threads < 1 || threads > 64) return 2;
    for (int t = 0; t < threads; t++) pthread_create(&tids[t], NULL, work, (void *)(intptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    return 0;
}
