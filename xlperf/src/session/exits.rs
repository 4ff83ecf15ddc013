//! What ends a run: Ctrl-C and SIGTERM, a deadline, and the targets' exits.

use std::os::fd::OwnedFd;

use anyhow::{Context as _, anyhow};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
};

use crate::probe::{bpf::ring::CallRecords, proc::target};

/// How often the ring buffer is drained: the kernel side never wakes us (see stack.rs).
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Waits until records may be there (at most [`POLL_INTERVAL`]) or the run must end: a
/// signal, the `deadline`, every process of `exits`. True when it must end; either way
/// the caller drains once more.
pub async fn next(
    records: &mut CallRecords,
    signals: &mut Signals,
    deadline: Option<tokio::time::Instant>,
    exits: Option<&Exits>,
) -> anyhow::Result<bool> {
    let exited = async {
        match exits {
            Some(exits) => exits.all().await,
            None => std::future::pending().await,
        }
    };
    Ok(tokio::select! {
        waited = records.wait(POLL_INTERVAL) => {
            waited.context("reading the ring buffer")?;
            false
        }
        () = signals.any() => true,
        () = sleep_until(deadline) => true,
        () = exited => true,
    })
}

/// SIGINT and SIGTERM, caught from the moment this exists: a run ends cleanly on them
/// (probes detached, targets resumed), never killed mid-way.
pub struct Signals {
    int: Signal,
    term: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn any(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// One pidfd per process: readable once it has exited.
pub struct Exits(Vec<AsyncFd<OwnedFd>>);

impl Exits {
    pub fn watch(pids: &[u32]) -> anyhow::Result<Self> {
        let fds = pids
            .iter()
            .map(|&pid| {
                let fd =
                    target::pidfd(pid).with_context(|| format!("watching pid {pid} for exit"))?;
                // SAFETY: the OwnedFd stays open, and is the same fd, for the AsyncFd's
                // lifetime.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                    .map_err(|e| anyhow!("watching pid {pid} for exit: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self(fds))
    }

    /// Resolves once every watched process has exited; never when none is watched.
    pub async fn all(&self) {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        for fd in &self.0 {
            // A pidfd turns readable once, when its process exits, and stays so.
            let _ = fd.readable().await;
        }
    }
}

/// Resolves at `deadline`; never without one.
pub async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
