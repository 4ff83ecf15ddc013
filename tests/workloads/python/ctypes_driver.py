"""ctypes_driver.py LIB N: call xl_add from Python through ctypes N times."""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.xl_add.restype = ctypes.c_int64
lib.xl_add.argtypes = [ctypes.c_int64, ctypes.c_int64]
total = 0
for i in range(int(sys.argv[2])):
    total += lib.xl_add(i, 1)
print("sum", total)
