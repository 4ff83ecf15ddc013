//! A Rust cdylib with a C ABI entry point, as a Rust library called from C would have.

#[no_mangle]
#[inline(never)]
pub extern "C" fn rs_triple(x: i64) -> i64 {
    std::hint::black_box(x).wrapping_mul(3)
}

/// A module function with a Rust-mangled symbol (`xlrust::shapes::area`), reached through
/// the C ABI entry point `rs_area`: traced by its demangled name.
pub mod shapes {
    #[inline(never)]
    pub fn area(side: i64) -> i64 {
        let side = std::hint::black_box(side);
        side.wrapping_mul(side)
    }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn rs_area(x: i64) -> i64 {
    shapes::area(x)
}
