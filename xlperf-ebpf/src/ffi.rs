//! FFI boundary probes: a uprobe at each traced function's entry and a uretprobe at its
//! return. Both learn which boundary fired from the attach cookie, so one pair of
//! programs serves every traced function.

use aya_ebpf::{
    helpers::bpf_get_attach_cookie,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use xlperf_common::{probe_cookie, thread_kind};

use crate::stack;

#[uprobe]
pub fn ffi_entry(ctx: ProbeContext) -> u32 {
    stack::enter(
        probe_cookie::boundary(cookie(&ctx)),
        0,
        thread_kind::UNCLASSIFIED,
    );
    0
}

#[uretprobe]
pub fn ffi_exit(ctx: RetProbeContext) -> u32 {
    let cookie = cookie(&ctx);
    stack::leave(probe_cookie::boundary(cookie), cookie);
    0
}

/// The attach cookie userspace gave this probe.
pub fn cookie(ctx: &impl aya_ebpf::EbpfContext) -> u64 {
    // SAFETY: ctx.as_ptr() is the program's own context pointer, as the helper requires.
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}
