//! A Rust cdylib with a C ABI entry point, as a Rust library called from C would have.

#[no_mangle]
#[inline(never)]
pub extern "C" fn rs_triple(x: i64) -> i64 {
    std::hint::black_box(x).wrapping_mul(3)
}
