/* libthumb: a toy thumbnail library, the native half of xlperf's demo.
 * Its functions cost very different amounts, so the table has a story to tell:
 * thumb_resize burns CPU, thumb_flush waits (off-CPU), thumb_encode nests a call. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

__attribute__((noinline)) uint32_t thumb_checksum(const uint8_t *data, size_t len) {
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < len; i++) {
        a = (a + data[i]) % 65521;
        b = (b + a) % 65521;
    }
    return (b << 16) | a;
}

__attribute__((noinline)) void thumb_decode(uint8_t *pixels, size_t len, uint32_t seed) {
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        pixels[i] = (uint8_t)(seed >> 16);
    }
}

/* Box-filter downscale by `factor`, repeated `passes` times: the expensive one. */
__attribute__((noinline)) size_t thumb_resize(const uint8_t *src, size_t width, size_t height,
                                              uint8_t *dst, size_t factor, int passes) {
    size_t ow = width / factor, oh = height / factor;
    for (int p = 0; p < passes; p++) {
        for (size_t y = 0; y < oh; y++) {
            for (size_t x = 0; x < ow; x++) {
                unsigned sum = 0;
                for (size_t dy = 0; dy < factor; dy++)
                    for (size_t dx = 0; dx < factor; dx++)
                        sum += src[(y * factor + dy) * width + x * factor + dx];
                dst[y * ow + x] = (uint8_t)(sum / (factor * factor));
            }
        }
    }
    return ow * oh;
}

/* Every encoded thumbnail's checksum, in a cache nobody ever trims: the leak that
 * `xlperf record --alloc` points at. */
struct cached {
    struct cached *next;
    uint32_t sum;
    char note[116];
};
static struct cached *cache;

/* "Encodes" by checksumming: a call nested inside another traced call. */
__attribute__((noinline)) uint32_t thumb_encode(const uint8_t *pixels, size_t len) {
    uint32_t sum = thumb_checksum(pixels, len) ^ 0x5a5a5a5au;
    struct cached *entry = malloc(sizeof *entry);
    if (entry) {
        entry->next = cache;
        entry->sum = sum;
        entry->note[0] = 0;
        cache = entry;
    }
    return sum;
}

/* Waits as if writing to slow storage: time spent off the CPU. */
__attribute__((noinline)) void thumb_flush(int ms) {
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}
