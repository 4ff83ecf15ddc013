//! Per-thread stacks of active traced calls, shared by every probe family: an entry
//! probe pushes a frame, the matching return probe pops it and emits one `CallRecord`.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use xlperf_common::{
    COUNTERS_SLOT, CallRecord, CallStack, Cost, CostedCallRecord, Counters, MAX_DEPTH, NO_BOUNDARY,
    ProbeTime, probe_cookie,
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

/// An all-zero stack, never written: new threads' stacks are copied from it because a
/// `CallStack` is too large for the 512-byte BPF stack.
#[map]
static STACK_TEMPLATE: Array<CallStack> = Array::with_max_entries(1, 0);

/// Processes whose threads the tracepoint programs (scheduler, mmap) follow; uprobes are
/// attached per process and need no filter.
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

pub fn is_target(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence, never read through.
    unsafe { TARGETS.get(&tgid) }.is_some()
}

pub fn bump(field: impl FnOnce(&mut Counters) -> &mut u64) {
    add(1, field);
}

pub fn add(n: u64, field: impl FnOnce(&mut Counters) -> &mut u64) {
    if let Some(counters) = FFI_COUNTERS.get_ptr_mut(COUNTERS_SLOT) {
        // SAFETY: the pointer comes from the map lookup and is valid for this program run;
        // the slot is per-CPU and programs do not migrate mid-run, so there is no race.
        *field(unsafe { &mut *counters }) += n;
    }
}

/// Pushes a frame for a call of `boundary` (of function `target`, when the probe knows
/// it) on the current thread's stack.
pub fn enter(boundary: u32, target: u64, thread: u32) {
    push(boundary, target, thread, 0);
}

/// Pushes a frame for a call of kernel function `boundary` (`--kfunc`).
pub fn enter_kernel(boundary: u32) {
    push(boundary, 0, xlperf_common::thread_kind::UNCLASSIFIED, 1);
}

#[inline(always)]
fn push(boundary: u32, target: u64, thread: u32, kernel: u32) {
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();

    let Some(stack) = stack_of(pid_tgid as u32, (pid_tgid >> 32) as u32) else {
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
    // A kernel function's record carries the NIF address of the crossing it runs in,
    // which names that crossing when it is the NIF dispatch probes'.
    let target = if kernel != 0 {
        innermost_crossing(stack)
            .and_then(|i| stack.frames.get(opaque(i)))
            .map_or(0, |f| f.target)
    } else {
        target
    };
    // Only the header: `cost` stays stale until an alloc or sched program marks the
    // frame costed (see `top_cost`).
    let frame = &mut stack.frames[depth];
    frame.start_ns = now;
    frame.target = target;
    frame.boundary = boundary;
    frame.thread = thread;
    frame.costed = 0;
    frame.kernel = kernel;
    frame.nested = ProbeTime::default();
    stack.depth = depth as u32 + 1;
}

/// Charges one hit of the probe whose cookie is `cookie` to the thread (what tracing
/// added to it) and to its innermost active call, whose measured duration it lands inside.
pub fn charge_probe(stack: &mut CallStack, cookie: u64) {
    let total = probe_cookie::total_ns(cookie);
    stack.thread.probe.add(cookie, total);
    let depth = stack.depth as usize;
    if depth > 0
        && let Some(frame) = stack.frames.get_mut(opaque(depth - 1))
    {
        frame.nested.add(cookie, total);
    }
}

/// Pops the innermost active frame of `boundary` and emits its call record. `cookie` is
/// the return probe's (`probe_cookie`): what this probe pair costs.
pub fn leave(boundary: u32, cookie: u64) {
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
        // The innermost active calls are the ones that did not fit; this return is theirs,
        // and its probes' time lands inside the innermost frame that did fit.
        stack.overflow -= 1;
        charge_probe(stack, cookie);
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
        if stack
            .frames
            .get(opaque(idx))
            .is_some_and(|f| f.boundary == boundary)
        {
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
        // What the abandoned calls' nested probes cost ran inside this one.
        let mut lost = ProbeTime::default();
        for i in 0..MAX_DEPTH {
            let j = idx + 1 + i;
            if j >= depth {
                break;
            }
            if let Some(f) = stack.frames.get(opaque(j)) {
                lost.add_all(&f.nested);
            }
        }
        if let Some(f) = stack.frames.get_mut(opaque(idx)) {
            f.nested.add_all(&lost);
        }
    }
    let Some(nested) = stack.frames.get(idx).map(|f| f.nested) else {
        return;
    };
    let total = probe_cookie::total_ns(cookie);
    stack.thread.probe.add(cookie, total);
    let parent = if idx > 0
        && let Some(parent) = stack.frames.get_mut(opaque(idx - 1))
    {
        // This call's probes, and all those nested in it, ran inside the parent.
        parent.nested.add(cookie, total);
        parent.nested.add_all(&nested);
        parent.boundary
    } else {
        NO_BOUNDARY
    };
    let Some(frame) = stack.frames.get(idx) else {
        return;
    };
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
        probe: own_and(cookie, nested),
    };
    if frame.costed != 0 {
        emit_costed(&record, &frame.cost);
        stack.depth = idx as u32;
        return;
    }
    stack.depth = idx as u32;
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

/// Pops the innermost kernel function's frame (`--kfunc`): kernel calls on a thread
/// return innermost first, so the return probe needs no name. `cost` is the kprobe
/// pair's `probe_cookie` without a boundary.
pub fn leave_kernel(cost: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(stack) = CALL_STACKS.get_ptr_mut(tid) else {
        bump(|c| &mut c.unmatched_return);
        return;
    };
    // SAFETY: as in enter.
    let stack = unsafe { &*stack };
    let boundary = if stack.overflow > 0 {
        // `leave` takes it as one of the calls that did not fit.
        NO_BOUNDARY
    } else {
        let depth = stack.depth as usize;
        match stack.frames.get(opaque(depth.wrapping_sub(1))) {
            Some(top) if depth > 0 && top.kernel != 0 => top.boundary,
            // Its entry was not seen (attached meanwhile, or skipped while another
            // program ran on this CPU): never pop a crossing for it.
            _ => {
                bump(|c| &mut c.unmatched_return);
                return;
            }
        }
    };
    leave(boundary, cost | u64::from(boundary));
}

/// A call's own in-call probe time (from its return probe's cookie) plus what was nested.
#[inline(always)]
fn own_and(cookie: u64, mut nested: ProbeTime) -> ProbeTime {
    nested.add(cookie, probe_cookie::in_call_ns(cookie));
    nested
}

/// The ring every record kind goes through.
pub fn records() -> &'static RingBuf {
    &CALL_RECORDS
}

fn emit_costed(record: &CallRecord, cost: &Cost) {
    match CALL_RECORDS.reserve::<CostedCallRecord>(0) {
        Some(mut entry) => {
            entry.write(CostedCallRecord {
                call: *record,
                cost: *cost,
            });
            entry.submit(BPF_RB_NO_WAKEUP.into());
        }
        None => bump(|c| &mut c.dropped),
    }
}

/// Thread `tid`'s stack, created empty (owned by process `tgid`) when it has none.
pub fn stack_of(tid: u32, tgid: u32) -> Option<*mut CallStack> {
    if let Some(stack) = CALL_STACKS.get_ptr_mut(tid) {
        return Some(stack);
    }
    new_stack(tid, tgid)
}

/// Creates thread `tid`'s stack; `tgid` 0 when it is not known yet.
pub fn new_stack(tid: u32, tgid: u32) -> Option<*mut CallStack> {
    let empty = STACK_TEMPLATE.get(0)?;
    // BPF_NOEXIST: never clobber a stack another CPU created for the same tid meanwhile.
    let _ = CALL_STACKS.insert(tid, empty, 1);
    let stack = CALL_STACKS.get_ptr_mut(tid)?;
    // SAFETY: a pointer to this thread's map value, from the lookup just made.
    let thread = unsafe { &mut (*stack).thread };
    thread.tgid = tgid;
    // The name is current's only when the state is created from the thread itself (not
    // for a new thread announced by its creator).
    if bpf_get_current_pid_tgid() as u32 == tid {
        thread.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    Some(stack)
}

/// Thread `tid`'s stack if it has one.
pub fn existing_stack(tid: u32) -> Option<*mut CallStack> {
    CALL_STACKS.get_ptr_mut(tid)
}

/// Where an allocation or scheduler event on a thread is charged: its innermost active
/// crossing, or its "outside any crossing" bucket. Also returns that crossing's boundary
/// and target (`NO_BOUNDARY`, 0 outside).
pub fn top_cost(stack: &mut CallStack) -> (&mut Cost, u32, u64) {
    if let Some(idx) = innermost_crossing(stack)
        && let Some(frame) = stack.frames.get_mut(opaque(idx))
    {
        if frame.costed == 0 {
            frame.cost = Cost::default();
            frame.costed = 1;
        }
        return (&mut frame.cost, frame.boundary, frame.target);
    }
    (&mut stack.thread.outside, NO_BOUNDARY, 0)
}

/// The innermost active crossing of a thread: its boundary and NIF target
/// (`NO_BOUNDARY`, 0 outside any).
pub fn top_crossing(stack: &CallStack) -> (u32, u64) {
    if let Some(idx) = innermost_crossing(stack)
        && let Some(frame) = stack.frames.get(opaque(idx))
    {
        return (frame.boundary, frame.target);
    }
    (NO_BOUNDARY, 0)
}

/// Index of the innermost frame that is a crossing, not a kernel function: what a
/// kernel function does (allocate, block) is charged to
/// the crossing it runs in, whose figures stay inclusive of it.
#[inline(always)]
fn innermost_crossing(stack: &CallStack) -> Option<usize> {
    let depth = stack.depth as usize;
    for i in 0..MAX_DEPTH {
        if i >= depth {
            break;
        }
        let idx = depth - 1 - i;
        if stack.frames.get(opaque(idx)).is_some_and(|f| f.kernel == 0) {
            return Some(idx);
        }
    }
    None
}

/// `index`, in a form LLVM cannot relate to other values. An index one below another
/// (the parent frame, the top frame at depth - 1) would otherwise be compiled as an address
/// derived from the other's with a negative offset, which the verifier cannot bound and
/// rejects; an opaque index gets its own bounds check.
#[inline(always)]
fn opaque(index: usize) -> usize {
    // SAFETY: a volatile read of a local variable, valid and initialised.
    unsafe { core::ptr::read_volatile(&index) }
}
