//! The processes a recording traces: existing pids, a command started suspended, or all.

use std::{
    env,
    ffi::CString,
    fs, io,
    num::NonZeroU32,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use super::ProbeError;

/// Checks that `pid` names a live process (never 0, which the kernel reads as "any").
pub fn check_pid(pid: u32) -> Result<NonZeroU32, ProbeError> {
    NonZeroU32::new(pid)
        .filter(|_| Path::new(&format!("/proc/{pid}")).exists())
        .ok_or(ProbeError::NoSuchProcess { pid })
}

/// Checks that `pid` is a live user process, one that runs code of its own: not a kernel
/// thread such as kthreadd (pid 2), whose "libraries" would come from somewhere else.
pub fn check_target(pid: u32) -> Result<NonZeroU32, ProbeError> {
    let nonzero = check_pid(pid)?;
    if is_kernel_thread(pid) {
        return Err(ProbeError::KernelThread {
            pid,
            comm: comm(pid),
        });
    }
    Ok(nonzero)
}

pub use super::process::comm;
use super::process::is_kernel_thread;

/// Finds `command` the way execvp would: as a path if it has a slash, else in $PATH.
pub fn find_program(command: &str) -> Result<PathBuf, ProbeError> {
    let not_found = || ProbeError::CommandNotFound {
        command: command.to_owned(),
    };
    let candidates: Vec<PathBuf> = if command.contains('/') {
        vec![PathBuf::from(command)]
    } else {
        env::var_os("PATH")
            .map(|paths| {
                env::split_paths(&paths)
                    .map(|dir| dir.join(command))
                    .collect()
            })
            .unwrap_or_default()
    };
    let found = candidates
        .into_iter()
        .find(|p| p.is_file())
        .and_then(|p| fs::canonicalize(p).ok())
        .ok_or_else(not_found)?;
    let executable = fs::metadata(&found).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt as _;
        m.permissions().mode() & 0o111 != 0
    });
    if !executable {
        return Err(ProbeError::NotExecutable { path: found });
    }
    Ok(found)
}

/// A child process forked and held before `exec` until the probes are in place, so
/// that nothing it runs escapes them.
pub struct Suspended {
    pid: NonZeroU32,
    gate: Option<OwnedFd>,
    reaped: bool,
}

impl Suspended {
    /// Forks a child that waits on a pipe, then execs `program` (found by [`find_program`])
    /// with arguments `argv` (`argv[0]` included). Call before any thread is
    /// started: after fork the child only runs async-signal-safe code. With
    /// `stdout_to_stderr`, the child's standard output goes to our standard error.
    pub fn spawn(
        program: &Path,
        argv: &[String],
        stdout_to_stderr: bool,
    ) -> Result<Self, ProbeError> {
        let spawn_err = |source| ProbeError::Spawn {
            command: program.display().to_string(),
            source,
        };
        let program = CString::new(program.as_os_str().as_bytes())
            .map_err(|_| spawn_err(io::Error::other("NUL byte in command")))?;
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| spawn_err(io::Error::other("NUL byte in an argument")))?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());

        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array we pass.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(spawn_err(io::Error::last_os_error()));
        }
        // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };

        // SAFETY: fork has no preconditions; the child branch below only calls
        // async-signal-safe functions (close, read, execv, _exit) on memory prepared before.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(spawn_err(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: child side; see above. `program` and `arg_ptrs` stay alive (the
            // child's copy of our memory) until execv replaces the image.
            unsafe {
                libc::close(write_end.as_raw_fd());
                // Should xlperf die (even by SIGKILL) while the dynamic-linker probe has
                // this process stopped, the kernel resumes it. Kept across execve.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGCONT);
                if stdout_to_stderr {
                    libc::dup2(2, 1);
                }
                let mut byte = 0u8;
                let n = libc::read(read_end.as_raw_fd(), (&raw mut byte).cast(), 1);
                if n == 1 {
                    libc::execv(program.as_ptr(), arg_ptrs.as_ptr());
                }
                libc::_exit(127);
            }
        }
        drop(read_end);
        Ok(Self {
            // fork returned a positive pid (negative and 0 are handled above).
            pid: NonZeroU32::new(pid as u32)
                .ok_or_else(|| spawn_err(io::Error::other("fork returned pid 0 to the parent")))?,
            gate: Some(write_end),
            reaped: false,
        })
    }

    pub fn pid(&self) -> NonZeroU32 {
        self.pid
    }

    fn raw_pid(&self) -> libc::pid_t {
        self.pid.get() as libc::pid_t
    }

    /// Lets the child exec its program.
    pub fn release(&mut self) -> io::Result<()> {
        if let Some(gate) = self.gate.take() {
            let byte = 1u8;
            // SAFETY: writes one byte from a valid local to a pipe fd we own.
            let n = unsafe { libc::write(gate.as_raw_fd(), (&raw const byte).cast(), 1) };
            if n != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Reaps the child if it has exited; returns its status the way a shell reports it
    /// (exit code, or 128 + signal number).
    pub fn try_wait(&mut self) -> Option<i32> {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.raw_pid(), &mut status, libc::WNOHANG) };
        if r != self.raw_pid() {
            return None;
        }
        self.reaped = true;
        Some(shell_status(status))
    }

    /// Ends the child if it still runs (SIGTERM, then SIGKILL after a grace period) and
    /// returns its status.
    pub fn finish(&mut self) -> Option<i32> {
        if self.reaped {
            return None;
        }
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        self.gate = None;
        // SAFETY: signals our own, not yet reaped child. SIGCONT: a child stopped by the
        // dynamic-linker probe must run to handle the SIGTERM.
        unsafe {
            libc::kill(self.raw_pid(), libc::SIGTERM);
            libc::kill(self.raw_pid(), libc::SIGCONT);
        }
        for _ in 0..100 {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: as above.
        unsafe { libc::kill(self.raw_pid(), libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: blocking wait on our own child.
        unsafe { libc::waitpid(self.raw_pid(), &mut status, 0) };
        self.reaped = true;
        Some(shell_status(status))
    }
}

impl Drop for Suspended {
    /// A child never released (an error happened while attaching) must not run untraced;
    /// a released one may be stopped by the dynamic-linker probe and must not stay so.
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if self.gate.is_some() {
            // SAFETY: kill and reap our own child.
            unsafe {
                libc::kill(self.raw_pid(), libc::SIGKILL);
                libc::waitpid(self.raw_pid(), std::ptr::null_mut(), 0);
            }
        } else {
            // SAFETY: signals our own, not yet reaped child.
            unsafe { libc::kill(self.raw_pid(), libc::SIGCONT) };
        }
    }
}

fn shell_status(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        status
    }
}

/// A pidfd: becomes readable when the process exits.
pub fn pidfd(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspended_child_runs_only_when_released() {
        let mut child = Suspended::spawn(
            &find_program("sh").expect("sh"),
            &["sh".into(), "-c".into(), "exit 7".into()],
            false,
        )
        .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(child.try_wait(), None, "the child must wait for release");
        child.release().expect("release");
        let mut status = None;
        for _ in 0..500 {
            status = child.try_wait();
            if status.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(status, Some(7));
    }

    #[test]
    fn missing_command_and_pid() {
        assert!(matches!(
            find_program("no-such-command-xlperf"),
            Err(ProbeError::CommandNotFound { .. })
        ));
        assert!(check_pid(std::process::id()).is_ok());
        assert!(check_target(std::process::id()).is_ok());
        assert!(matches!(
            check_target(2),
            Err(ProbeError::KernelThread { .. } | ProbeError::NoSuchProcess { .. })
        ));
        assert!(check_pid(0).is_err());
        assert!(check_pid(u32::MAX).is_err());
    }
}
