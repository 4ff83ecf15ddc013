//! Kernel functions (`--kfunc`): a kprobe and a kretprobe on each, filtered to the
//! targets' threads, pushing frames on the same per-thread stacks as the crossings.
//!
//! aya 0.14 attaches kprobes without cookies, so the entry program learns which function
//! fired from its address (`bpf_get_func_ip`), looked up in a map userspace fills from
//! `/proc/kallsyms`. The return program needs no name: kernel functions on one thread
//! return innermost first, so it pops the innermost kernel frame.

/// Entries of the address map: two per function (its symbol address and the address
/// past an `endbr64`, which kernels built with IBT report for kprobes on their entry).
pub const KFUNC_ENTRIES: u32 = 4096;

/// Most kernel functions traced at once.
pub const MAX_KFUNCS: usize = KFUNC_ENTRIES as usize / 2;

/// Slot of the one-entry array holding the kprobe pair's calibrated cost (a
/// `probe_cookie` with boundary 0): the return program adds the frame's boundary to it.
pub const KFUNC_COST_SLOT: u32 = 0;
