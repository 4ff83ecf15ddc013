//! Allocator probes: the malloc family (and enif_alloc) at entry and return, free at
//! entry. Each allocation and free is charged to the thread's innermost active crossing
//! (`stack::top_cost`); blocks not yet freed wait in `LIVE_BLOCKS` with the crossing that
//! allocated them, so userspace can report bytes still live.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use xlperf_common::{AllocConfig, CallStack, LiveBlock, LiveKey, alloc_kind};

use crate::{ffi::cookie, stack};

/// Blocks tracked at once unless userspace sets `--alloc-live-max`. LRU: when full, the
/// oldest block is forgotten; userspace counts those from `Counters::live_*`.
const LIVE_BLOCKS_MAX: u32 = 262_144;

#[map]
static LIVE_BLOCKS: LruHashMap<LiveKey, LiveBlock> =
    LruHashMap::with_max_entries(LIVE_BLOCKS_MAX, 0);

/// `--alloc-sample` in bytes (0: off), set by userspace at load time. A read-only global
/// rather than a map: it is read on every allocation and free, and a map lookup costs.
#[unsafe(no_mangle)]
static ALLOC_SAMPLE_BYTES: u64 = 0;

fn config() -> AllocConfig {
    AllocConfig {
        // SAFETY: a volatile read of a global the loader initialised; it never changes.
        sample_bytes: unsafe { core::ptr::read_volatile(&ALLOC_SAMPLE_BYTES) },
    }
}

#[uprobe]
pub fn malloc_entry(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(0).unwrap_or(0);
    begin(alloc_kind::PLAIN, size, 0);
    0
}

#[uprobe]
pub fn calloc_entry(ctx: ProbeContext) -> u32 {
    let n: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    // Overflow makes calloc fail (NULL), and failed calls are not counted.
    begin(alloc_kind::PLAIN, n.wrapping_mul(size), 0);
    0
}

/// aligned_alloc(align, size), memalign(align, size).
#[uprobe]
pub fn memalign_entry(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(1).unwrap_or(0);
    begin(alloc_kind::PLAIN, size, 0);
    0
}

/// posix_memalign(memptr, align, size).
#[uprobe]
pub fn posix_memalign_entry(ctx: ProbeContext) -> u32 {
    let memptr: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    begin(alloc_kind::POSIX_MEMALIGN, size, memptr);
    0
}

/// realloc(ptr, size), enif_realloc(ptr, size).
#[uprobe]
pub fn realloc_entry(ctx: ProbeContext) -> u32 {
    let old: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    begin(alloc_kind::REALLOC, size, old);
    0
}

/// reallocarray(ptr, n, size).
#[uprobe]
pub fn reallocarray_entry(ctx: ProbeContext) -> u32 {
    let old: u64 = ctx.arg(0).unwrap_or(0);
    let n: u64 = ctx.arg(1).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    begin(alloc_kind::REALLOC, n.wrapping_mul(size), old);
    0
}

/// Its cookie carries the whole cost of the allocator's probe pair (`probe_cookie`).
#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    let ret: u64 = ctx.ret();
    finish(ret, cookie(&ctx));
    0
}

/// free(ptr), enif_free(ptr). Its cookie carries the probe's cost (`probe_cookie`).
#[uprobe]
pub fn free_entry(ctx: ProbeContext) -> u32 {
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(stack) = stack::stack_of(pid_tgid as u32, (pid_tgid >> 32) as u32) else {
        return 0;
    };
    // SAFETY: the pointer is this thread's map value; one program runs at a time per thread.
    let stack = unsafe { &mut *stack };
    // free(NULL) costs a probe hit too.
    stack::charge_probe(stack, cookie(&ctx));
    if ptr == 0 {
        return 0;
    }
    // A free inside an allocator call (realloc freeing the old block) is that call's.
    if stack.thread.alloc_depth == 0 {
        freed(stack, (pid_tgid >> 32) as u32, ptr);
    }
    0
}

/// Notes an allocator call in progress; only the outermost one on a thread counts.
fn begin(kind: u32, size: u64, arg: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(stack) = stack::stack_of(pid_tgid as u32, (pid_tgid >> 32) as u32) else {
        return;
    };
    // SAFETY: as in free_entry.
    let thread = unsafe { &mut (*stack).thread };
    thread.alloc_depth += 1;
    if thread.alloc_depth == 1 {
        thread.alloc_kind = kind;
        thread.alloc_size = size;
        thread.alloc_arg = arg;
    }
}

fn finish(ret: u64, cookie: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(stack) = stack::existing_stack(pid_tgid as u32) else {
        return;
    };
    // SAFETY: as in free_entry.
    let stack = unsafe { &mut *stack };
    // Every allocator call's probe pair costs, nested self-calls included.
    stack::charge_probe(stack, cookie);
    let thread = &mut stack.thread;
    if thread.alloc_depth == 0 {
        // The call began before the entry probe was attached.
        return;
    }
    thread.alloc_depth -= 1;
    if thread.alloc_depth > 0 {
        return;
    }
    let (kind, size, arg) = (thread.alloc_kind, thread.alloc_size, thread.alloc_arg);
    match kind {
        alloc_kind::REALLOC => {
            // realloc(p, 0) frees p and may return NULL; a failed realloc keeps p.
            if arg != 0 && (ret != 0 || size == 0) {
                freed(stack, tgid, arg);
            }
            if ret != 0 {
                allocated(stack, tgid, pid_tgid as u32, ret, size);
            }
        }
        alloc_kind::POSIX_MEMALIGN => {
            if ret == 0 && arg != 0 {
                // SAFETY: reads user memory through the helper, which checks the access.
                if let Ok(block) = unsafe { bpf_probe_read_user(arg as *const u64) } {
                    allocated(stack, tgid, pid_tgid as u32, block, size);
                }
            }
        }
        _ => {
            if ret != 0 {
                allocated(stack, tgid, pid_tgid as u32, ret, size);
            }
        }
    }
}

fn allocated(stack: &mut CallStack, tgid: u32, tid: u32, ptr: u64, size: u64) {
    let period = config().sample_bytes;
    if period > 0 && size < period {
        // Sampling by bytes: one small block per `period` bytes is tracked.
        let left = stack.thread.sample_left;
        if left > size {
            stack.thread.sample_left = left - size;
            count_allocation(stack, size);
            return;
        }
        stack.thread.sample_left = period - (size - left);
    }
    let (boundary, target) = count_allocation(stack, size);
    let key = LiveKey { tgid, _pad: 0, ptr };
    let block = LiveBlock {
        size,
        target,
        // SAFETY: the helper has no preconditions.
        ns: unsafe { bpf_ktime_get_ns() },
        boundary,
        tid,
    };
    // Counted on the thread's state, already at hand, rather than in a per-CPU map.
    if LIVE_BLOCKS.insert(&key, &block, 0).is_ok() {
        stack.thread.live_inserted += 1;
    }
}

/// Counts are exact even when sampling: only tracking blocks costs map updates.
fn count_allocation(stack: &mut CallStack, size: u64) -> (u32, u64) {
    let (cost, boundary, target) = stack::top_cost(stack);
    cost.alloc_count += 1;
    cost.alloc_bytes += size;
    (boundary, target)
}

fn freed(stack: &mut CallStack, tgid: u32, ptr: u64) {
    let key = LiveKey { tgid, _pad: 0, ptr };
    // SAFETY: the value is copied out before the entry is removed.
    let size = unsafe { LIVE_BLOCKS.get(&key) }.map(|b| b.size);
    let config = config();
    let Some(size) = size else {
        // When sampling, most frees are of blocks never tracked: not a finding.
        if config.sample_bytes == 0 {
            stack.thread.frees_untracked += 1;
        }
        return;
    };
    if LIVE_BLOCKS.remove(&key).is_ok() {
        stack.thread.live_removed += 1;
    }
    let (count, bytes) = config.weight(size);
    let (cost, _, _) = stack::top_cost(stack);
    cost.free_count += count;
    cost.free_bytes += bytes;
}
