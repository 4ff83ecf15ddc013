// A Zig library exporting a C ABI function.
export fn zig_inc(x: i64) callconv(.c) i64 {
    return x +% 1;
}
