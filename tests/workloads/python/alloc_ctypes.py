"""alloc_ctypes.py LIB K S F M: call xl_alloc_blocks(K, S, F) of libxlalloc.so through
ctypes M times (each call: K x malloc(S), the first F freed, the rest leaked)."""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.xl_alloc_blocks.restype = None
lib.xl_alloc_blocks.argtypes = [ctypes.c_int, ctypes.c_size_t, ctypes.c_int]
k, s, f, m = (int(a) for a in sys.argv[2:6])
for _ in range(m):
    lib.xl_alloc_blocks(k, s, f)
print("calls", m)
