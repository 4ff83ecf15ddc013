/* leaf_driver CALLS ITERS OUT: calls each function of xl_leaf.S CALLS times (loop of
 * ITERS), interleaving traced and untraced twins in rounds, and writes to OUT, as
 * JSON, the median per-call time of each and the wall time of all traced calls. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int64_t xl_leaf_stepped(int64_t);
int64_t xl_leaf_push(int64_t);
int64_t twin_leaf_stepped(int64_t);
int64_t twin_leaf_push(int64_t);

#define ROUNDS 20

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static volatile int64_t sink;

/* Wall time of n calls. */
static uint64_t run(int64_t (*fn)(int64_t), long n, int64_t iters) {
    uint64_t start = now_ns();
    for (long i = 0; i < n; i++) sink += fn(iters);
    return now_ns() - start;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t median(uint64_t *v) {
    qsort(v, ROUNDS, sizeof *v, cmp);
    return v[ROUNDS / 2];
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s CALLS ITERS OUT\n", argv[0]);
        return 2;
    }
    long calls = atol(argv[1]);
    int64_t iters = atol(argv[2]);
    long per_round = calls / ROUNDS;
    uint64_t stepped[ROUNDS], push[ROUNDS], twin_stepped[ROUNDS], twin_push[ROUNDS];
    uint64_t traced_wall = 0, twin_wall = 0;
    for (int r = 0; r < ROUNDS; r++) {
        twin_stepped[r] = run(twin_leaf_stepped, per_round, iters);
        stepped[r] = run(xl_leaf_stepped, per_round, iters);
        twin_push[r] = run(twin_leaf_push, per_round, iters);
        push[r] = run(xl_leaf_push, per_round, iters);
        traced_wall += stepped[r] + push[r];
        twin_wall += twin_stepped[r] + twin_push[r];
    }
    FILE *out = fopen(argv[3], "w");
    if (!out) return 1;
    fprintf(out,
            "{\"calls_each\": %ld, \"stepped_ns\": %llu, \"push_ns\": %llu, "
            "\"twin_stepped_ns\": %llu, \"twin_push_ns\": %llu, "
            "\"traced_wall_ns\": %llu, \"twin_wall_ns\": %llu}\n",
            per_round * ROUNDS,
            (unsigned long long)(median(stepped) / per_round),
            (unsigned long long)(median(push) / per_round),
            (unsigned long long)(median(twin_stepped) / per_round),
            (unsigned long long)(median(twin_push) / per_round),
            (unsigned long long)traced_wall, (unsigned long long)twin_wall);
    fclose(out);
    return 0;
}
