/* alloc_target N [--wait]: time N malloc(64)/touch/free pairs and print the elapsed ns
 * for all of them. With --wait, first print "ready MALLOC FREE" (the addresses of the
 * malloc and free this process calls, so the bench can see a tracer's breakpoints appear
 * in them) and wait for a line on stdin, so a tracer can attach to this pid first.
 *
 * Every call before the loop (stdio buffers, dlsym) happens before the go line, and the
 * result is printed after the clock stops: the timed region holds exactly N pairs. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s N [--wait]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    if (argc > 2 && strcmp(argv[2], "--wait") == 0) {
        char line[16];
        printf("ready %p %p\n", dlsym(RTLD_DEFAULT, "malloc"), dlsym(RTLD_DEFAULT, "free"));
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) return 3;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        char *p = malloc(64);
        if (!p) return 4;
        ((volatile char *)p)[0] = (char)i;
        ((volatile char *)p)[63] = (char)i;
        /* p escapes: the compiler may not fold the pair away. */
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long ns = (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    printf("%lld\n", ns);
    return 0;
}
