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
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::{map, uprobe, uretprobe},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RetProbeContext},
};
use xlperf_common::{
    NIF_DISPATCH_DIRTY, NIF_DISPATCH_NORMAL, NIF_TABLE_MAX_FUNCS, NifPending, NifTableRecord,
    probe_cookie, thread_kind,
};

use crate::{ffi::cookie, stack};

/// `beam_jit_call_nif(Process *c_p, ErtsCodePtr I, Eterm *reg, BeamJitNifF *fp, ...)`:
/// the NIF is the fourth argument.
#[uprobe]
pub fn nif_call_entry(ctx: ProbeContext) -> u32 {
    let fp: u64 = ctx.arg(3).unwrap_or(0);
    stack::enter(NIF_DISPATCH_NORMAL, fp, thread());
    0
}

/// The cookie carries the pair's cost (`probe_cookie`).
#[uretprobe]
pub fn nif_call_exit(ctx: RetProbeContext) -> u32 {
    stack::leave(NIF_DISPATCH_NORMAL, cookie(&ctx));
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

/// The cookie carries the pair's cost (`probe_cookie`), not the entry's offset.
#[uretprobe]
pub fn nif_dirty_exit(ctx: RetProbeContext) -> u32 {
    stack::leave(NIF_DISPATCH_DIRTY, cookie(&ctx));
    0
}

/// Fallback: a probe on the NIF function itself; the cookie is its boundary id.
#[uprobe]
pub fn nif_fptr_entry(ctx: ProbeContext) -> u32 {
    stack::enter(probe_cookie::boundary(cookie(&ctx)), 0, thread());
    0
}

#[uretprobe]
pub fn nif_fptr_exit(ctx: RetProbeContext) -> u32 {
    let cookie = cookie(&ctx);
    stack::leave(probe_cookie::boundary(cookie), cookie);
    0
}

fn thread() -> u32 {
    match bpf_get_current_comm() {
        Ok(comm) => thread_kind::classify(&comm),
        Err(_) => thread_kind::OTHER,
    }
}

/// NIF library tables, one record per library the VM loads (rare: with wakeups).
#[map]
static NIF_TABLES: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// The library each thread's `erlang:load_nif/2` is loading, from `erts_load_nif`'s
/// entry to its return.
#[map]
static NIF_PENDING: LruHashMap<u32, NifPending> = LruHashMap::with_max_entries(1024, 0);

/// Room to build an empty pending load: too big for the 512-byte BPF stack.
#[map]
static NIF_PENDING_SCRATCH: PerCpuArray<NifPending> = PerCpuArray::with_max_entries(1, 0);

/// `erts_load_nif` starts a load. Inits outside a load (the VM's built-in NIFs, at boot)
/// find no pending load and are ignored.
#[uprobe]
pub fn nif_load_entry(_ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(scratch) = NIF_PENDING_SCRATCH.get_ptr_mut(0) {
        // SAFETY: the per-CPU slot is valid for this program run and not shared.
        let pending = unsafe { &mut *scratch };
        pending.entry = 0;
        pending.path.bytes[0] = 0;
        let _ = NIF_PENDING.insert(tid, *pending, 0);
    }
    0
}

/// `erts_sys_ddll_open_noext(char *dlname, ...)`: the NIF library file being opened.
/// Only the first open of a load counts: a library's own load callback may open more
/// libraries (OTP's crypto opens crypto_callback.so) through the same functions.
#[uprobe]
pub fn nif_open_entry(ctx: ProbeContext) -> u32 {
    let path: u64 = ctx.arg(0).unwrap_or(0);
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(pending) = NIF_PENDING.get_ptr_mut(tid) {
        // SAFETY: a valid map value pointer for this program run; only this thread
        // uses its own entry.
        let pending = unsafe { &mut *pending };
        if pending.path.bytes[0] == 0
            // SAFETY: reads user memory through the helper, which fails cleanly.
            && unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut pending.path.bytes) }
                .is_err()
        {
            pending.path.bytes[0] = 0;
        }
    }
    0
}

/// `erts_sys_ddll_call_nif_init(void *function)` returns the library's `ErlNifEntry*`;
/// the first of a load is the library's, as for opens. The table's names cannot be read
/// yet (their pages may not be faulted in, and a uprobe cannot fault), so keep the
/// pointer until the loader has read them.
#[uretprobe]
pub fn nif_init_exit(ctx: RetProbeContext) -> u32 {
    let entry: u64 = ctx.ret();
    let tid = bpf_get_current_pid_tgid() as u32;
    if let Some(pending) = NIF_PENDING.get_ptr_mut(tid) {
        // SAFETY: as in nif_open_entry.
        let pending = unsafe { &mut *pending };
        if pending.entry == 0 {
            pending.entry = entry;
        }
    }
    0
}

/// `erts_load_nif` returns: it has looked up every NIF by name, so the table's strings
/// are in memory. Copy the table out while the process certainly exists.
#[uretprobe]
pub fn nif_loaded_exit(_ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(pending) = NIF_PENDING.get_ptr(tid) else {
        return 0;
    };
    // SAFETY: a valid map value pointer for this program run.
    let pending = unsafe { &*pending };
    if pending.entry != 0 {
        if let Some(mut slot) = NIF_TABLES.reserve::<NifTableRecord>(0) {
            // SAFETY: the reserved slot is ours until submit; every field written below
            // is plain data, and userspace only reads `count` functions and NUL-ended
            // strings.
            let rec = unsafe { &mut *slot.as_mut_ptr() };
            rec.path = pending.path.bytes;
            fill_table(rec, pending.entry, (pid_tgid >> 32) as u32);
            slot.submit(0);
        } else {
            stack::bump(|c| &mut c.dropped);
        }
    }
    let _ = NIF_PENDING.remove(tid);
    0
}

fn fill_table(rec: &mut NifTableRecord, entry: u64, pid: u32) {
    rec.pid = pid;
    rec.entry = entry;
    rec.count = 0;
    rec.module[0] = 0;
    // ErlNifEntry: {int major, minor; char *name; int num_of_funcs; ErlNifFunc *funcs; ...}
    // SAFETY: user memory is read through the helper only.
    let Ok(head) = (unsafe { bpf_probe_read_user(entry as *const [u64; 4]) }) else {
        return;
    };
    // SAFETY: as above.
    if unsafe { bpf_probe_read_user_str_bytes(head[1] as *const u8, &mut rec.module) }.is_err() {
        rec.module[0] = 0;
    }
    let count = head[2] as u32;
    rec.count = count;
    for i in 0..NIF_TABLE_MAX_FUNCS {
        if i as u32 >= count {
            break;
        }
        let Some(out) = rec.funcs.get_mut(i) else {
            break;
        };
        // ErlNifFunc: {char *name; unsigned arity; fptr; unsigned flags}, 32 bytes.
        // SAFETY: as above.
        let Ok(f) = (unsafe { bpf_probe_read_user((head[3] + 32 * i as u64) as *const [u64; 4]) })
        else {
            out.fptr = 0;
            continue;
        };
        out.fptr = f[2];
        out.arity = f[1] as u32;
        out.flags = f[3] as u32;
        // SAFETY: as above.
        if unsafe { bpf_probe_read_user_str_bytes(f[0] as *const u8, &mut out.name) }.is_err() {
            out.name[0] = 0;
        }
    }
}
