//! mmap/munmap syscalls of target threads: anonymous mappings are memory the process
//! takes from the kernel without the malloc family (or through it, for large blocks).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};

use crate::{sched::layout, stack};

/// MAP_ANONYMOUS on x86-64.
const MAP_ANONYMOUS: u64 = 0x20;

#[tracepoint]
pub fn mmap_enter(ctx: TracePointContext) -> u32 {
    let Some(layout) = layout() else {
        return 0;
    };
    // SAFETY: offsets from this tracepoint's format file; read_at checks the reads.
    let (len, flags) = unsafe {
        (
            ctx.read_at::<u64>(layout.mmap_len as usize).unwrap_or(0),
            ctx.read_at::<u64>(layout.mmap_flags as usize).unwrap_or(0),
        )
    };
    if flags & MAP_ANONYMOUS != 0 {
        charge(|cost| {
            cost.mmap_count += 1;
            cost.mmap_bytes += len;
        });
    }
    0
}

#[tracepoint]
pub fn munmap_enter(ctx: TracePointContext) -> u32 {
    let Some(layout) = layout() else {
        return 0;
    };
    // SAFETY: as above.
    let len = unsafe { ctx.read_at::<u64>(layout.munmap_len as usize) }.unwrap_or(0);
    charge(|cost| cost.munmap_bytes += len);
    0
}

/// Charges a tracepoint event to the current thread, when it belongs to a target.
pub fn charge(f: impl FnOnce(&mut xlperf_common::Cost)) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !stack::is_target(tgid) {
        return;
    }
    if let Some(stack) = stack::stack_of(pid_tgid as u32, tgid) {
        // SAFETY: this thread's map value; one program runs at a time per thread.
        let (cost, _, _) = stack::top_cost(unsafe { &mut *stack });
        f(cost);
    }
}
