/* bench_target FUNC N [--wait]: time N calls of FUNC (push or endbr64) and print the
 * mean ns per call. With --wait, print "ready" and wait for a line on stdin first, so a
 * tracer can attach to this pid.
 *
 * Both functions are written in assembly so their first instruction is fixed whatever
 * the compiler: `bench_push` starts with `push %rbp` (the kernel emulates it at a probe),
 * `bench_endbr` with `endbr64` (the kernel single-steps it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

__asm__(".text\n"
        ".globl bench_push\n.type bench_push,@function\n"
        "bench_push:\n  push %rbp\n  mov %rsp,%rbp\n  pop %rbp\n  ret\n"
        ".size bench_push, .-bench_push\n"
        ".globl bench_endbr\n.type bench_endbr,@function\n"
        "bench_endbr:\n  endbr64\n  push %rbp\n  mov %rsp,%rbp\n  pop %rbp\n  ret\n"
        ".size bench_endbr, .-bench_endbr\n");

void bench_push(void);
void bench_endbr(void);

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s push|endbr N [--wait]\n", argv[0]);
        return 2;
    }
    void (*fn)(void) = strcmp(argv[1], "endbr") == 0 ? bench_endbr : bench_push;
    long n = atol(argv[2]);
    if (argc > 3 && strcmp(argv[3], "--wait") == 0) {
        char line[16];
        printf("ready\n");
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) return 3;
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) fn();
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("%.1f\n", ns / (double)n);
    return 0;
}
