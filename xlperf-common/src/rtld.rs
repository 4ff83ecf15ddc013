//! The dynamic linker's notice that a process changed its set of loaded libraries.
//!
//! `_dl_debug_state` in ld.so is the function debuggers put a breakpoint on: the dynamic
//! linker calls it after it has mapped the program's libraries at start and around every
//! `dlopen`/`dlclose`, before any constructor of a new library runs. xlperf probes it
//! only while a `--ffi` library named by the user has not been mapped yet: the probe
//! stops the process (SIGSTOP) and tells userspace, which attaches to what is now mapped
//! and lets the process go on, so no call into a library loaded later is missed.

/// Emitted by the `_dl_debug_state` probe just before it stops the process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapChange {
    /// `CLOCK_MONOTONIC`, ns.
    pub ns: u64,
    pub pid: u32,
    pub tid: u32,
}

/// Signal the probe sends to the process it stops.
pub const SIGSTOP: u32 = 19;

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)], Copy, integers only, no padding (16 bytes).
    unsafe impl aya::Pod for super::MapChange {}
}

const _: () = assert!(core::mem::size_of::<MapChange>() == 16);
