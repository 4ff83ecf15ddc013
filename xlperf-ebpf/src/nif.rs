//! Erlang/Elixir NIF probes.
//!
//! Dispatch mode hooks the two functions of the VM that call every NIF: one probe pair
//! covers all NIFs of all libraries, including libraries loaded later. The records carry
//! the NIF's address as `target`; userspace names it from the libraries' NIF tables and
//! drops the VM's own trampolines.
//!
//! Fallback mode (`nif_fptr_*`) puts a probe pair on each NIF function itself, with its
//! boundary id as the cookie, like the FFI probes.
//!
//! Every NIF frame records the class of its thread (normal, dirty CPU, dirty I/O
//! scheduler), because a long NIF only hurts on a normal scheduler.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_probe_read_user},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use xlperf_common::{NIF_DISPATCH_DIRTY, NIF_DISPATCH_NORMAL, thread_kind};

use crate::{ffi::cookie, stack};

/// `beam_jit_call_nif(Process *c_p, ErtsCodePtr I, Eterm *reg, BeamJitNifF *fp, ...)`:
/// the NIF is the fourth argument.
#[uprobe]
pub fn nif_call_entry(ctx: ProbeContext) -> u32 {
    let fp: u64 = ctx.arg(3).unwrap_or(0);
    stack::enter(NIF_DISPATCH_NORMAL, fp, thread());
    0
}

#[uretprobe]
pub fn nif_call_exit(_ctx: RetProbeContext) -> u32 {
    stack::leave(NIF_DISPATCH_NORMAL);
    0
}

/// `erts_call_dirty_nif(ErtsSchedulerData *esdp, Process *c_p, ErtsCodePtr I, Eterm *reg)`:
/// the NIF's address is stored at `I + offset`, the offset being the cookie's high half.
#[uprobe]
pub fn nif_dirty_entry(ctx: ProbeContext) -> u32 {
    let offset = cookie(&ctx) >> 32;
    let code: u64 = ctx.arg(2).unwrap_or(0);
    // SAFETY: bpf_probe_read_user copies from user memory and fails cleanly on a bad
    // address; the pointer is never dereferenced directly.
    let fp = unsafe { bpf_probe_read_user(code.wrapping_add(offset) as *const u64) }.unwrap_or(0);
    stack::enter(NIF_DISPATCH_DIRTY, fp, thread());
    0
}

#[uretprobe]
pub fn nif_dirty_exit(_ctx: RetProbeContext) -> u32 {
    stack::leave(NIF_DISPATCH_DIRTY);
    0
}

/// Fallback: a probe on the NIF function itself; the cookie is its boundary id.
#[uprobe]
pub fn nif_fptr_entry(ctx: ProbeContext) -> u32 {
    stack::enter(cookie(&ctx) as u32, 0, thread());
    0
}

#[uretprobe]
pub fn nif_fptr_exit(ctx: RetProbeContext) -> u32 {
    stack::leave(cookie(&ctx) as u32);
    0
}

fn thread() -> u32 {
    match bpf_get_current_comm() {
        Ok(comm) => thread_kind::classify(&comm),
        Err(_) => thread_kind::OTHER,
    }
}
