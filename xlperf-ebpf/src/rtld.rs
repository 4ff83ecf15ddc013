//! The dynamic linker's `_dl_debug_state`: a process has mapped (or is about to unmap)
//! libraries. Attached only while a library named with `--ffi` is not mapped yet, and
//! only stops processes userspace listed in `RTLD_WATCH` (see `xlperf_common::rtld`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_send_signal},
    macros::{map, uprobe},
    maps::HashMap,
    programs::ProbeContext,
};
use xlperf_common::{MapChange, SIGSTOP};

use crate::stack;

/// Processes still waiting for a library to be mapped; userspace removes a pid once
/// every library it waits for is attached, and the probe then lets it run unstopped.
#[map]
static RTLD_WATCH: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

#[uprobe]
pub fn rtld_debug_state(_ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    // SAFETY: the value is only tested for presence, never read through.
    if unsafe { RTLD_WATCH.get(&pid) }.is_none() {
        return 0;
    }
    let event = MapChange {
        // SAFETY: the helper has no preconditions.
        ns: unsafe { bpf_ktime_get_ns() },
        pid,
        tid: pid_tgid as u32,
    };
    // Wake the reader at once (flags 0): the process waits stopped until it has attached.
    if stack::records().output::<MapChange>(&event, 0).is_ok() {
        // SAFETY: the helper signals the current process; it has no other preconditions.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    0
}
