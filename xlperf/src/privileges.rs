//! Whether this process may load and attach eBPF programs.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// `Ok(description)` when eBPF tracing is allowed, else `Err(how to fix it)`.
pub fn check() -> Result<String, String> {
    let caps = crate::probe::proc::process::own_capabilities();
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if has(caps, CAP_SYS_ADMIN) || has(caps, CAP_BPF) && has(caps, CAP_PERFMON) {
        Ok(if euid == 0 {
            "running as root".into()
        } else {
            format!("uid {euid} with CAP_BPF and CAP_PERFMON")
        })
    } else {
        Err(format!(
            "xlperf needs root or CAP_BPF + CAP_PERFMON to load eBPF programs (running as uid {euid} without them): run it with sudo"
        ))
    }
}
