//! Types shared by the kernel side (`xlperf-ebpf`) and userspace (`xlperf`).
//!
//! Everything here is `#[repr(C)]` with explicit padding so both sides agree on the layout
//! byte for byte; the size assertions at the bottom fail the build if a field moves.
#![no_std]

pub mod cost;
pub mod ffi;
pub mod kfunc;
pub mod nif;
pub mod rtld;
pub mod syscall;

pub use cost::*;
pub use ffi::*;
pub use kfunc::*;
pub use nif::*;
pub use rtld::*;
pub use syscall::*;
