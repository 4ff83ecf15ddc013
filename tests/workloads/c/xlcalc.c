/* A small C library with known behaviour: the ground truth of the FFI tests. */
#include <stdint.h>
#include <time.h>

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

__attribute__((noinline)) int64_t xl_add(int64_t a, int64_t b) { return a + b; }

__attribute__((noinline)) int64_t xl_square(int64_t x) { return x * x; }

/* Sleeps `ms`; called by xl_outer, so it nests one level deeper. */
__attribute__((noinline)) void xl_inner(int ms) { sleep_ms(ms); }

/* Sleeps `ms`, then calls xl_inner(2 * ms): inclusive time ≈ 3 * ms. */
__attribute__((noinline)) void xl_outer(int ms) {
    sleep_ms(ms);
    xl_inner(2 * ms);
}
