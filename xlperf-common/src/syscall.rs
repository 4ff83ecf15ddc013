//! System calls made inside crossings (`--syscalls`): the `raw_syscalls` tracepoints
//! time each call of a target thread and add it to the innermost crossing active on the
//! thread when it returns (no probe can fire in between: the thread is in the kernel).

/// What a system call is charged to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    pub tgid: u32,
    /// The innermost active crossing, `NO_BOUNDARY` outside any.
    pub boundary: u32,
    /// Its NIF address, as in [`crate::CallRecord::target`] (0 for other crossings).
    pub target: u64,
    /// The system call's number on this architecture.
    pub nr: u32,
    pub _pad: u32,
}

/// Calls of one system call inside one crossing, and their time in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallStat {
    pub count: u64,
    pub total_ns: u64,
}

/// Entries of the syscall map: (process, crossing, system call) triples.
pub const SYSCALL_ENTRIES: u32 = 16_384;

/// Offset of `long id` in both `raw_syscalls` events, after the 8-byte common header
/// (unchanged since the events appeared in 2.6.32; userspace checks the format files).
pub const SYSCALL_ID_OFFSET: usize = 8;

#[cfg(feature = "user")]
mod user {
    // SAFETY: #[repr(C)], Copy, integers only with an explicit padding field (24 bytes).
    unsafe impl aya::Pod for super::SyscallKey {}
    // SAFETY: #[repr(C)], Copy, two u64s.
    unsafe impl aya::Pod for super::SyscallStat {}
}

const _: () = assert!(core::mem::size_of::<SyscallKey>() == 24);
const _: () = assert!(core::mem::size_of::<SyscallStat>() == 16);
