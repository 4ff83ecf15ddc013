//! `--syscalls`: each system call of a target thread, timed from `raw_syscalls:sys_enter`
//! to `sys_exit` and counted per (process, innermost active crossing, system call).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::PerCpuHashMap,
    programs::TracePointContext,
};
use xlperf_common::{SYSCALL_ENTRIES, SYSCALL_ID_OFFSET, SyscallKey, SyscallStat};

use crate::stack;

/// Per CPU: threads of one process on other CPUs add to the same keys.
#[map]
static SYSCALL_STATS: PerCpuHashMap<SyscallKey, SyscallStat> =
    PerCpuHashMap::with_max_entries(SYSCALL_ENTRIES, 0);

#[tracepoint]
pub fn sys_enter(ctx: TracePointContext) -> u32 {
    try_sys_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit(_ctx: TracePointContext) -> u32 {
    try_sys_exit();
    0
}

fn try_sys_enter(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !stack::is_target(tgid) {
        return;
    }
    // SAFETY: the offset of `id` in the event (checked against its format file by
    // userspace); read_at checks the read.
    let Ok(nr) = (unsafe { ctx.read_at::<i64>(SYSCALL_ID_OFFSET) }) else {
        return;
    };
    let Some(stack) = stack::stack_of(pid_tgid as u32, tgid) else {
        return;
    };
    // SAFETY: this thread's map value; only this thread touches its syscall fields.
    let thread = unsafe { &mut (*stack).thread };
    // SAFETY: the helper has no preconditions.
    thread.syscall_start_ns = unsafe { bpf_ktime_get_ns() };
    thread.syscall_nr = nr as u64;
}

fn try_sys_exit() {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !stack::is_target(tgid) {
        return;
    }
    let Some(stack) = stack::existing_stack(pid_tgid as u32) else {
        return;
    };
    // SAFETY: as in try_sys_enter.
    let stack = unsafe { &mut *stack };
    let start = core::mem::take(&mut stack.thread.syscall_start_ns);
    if start == 0 {
        // Entered before the tracepoints were attached.
        return;
    }
    // SAFETY: the helper has no preconditions.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let (boundary, target) = stack::top_crossing(stack);
    let key = SyscallKey {
        tgid,
        boundary,
        target,
        nr: stack.thread.syscall_nr as u32,
        _pad: 0,
    };
    if let Some(stat) = SYSCALL_STATS.get_ptr_mut(&key) {
        // SAFETY: this CPU's copy of the value, from the lookup just made; a program
        // runs to its end on one CPU, so nothing else writes it meanwhile.
        let stat = unsafe { &mut *stat };
        stat.count += 1;
        stat.total_ns += ns;
        return;
    }
    let first = SyscallStat {
        count: 1,
        total_ns: ns,
    };
    if SYSCALL_STATS.insert(&key, &first, 0).is_err() {
        stack::bump(|c| &mut c.syscall_map_full);
    }
}
