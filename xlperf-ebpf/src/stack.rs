//! Per-thread stacks of active traced calls, shared by every probe family: an entry
//! probe pushes a frame, the matching return probe pops it and emits one `CallRecord`.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
};
use xlperf_common::{
    COUNTERS_SLOT, CallRecord, CallStack, Counters, Frame, MAX_DEPTH, NO_BOUNDARY,
};

/// Threads whose call stacks are kept at once. LRU, so stacks of exited threads age out
/// without a delete on every outermost return (which would cost a hash update per call).
const MAX_THREADS: u32 = 16_384;

/// Ring buffer for call records; userspace resizes it at load time (`--ring-size`,
/// default 8 MiB: ~170 k records, 170 ms of headroom at 1 M calls/s).
const RECORDS_BYTES: u32 = 8 << 20;

#[map]
static CALL_STACKS: LruHashMap<u32, CallStack> = LruHashMap::with_max_entries(MAX_THREADS, 0);

#[map]
static CALL_RECORDS: RingBuf = RingBuf::with_byte_size(RECORDS_BYTES, 0);

#[map]
static FFI_COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

pub fn bump(field: impl FnOnce(&mut Counters) -> &mut u64) {
    add(1, field);
}

fn add(n: u64, field: impl FnOnce(&mut Counters) -> &mut u64) {
    if let Some(counters) = FFI_COUNTERS.get_ptr_mut(COUNTERS_SLOT) {
        // SAFETY: the pointer comes from the map lookup and is valid for this program run;
        // the slot is per-CPU and programs do not migrate mid-run, so there is no race.
        *field(unsafe { &mut *counters }) += n;
    }
}

/// Pushes a frame for a call of `boundary` (of function `target`, when the probe knows
/// it) on the current thread's stack.
pub fn enter(boundary: u32, target: u64, thread: u32) {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let tid = bpf_get_current_pid_tgid() as u32;

    let Some(stack) = stack_of(tid) else {
        bump(|c| &mut c.stack_map_full);
        return;
    };
    // SAFETY: stack_of returns a pointer to this thread's map value; only this thread
    // (one program run at a time per thread) touches it.
    let stack = unsafe { &mut *stack };
    let depth = stack.depth as usize;
    if depth >= MAX_DEPTH {
        stack.overflow += 1;
        bump(|c| &mut c.depth_overflow);
        return;
    }
    stack.frames[depth] = Frame {
        start_ns: now,
        target,
        boundary,
        thread,
    };
    stack.depth = depth as u32 + 1;
}

/// Pops the innermost active frame of `boundary` and emits its call record.
pub fn leave(boundary: u32) {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;

    let Some(stack) = CALL_STACKS.get_ptr_mut(tid) else {
        bump(|c| &mut c.unmatched_return);
        return;
    };
    // SAFETY: as in enter.
    let stack = unsafe { &mut *stack };
    if stack.overflow > 0 {
        // The innermost active calls are the ones that did not fit; this return is theirs.
        stack.overflow -= 1;
        return;
    }

    // Find the innermost active frame of this boundary. Frames above it were entered but
    // never returned through their return probe (longjmp, unwinding): drop them.
    let depth = stack.depth as usize;
    let mut found = None;
    for i in 0..MAX_DEPTH {
        if i >= depth {
            break;
        }
        let idx = depth - 1 - i;
        if idx < MAX_DEPTH && stack.frames[idx].boundary == boundary {
            found = Some(idx);
            break;
        }
    }
    let Some(idx) = found else {
        // Entered before the entry probe was attached.
        bump(|c| &mut c.unmatched_return);
        return;
    };
    if depth > idx + 1 {
        add((depth - idx - 1) as u64, |c| &mut c.abandoned);
    }
    let Some(frame) = stack.frames.get(idx).copied() else {
        return;
    };
    let parent = match idx.checked_sub(1).and_then(|p| stack.frames.get(p)) {
        Some(parent) => parent.boundary,
        None => NO_BOUNDARY,
    };
    stack.depth = idx as u32;

    let record = CallRecord {
        start_ns: frame.start_ns,
        duration_ns: now.saturating_sub(frame.start_ns),
        target: frame.target,
        boundary,
        parent,
        pid: (pid_tgid >> 32) as u32,
        tid,
        depth: idx as u32 + 1,
        thread: frame.thread,
    };
    // Never wake the reader: a wakeup per record costs an irq_work and a context switch
    // per traced call (bench: +1.1 µs), and even asking how full the buffer is
    // (bpf_ringbuf_query) reads a cache line userspace writes (+0.2 µs). Userspace drains
    // on a 10 ms timer instead; 8 MiB lasts 170 ms at 1 M calls/s.
    if CALL_RECORDS
        .output::<CallRecord>(&record, BPF_RB_NO_WAKEUP.into())
        .is_err()
    {
        bump(|c| &mut c.dropped);
    }
}

/// This thread's stack, created empty on its first traced call.
fn stack_of(tid: u32) -> Option<*mut CallStack> {
    if let Some(stack) = CALL_STACKS.get_ptr_mut(tid) {
        return Some(stack);
    }
    let empty = CallStack {
        depth: 0,
        overflow: 0,
        frames: [Frame::default(); MAX_DEPTH],
    };
    // BPF_NOEXIST: never clobber a stack another CPU created for the same tid meanwhile.
    CALL_STACKS.insert(tid, empty, 1).ok()?;
    CALL_STACKS.get_ptr_mut(tid)
}
