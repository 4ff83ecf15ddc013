## A Nim library exporting a C ABI proc.
proc nim_double(x: int64): int64 {.exportc, dynlib, cdecl.} =
  result = x * 2
