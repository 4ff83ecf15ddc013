//! The `--alloc` and `--sched` workloads, from tests/workloads/c: libxlalloc.so
//! (xl_alloc.c: functions that allocate, map, sleep, spin and block in known ways),
//! alloc_driver (calls them by mode, see alloc_driver.c) and xl_waker (wakes a reader
//! blocked on a FIFO), plus what their tests read from the summary.

use std::{
    ffi::CString,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use serde_json::Value;

use crate::{build_dir, run_ok, workload_src};

/// The built workloads.
pub struct AllocWorkloads {
    /// libxlalloc.so (xl_alloc.c).
    pub lib: PathBuf,
    /// alloc_driver, linked against libxlalloc.so.
    pub driver: PathBuf,
    /// xl_waker (comm "xl_waker").
    pub waker: PathBuf,
}

/// Builds the workloads once per test binary (gcc). Everything is linked with
/// `-z now`: no lazy binding (the dynamic linker resolving a symbol on its first call)
/// happens inside a crossing.
pub fn alloc_workloads() -> &'static AllocWorkloads {
    static ONCE: OnceLock<AllocWorkloads> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = build_dir("alloc");
        let c = workload_src("c");
        let lib = dir.join("libxlalloc.so");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-g", "-shared", "-fPIC", "-Wl,-z,now", "-o"])
                .arg(&lib)
                .arg(c.join("xl_alloc.c")),
        );
        let driver = dir.join("alloc_driver");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-g", "-Wl,-z,now", "-o"])
                .arg(&driver)
                .arg(c.join("alloc_driver.c"))
                .arg(format!("-L{}", dir.display()))
                .args(["-lxlalloc", "-lpthread"])
                .arg(format!("-Wl,-rpath,{}", dir.display())),
        );
        let waker = dir.join("xl_waker");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-g", "-o"])
                .arg(&waker)
                .arg(c.join("xl_waker.c")),
        );
        AllocWorkloads { lib, driver, waker }
    })
}

/// `LIB:GLOB` for `--ffi`, with LIB the path of libxlalloc.so.
pub fn ffi(glob: &str) -> String {
    format!("{}:{glob}", crate::s(&alloc_workloads().lib))
}

/// An alloc_driver started with `--wait`: it has printed "ready" and waits for
/// [`release`](Self::release). Killed when dropped.
pub struct WaitingAlloc {
    pub child: Child,
    stdin: Option<ChildStdin>,
}

impl WaitingAlloc {
    /// Starts `alloc_driver ARGS... --wait` and waits for its "ready".
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables (e.g. LD_PRELOAD).
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(&alloc_workloads().driver)
            .args(args)
            .envs(env.iter().copied())
            .arg("--wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start alloc_driver");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read ready");
        assert_eq!(
            line.trim(),
            "ready",
            "alloc_driver {args:?} did not get ready"
        );
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the driver do its calls (does not wait for them).
    pub fn release(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n").expect("write go");
        }
    }

    /// Releases the driver if needed and waits for it to exit successfully.
    pub fn finish(&mut self) {
        self.release();
        let status = self.child.wait().expect("wait alloc_driver");
        assert!(status.success(), "alloc_driver failed: {status}");
    }
}

impl Drop for WaitingAlloc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process that is killed when dropped: a test that fails midway leaves
/// nothing running.
pub struct Reaped(Option<Child>);

impl Reaped {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().expect("child").id()
    }

    /// Waits for the child to exit (still killed on drop if this panics).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.0.as_mut().expect("child").wait().expect("wait child")
    }

    /// The child, no longer killed on drop.
    pub fn take(mut self) -> Child {
        self.0.take().expect("child")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A new directory holding one FIFO, removed when dropped.
pub struct Fifo {
    dir: PathBuf,
    pub path: PathBuf,
}

impl Fifo {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xlperf-fifo-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create FIFO dir");
        let path = dir.join("fifo");
        let c = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(
            rc,
            0,
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Self { dir, path }
    }
}

impl Default for Fifo {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The number at `key` of `v`, which must be there.
pub fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v:#}"))
}

/// The `processes[]` entry of `pid`.
pub fn process(summary: &Value, pid: u32) -> Option<&Value> {
    summary["processes"]
        .as_array()?
        .iter()
        .find(|p| p["pid"] == pid)
}

/// The `threads[]` entry of thread `tid` of process `pid`.
pub fn thread(summary: &Value, pid: u32, tid: u32) -> Option<&Value> {
    summary["threads"]
        .as_array()?
        .iter()
        .find(|t| t["pid"] == pid && t["tid"] == tid)
}

/// The row of `function` of libxlalloc.so in process `pid`, which must be there.
pub fn alloc_row<'a>(summary: &'a Value, function: &str, pid: u32) -> &'a Value {
    crate::row(summary, function, Some(pid))
        .unwrap_or_else(|| panic!("no {function} row for pid {pid}: {summary:#}"))
}

/// The pid of the traced command of a spawn-mode summary: the pid of its rows, which
/// must all be the same.
pub fn only_pid(summary: &Value) -> u32 {
    let rows = summary["boundaries"].as_array().expect("boundaries");
    let pid = rows
        .first()
        .unwrap_or_else(|| panic!("no rows: {summary:#}"))["pid"]
        .as_u64()
        .expect("pid");
    assert!(
        rows.iter().all(|r| r["pid"] == pid),
        "rows of several pids: {summary:#}"
    );
    u32::try_from(pid).expect("pid fits u32")
}

/// Runs `xlperf record --json ARGS`; asserts success and no drops; returns the
/// summary and xlperf's stderr (which carries the command's own stdout with --json).
pub fn record_json_stderr(args: &[&str]) -> (Value, String) {
    let mut full = vec!["record", "--json"];
    full.extend_from_slice(args);
    let out = crate::xlperf(&full);
    let summary = crate::summary_of(&out);
    assert_eq!(summary["schema_version"], 2);
    assert_eq!(summary["dropped"], 0, "records were dropped: {summary:#}");
    (summary, String::from_utf8_lossy(&out.stderr).into_owned())
}
