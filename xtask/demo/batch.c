/* batch: a C program of its own using libthumb, the demo's second workload. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

uint32_t thumb_checksum(const uint8_t *data, size_t len);
void thumb_decode(uint8_t *pixels, size_t len, uint32_t seed);
size_t thumb_resize(const uint8_t *src, size_t w, size_t h, uint8_t *dst, size_t factor, int passes);
uint32_t thumb_encode(const uint8_t *pixels, size_t len);
void thumb_flush(int ms);

int main(int argc, char **argv) {
    int images = argc > 1 ? atoi(argv[1]) : 300;
    enum { W = 256, H = 256 };
    uint32_t digest = 0;
    for (int i = 0; i < images; i++) {
        uint8_t *src = malloc(W * H), *dst = malloc(W * H / 16);
        if (!src || !dst) return 1;
        thumb_decode(src, W * H, (uint32_t)i);
        size_t n = thumb_resize(src, W, H, dst, 4, 4);
        digest ^= thumb_encode(dst, n);
        free(src);
        free(dst);
        if (i % 100 == 99) thumb_flush(3);
    }
    printf("batch: %d thumbnails, digest %08x\n", images, digest);
    return 0;
}
