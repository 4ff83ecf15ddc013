/* c_driver ADDS NESTED [MS] [--wait]
 * Calls xl_add ADDS times and xl_outer(MS) NESTED times (MS defaults to 1).
 * With --wait it first prints "ready" and waits for a line on stdin, so a tracer
 * can attach to its pid before it does anything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "xlcalc.h"

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ADDS NESTED [MS] [--wait]\n", argv[0]);
        return 2;
    }
    long adds = atol(argv[1]), nested = atol(argv[2]);
    int ms = argc > 3 && strcmp(argv[3], "--wait") != 0 ? atoi(argv[3]) : 1;
    if (strcmp(argv[argc - 1], "--wait") == 0) {
        char line[16];
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) return 3;
    }
    volatile int64_t sum = 0;
    for (long i = 0; i < adds; i++) sum += xl_add(i, 1);
    for (long i = 0; i < nested; i++) xl_outer(ms);
    printf("sum=%lld\n", (long long)sum);
    return 0;
}
