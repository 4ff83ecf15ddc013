"""zlib_driver.py N: compress N buffers with the stdlib's zlib module (libz.so.1)."""
import sys
import zlib

for i in range(int(sys.argv[1])):
    zlib.compress(b"cross-language boundary %d " % i * 50)
