//! Scheduler tracepoints for target threads: off-CPU time (blocked, then waiting in the
//! run queue after the wakeup), switches and wakers, charged to the innermost active
//! crossing (`stack::top_cost`). One `OffCpuRecord` per off-CPU period feeds the per-thread
//! run-queue histograms and the waker tables.
//!
//! The waker is taken at `sched_waking`, which runs in the waker's context; `sched_wakeup`
//! may run later on the wakee's CPU (queued wakeups), where `current` is someone else.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::Array,
    programs::TracePointContext,
};
use xlperf_common::{OffCpuRecord, TracepointLayout, off_state};

use crate::stack;

/// Field offsets of the tracepoints on the running kernel, written by userspace.
#[map]
static LAYOUT: Array<TracepointLayout> = Array::with_max_entries(1, 0);

/// `prev_state` bits meaning the task went to sleep; none set means it was preempted
/// (TASK_RUNNING, or TASK_REPORT_MAX as the tracepoint reports a preemption).
const SLEEP_STATES: u64 = 0xff;

pub fn layout() -> Option<&'static TracepointLayout> {
    LAYOUT.get(0)
}

/// Reads a `pid_t` field.
fn pid_at(ctx: &TracePointContext, offset: u32) -> Option<u32> {
    // SAFETY: the offset comes from this tracepoint's format file; read_at checks the read.
    unsafe { ctx.read_at::<i32>(offset as usize) }
        .ok()
        .map(|p| p as u32)
}

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let Some(layout) = layout() else {
        return 0;
    };
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    switched_out(&ctx, layout, now);
    if let Some(next) = pid_at(&ctx, layout.switch_next_pid) {
        switched_in(next, now);
    }
    0
}

/// `prev` is the current task: its process is known without reading the task struct.
fn switched_out(ctx: &TracePointContext, layout: &TracepointLayout, now: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !stack::is_target(tgid) {
        return;
    }
    let state: u64 = if layout.switch_prev_state_size == 8 {
        // SAFETY: as in pid_at.
        unsafe { ctx.read_at::<u64>(layout.switch_prev_state as usize) }.unwrap_or(0)
    } else {
        // SAFETY: as in pid_at.
        u64::from(unsafe { ctx.read_at::<u32>(layout.switch_prev_state as usize) }.unwrap_or(0))
    };
    let Some(stack) = stack::stack_of(pid_tgid as u32, tgid) else {
        return;
    };
    // SAFETY: this thread's map value; the thread is being switched out on this CPU.
    let stack = unsafe { &mut *stack };
    if stack.thread.tgid == 0 {
        // A thread announced by sched_wakeup_new, now known to belong to a target: its
        // first run-queue wait counts.
        stack.thread.tgid = tgid;
        let runq = core::mem::take(&mut stack.thread.unconfirmed_runq_ns);
        if runq > 0 {
            let (cost, boundary, target) = stack::top_cost(stack);
            cost.runq_ns += runq;
            emit(OffCpuRecord {
                // SAFETY: the helper has no preconditions.
                end_ns: unsafe { bpf_ktime_get_ns() },
                target,
                blocked_ns: 0,
                runq_ns: runq,
                pid: tgid,
                tid: pid_tgid as u32,
                boundary,
                ..OffCpuRecord::default()
            });
        }
    }
    stack.thread.off = if state & SLEEP_STATES == 0 {
        off_state::RUNNABLE
    } else {
        off_state::BLOCKED
    };
    stack.thread.off_since_ns = now;
    stack.thread.woken_ns = 0;
    stack.thread.waker_pid = 0;
    stack.thread.waker_tid = 0;
    stack.thread.waker_comm = [0; 16];
    // Kept current: a thread renames itself, and a process execs (a launcher script
    // becomes python3) after its first switches.
    stack.thread.comm = bpf_get_current_comm().unwrap_or(stack.thread.comm);
    let (cost, _, _) = stack::top_cost(stack);
    cost.switches += 1;
}

fn switched_in(tid: u32, now: u64) {
    if tid == 0 {
        return;
    }
    let Some(stack) = stack::existing_stack(tid) else {
        return;
    };
    // SAFETY: the thread's map value; the thread is off CPU, so none of its own probes run.
    let stack = unsafe { &mut *stack };
    let thread = &mut stack.thread;
    if thread.off == off_state::ON_CPU || thread.off_since_ns == 0 {
        return;
    }
    let since = thread.off_since_ns;
    let (blocked, runq) = if thread.off == off_state::RUNNABLE {
        (0, now.saturating_sub(since))
    } else if thread.woken_ns >= since {
        (thread.woken_ns - since, now.saturating_sub(thread.woken_ns))
    } else {
        // Woken without our seeing it (e.g. before the probes were attached).
        (now.saturating_sub(since), 0)
    };
    thread.off = off_state::ON_CPU;
    thread.off_since_ns = 0;
    if thread.tgid == 0 {
        // Maybe a forked process rather than a thread of the target: wait and see.
        thread.unconfirmed_runq_ns += runq;
        return;
    }
    let (pid, waker_pid, waker_tid, waker_comm) = (
        thread.tgid,
        thread.waker_pid,
        thread.waker_tid,
        thread.waker_comm,
    );
    let (cost, boundary, target) = stack::top_cost(stack);
    cost.offcpu_ns += blocked;
    cost.runq_ns += runq;
    emit(OffCpuRecord {
        end_ns: now,
        target,
        blocked_ns: blocked,
        runq_ns: runq,
        pid,
        tid,
        boundary,
        waker_pid,
        waker_tid,
        _pad: 0,
        waker_comm,
    });
}

fn emit(record: OffCpuRecord) {
    match stack::records().reserve::<OffCpuRecord>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(BPF_RB_NO_WAKEUP.into());
        }
        None => stack::bump(|c| &mut c.dropped),
    }
}

#[tracepoint]
pub fn sched_waking(ctx: TracePointContext) -> u32 {
    let Some(layout) = layout() else {
        return 0;
    };
    let Some(tid) = pid_at(&ctx, layout.waking_pid) else {
        return 0;
    };
    let Some(stack) = stack::existing_stack(tid) else {
        return 0;
    };
    // SAFETY: the wakee's map value; it is asleep, so none of its own probes run.
    let thread = unsafe { &mut (*stack).thread };
    if thread.off != off_state::BLOCKED || thread.woken_ns != 0 {
        return 0;
    }
    // SAFETY: the helper has no preconditions.
    thread.woken_ns = unsafe { bpf_ktime_get_ns() };
    let waker = bpf_get_current_pid_tgid();
    thread.waker_pid = (waker >> 32) as u32;
    thread.waker_tid = waker as u32;
    thread.waker_comm = bpf_get_current_comm().unwrap_or([0; 16]);
    0
}

/// A new thread of a target: it waits in the run queue from now until it first runs.
#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    let Some(layout) = layout() else {
        return 0;
    };
    // The creator is current. The new task may be a thread of the target or a process
    // it forked: its process stays unknown (0) until it runs and switches out itself.
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !stack::is_target(tgid) {
        return 0;
    }
    let Some(tid) = pid_at(&ctx, layout.wakeup_new_pid) else {
        return 0;
    };
    let Some(stack) = stack::new_stack(tid, 0) else {
        return 0;
    };
    // SAFETY: the new thread's map value; it has not run yet.
    let thread = unsafe { &mut (*stack).thread };
    thread.off = off_state::RUNNABLE;
    // SAFETY: the helper has no preconditions.
    thread.off_since_ns = unsafe { bpf_ktime_get_ns() };
    0
}
