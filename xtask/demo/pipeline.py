"""pipeline.py LIB [IMAGES]: the demo's Python half, driving libthumb through ctypes."""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
images = int(sys.argv[2]) if len(sys.argv) > 2 else 200
W = H = 256
src = (ctypes.c_uint8 * (W * H))()
dst = (ctypes.c_uint8 * (W * H))()
lib.thumb_resize.restype = ctypes.c_size_t
lib.thumb_encode.restype = ctypes.c_uint32
lib.thumb_resize.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t,
                             ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
lib.thumb_encode.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
lib.thumb_decode.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32]

digest = 0
for i in range(images):
    lib.thumb_decode(src, W * H, i)
    n = lib.thumb_resize(src, W, H, dst, 2, 6)
    digest ^= lib.thumb_encode(dst, n)
    if i % 50 == 49:
        lib.thumb_flush(5)
print(f"pipeline: {images} thumbnails, digest {digest:08x}", file=sys.stderr)
