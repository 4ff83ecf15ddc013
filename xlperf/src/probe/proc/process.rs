//! Facts about a process, read from `/proc` through the `procfs` crate: its name, its
//! executable and argv[0], whether it is a kernel thread, its root, every pid, and
//! xlperf's own capabilities and memory.

use std::{
    fs,
    path::{Path, PathBuf},
};

use procfs::process::Process;

/// PF_KTHREAD in the flags of /proc/PID/stat.
const PF_KTHREAD: u32 = 0x0020_0000;

/// The command name of a process, or `?` once it is gone.
pub fn comm(pid: u32) -> String {
    // /proc/PID/comm rather than stat's copy: a name with spaces or parentheses is read
    // whole.
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn open(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok()?).ok()
}

/// Is `pid` a kernel thread (kthreadd, a worker), which runs no code of its own?
pub fn is_kernel_thread(pid: u32) -> bool {
    open(pid)
        .and_then(|p| p.stat().ok())
        .is_some_and(|stat| stat.flags & PF_KTHREAD != 0)
}

/// The executable of `pid`, as its mount namespace names it.
pub fn exe(pid: u32) -> Option<PathBuf> {
    open(pid)?.exe().ok()
}

/// The file name of a process's argv[0].
pub fn argv0(pid: u32) -> Option<String> {
    let argv = open(pid)?.cmdline().ok()?;
    let first = argv.into_iter().next()?;
    Some(first.rsplit('/').next().unwrap_or(&first).to_owned())
}

/// Every process now, in pid order.
pub fn all_pids() -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = all
        .filter_map(Result::ok)
        .filter_map(|p| u32::try_from(p.pid()).ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether `pid` is gone (or a zombie whose name can no longer be read).
pub fn is_gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists() || comm(pid) == "?"
}

/// Paths in /proc/PID/maps are in the target's mount namespace; reach them through its root.
pub fn in_mount_namespace_of(pid: u32, path: &Path) -> PathBuf {
    let same_root = match (
        fs::metadata("/proc/self/root"),
        fs::metadata(format!("/proc/{pid}/root")),
    ) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt as _;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => true,
    };
    if same_root {
        path.to_path_buf()
    } else {
        Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// A relative path as `pid` would open it, from its working directory.
pub fn in_cwd_of(pid: u32, path: &str) -> PathBuf {
    fs::canonicalize(format!("/proc/{pid}/cwd/{path}")).unwrap_or_else(|_| PathBuf::from(path))
}

/// xlperf's effective capability set (0 when unreadable).
pub fn own_capabilities() -> u64 {
    Process::myself()
        .and_then(|p| p.status())
        .map_or(0, |status| status.capeff)
}

/// xlperf's resident memory, bytes.
pub fn own_rss() -> u64 {
    Process::myself()
        .and_then(|p| p.statm())
        .map_or(0, |statm| statm.resident * procfs::page_size())
}
