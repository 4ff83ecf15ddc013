//! `--kfunc`: a kprobe at each traced kernel function's entry and a kretprobe at its
//! return, both system-wide and filtered here to the targets' threads. Frames go on the
//! thread's crossing stack, so each kernel call's record names the crossing it ran in.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, bpf_get_func_ip},
    macros::{kprobe, kretprobe, map},
    maps::{Array, HashMap},
    programs::{ProbeContext, RetProbeContext},
};
use xlperf_common::{KFUNC_COST_SLOT, KFUNC_ENTRIES};

use crate::stack;

/// Kernel function address → its boundary id (see `xlperf_common::kfunc`).
#[map]
static KFUNCS: HashMap<u64, u32> = HashMap::with_max_entries(KFUNC_ENTRIES, 0);

/// The kprobe pair's calibrated cost, as a `probe_cookie` without a boundary.
#[map]
static KFUNC_COST: Array<u64> = Array::with_max_entries(1, 0);

#[kprobe]
pub fn kfunc_entry(ctx: ProbeContext) -> u32 {
    try_kfunc_entry(&ctx);
    0
}

#[kretprobe]
pub fn kfunc_exit(_ctx: RetProbeContext) -> u32 {
    try_kfunc_exit();
    0
}

fn try_kfunc_entry(ctx: &ProbeContext) {
    if !stack::is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return;
    }
    // SAFETY: ctx.as_ptr() is this kprobe program's own context, as the helper requires.
    let ip = unsafe { bpf_get_func_ip(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once.
    let Some(&boundary) = (unsafe { KFUNCS.get(&ip) }) else {
        // Not a function userspace named: its return finds no kernel frame and is
        // counted as unmatched.
        return;
    };
    stack::enter_kernel(boundary);
}

fn try_kfunc_exit() {
    if !stack::is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        return;
    }
    let cost = KFUNC_COST.get(KFUNC_COST_SLOT).copied().unwrap_or(0);
    stack::leave_kernel(cost);
}
