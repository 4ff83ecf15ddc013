/* xl_alloc.c: libxlalloc.so, the ground truth of the --alloc and --sched tests.
 *
 *   gcc -O2 -g -shared -fPIC -Wl,-z,now -o libxlalloc.so xl_alloc.c
 *
 * (-z now: every PLT slot is bound at load time, so no first call pays for the
 * dynamic linker's lazy binding inside a crossing.)
 *
 * Every block is written through a volatile pointer and every leaked block is kept
 * in a global array, so the compiler can elide no malloc/free pair. The functions
 * are exported and noipa: not inlined, not cloned, each at its own dynamic symbol,
 * so a call from one to another (xl_alloc_outer -> xl_alloc_blocks) enters the
 * callee at its symbol, where the uprobe is.
 *
 * Allocation figures per call (requested sizes; a realloc of a live block counts as
 * a free of the old size plus an allocation of the new size):
 *
 *   xl_alloc_blocks(k, s, f)  k x malloc(s), then frees the first f, leaks the rest:
 *       alloc_count k, alloc_bytes k*s, free_count f, free_bytes f*s, live (k-f)*s
 *   xl_alloc_outer(k, s, f)   its own malloc(777), freed after it calls
 *       xl_alloc_blocks(k, s, f): self alloc_count 1, alloc_bytes 777, free_count 1,
 *       free_bytes 777, live 0; inclusive adds xl_alloc_blocks's figures
 *   xl_alloc_variety(s)       s a multiple of 64 (aligned_alloc wants one):
 *       calloc(4, s)                 alloc 4s
 *       p = malloc(s)                alloc s
 *       p = realloc(p, 2s)           free s, alloc 2s
 *       posix_memalign(&q, 64, s)    alloc s
 *       aligned_alloc(64, s)         alloc s
 *       memalign(64, s)              alloc s
 *       valloc(s)                    alloc s
 *       reallocarray(NULL, 3, s)     alloc 3s (glibc's reallocarray tail-calls
 *                                    realloc: still one allocation)
 *       then free() of the 7 live blocks (4s + 2s + s + s + s + s + 3s = 13s):
 *       alloc_count 8, alloc_bytes 14s, free_count 8, free_bytes 14s, live 0
 *   xl_map(n, len)            n x anonymous mmap(len), each unmapped before return:
 *       mmap_count n, mmap_bytes n*len, munmap_bytes n*len, no allocator call
 *
 * Scheduler workloads:
 *   xl_sleep_ms(ms)   nanosleep(ms), resumed after signals: off the CPU for ms
 *   xl_spin_ms(ms)    busy loop on CLOCK_MONOTONIC (vDSO, no system call) until ms
 *                     of wall time have passed: never blocks
 *   xl_read_fd(fd)    one blocking read(2) of one byte; returns it, or -1
 *
 * Kernel allocations:
 *   xl_pipes(n)       n x pipe(2) then close(2) of both ends: each pipe allocates kernel
 *                     objects (pipe_inode_info, its buffers, two files), no user block
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define XL_API __attribute__((visibility("default"), noipa))

/* The most blocks one xl_alloc_blocks call takes (kept on the stack: an array
 * from malloc would be an allocation of the crossing). */
#define XL_BLOCKS_MAX 256
/* Leaked blocks, kept so the allocations are observable. */
#define XL_LEAK_MAX (1 << 16)

static void *leaked[XL_LEAK_MAX];
static size_t leaked_n;

/* Writes the first and last byte of a block: the block is used. */
static void touch(void *p, size_t s)
{
    volatile unsigned char *v = p;
    if (!p)
        abort();
    v[0] = 1;
    if (s > 1)
        v[s - 1] = 2;
}

static void keep(void *p)
{
    if (leaked_n == XL_LEAK_MAX)
        abort();
    leaked[leaked_n++] = p;
}

XL_API void xl_alloc_blocks(int k, size_t s, int f)
{
    void *b[XL_BLOCKS_MAX];
    if (k < 0 || k > XL_BLOCKS_MAX || f < 0 || f > k)
        abort();
    for (int i = 0; i < k; i++) {
        b[i] = malloc(s);
        touch(b[i], s);
    }
    for (int i = 0; i < f; i++)
        free(b[i]);
    for (int i = f; i < k; i++)
        keep(b[i]);
}

XL_API void xl_alloc_outer(int k, size_t s, int f)
{
    void *own = malloc(777);
    touch(own, 777);
    xl_alloc_blocks(k, s, f);
    touch(own, 777);
    free(own);
}

XL_API void xl_alloc_variety(size_t s)
{
    void *c, *p, *q = NULL, *a, *m, *v, *r;
    if (s == 0 || s % 64 != 0)
        abort();
    c = calloc(4, s);
    touch(c, 4 * s);
    p = malloc(s);
    touch(p, s);
    p = realloc(p, 2 * s);
    touch(p, 2 * s);
    if (posix_memalign(&q, 64, s) != 0)
        abort();
    touch(q, s);
    a = aligned_alloc(64, s);
    touch(a, s);
    m = memalign(64, s);
    touch(m, s);
    v = valloc(s);
    touch(v, s);
    r = reallocarray(NULL, 3, s);
    touch(r, 3 * s);
    free(c);
    free(p);
    free(q);
    free(a);
    free(m);
    free(v);
    free(r);
}

XL_API void xl_pipes(int n)
{
    for (int i = 0; i < n; i++) {
        int fds[2];
        if (pipe(fds) != 0)
            abort();
        close(fds[0]);
        close(fds[1]);
    }
}

XL_API void xl_map(int n, size_t len)
{
    void *maps[XL_BLOCKS_MAX];
    if (n < 0 || n > XL_BLOCKS_MAX || len == 0)
        abort();
    for (int i = 0; i < n; i++) {
        maps[i] = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (maps[i] == MAP_FAILED)
            abort();
        touch(maps[i], len);
    }
    for (int i = 0; i < n; i++)
        if (munmap(maps[i], len) != 0)
            abort();
}

XL_API void xl_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Exactly one openat, N one-byte writes and one close: nothing else enters the kernel. */
XL_API void xl_write_null(int n)
{
    int fd = open("/dev/null", O_WRONLY);
    if (fd < 0)
        abort();
    for (int i = 0; i < n; i++) {
        if (write(fd, "x", 1) != 1)
            abort();
    }
    close(fd);
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

XL_API void xl_spin_ms(int ms)
{
    long long end = now_ns() + (long long)ms * 1000000LL;
    while (now_ns() < end) {
    }
}

XL_API int xl_read_fd(int fd)
{
    unsigned char c;
    return read(fd, &c, 1) == 1 ? c : -1;
}
