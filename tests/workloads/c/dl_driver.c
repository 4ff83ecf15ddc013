/* dl_driver LIB SYMBOL N: dlopen LIB and call `int64_t SYMBOL(int64_t)` N times.
 * Drives the Rust, Nim and Zig libraries through their C ABI. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s LIB SYMBOL N\n", argv[0]);
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    int64_t (*fn)(int64_t) = (int64_t (*)(int64_t))dlsym(lib, argv[2]);
    if (!fn) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 1;
    }
    long n = atol(argv[3]);
    volatile int64_t sum = 0;
    for (long i = 0; i < n; i++) sum += fn(i);
    printf("sum=%lld\n", (long long)sum);
    return 0;
}
