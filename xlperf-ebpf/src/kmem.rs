//! `--kmem`: kernel allocations made on a target thread (kmalloc, slab caches, pages),
//! charged to its innermost active crossing: what a crossing's system calls cost the
//! kernel's memory. Allocations in interrupt context land on whichever thread was
//! interrupted; they are rare next to syscall-driven ones.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{mmap::charge, sched::layout};

const PAGE_SIZE: u64 = 4096;

#[tracepoint]
pub fn kmalloc(ctx: TracePointContext) -> u32 {
    if let Some(layout) = layout() {
        charge_bytes(&ctx, layout.kmalloc_bytes);
    }
    0
}

#[tracepoint]
pub fn kmem_cache_alloc(ctx: TracePointContext) -> u32 {
    if let Some(layout) = layout() {
        charge_bytes(&ctx, layout.cache_alloc_bytes);
    }
    0
}

#[tracepoint]
pub fn mm_page_alloc(ctx: TracePointContext) -> u32 {
    let Some(layout) = layout() else {
        return 0;
    };
    // SAFETY: the offset comes from this tracepoint's format file; read_at checks the read.
    let order = unsafe { ctx.read_at::<u32>(layout.page_alloc_order as usize) }.unwrap_or(0);
    charge(|cost| {
        cost.kmem_count += 1;
        cost.kmem_bytes += PAGE_SIZE << (order & 31);
    });
    0
}

fn charge_bytes(ctx: &TracePointContext, offset: u32) {
    // SAFETY: as in mm_page_alloc.
    let bytes = unsafe { ctx.read_at::<u64>(offset as usize) }.unwrap_or(0);
    charge(|cost| {
        cost.kmem_count += 1;
        cost.kmem_bytes += bytes;
    });
}
