//! Processes followed while a session runs: libraries they map after they start (the
//! dynamic-linker stops of a command, the rescans of a process found by name), NIF
//! libraries the VM loads, and exits.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::Session;
use crate::probe::{
    bpf::links::Links,
    pending::{self, Pending},
    proc,
};

/// A traced process.
pub(super) struct Process {
    links: Links,
    /// When it was seen gone.
    exited: Option<Instant>,
    /// `--ffi` libraries it has not mapped yet.
    pending: Option<Pending>,
    /// A target of the command line (its exit can end a run), not only a process whose
    /// records `--all` saw.
    followed: bool,
}

impl Process {
    pub(super) fn followed(links: Links, pending: Option<Pending>) -> Self {
        Self {
            links,
            exited: None,
            pending,
            followed: true,
        }
    }

    pub(super) fn seen() -> Self {
        Self {
            links: Links::default(),
            exited: None,
            pending: None,
            followed: false,
        }
    }

    fn waits(&self) -> bool {
        self.exited.is_none() && self.pending.as_ref().is_some_and(|p| !p.is_empty())
    }
}

impl Session {
    /// The targets of the command line (empty with --all).
    pub fn followed(&self) -> Vec<u32> {
        self.processes
            .iter()
            .filter(|(_, p)| p.followed)
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Whether `pid` is traced already.
    pub fn traces(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Processes traced and not seen gone.
    pub fn running(&self) -> usize {
        self.processes
            .values()
            .filter(|p| p.exited.is_none())
            .count()
    }

    /// Library names some target waited for and never mapped.
    pub fn never_mapped(&self) -> Vec<String> {
        self.processes
            .values()
            .filter_map(|p| p.pending.as_ref())
            .flat_map(Pending::names)
            .collect()
    }

    /// Attaches to the libraries stopped processes have just mapped, then lets each go
    /// on (also when attaching failed); the first failure is returned.
    pub fn attach_stopped(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for pid in std::mem::take(&mut self.stopped) {
            let attached = self.attach_pending(pid);
            pending::resume(pid);
            if result.is_ok() {
                result = attached;
            }
        }
        result
    }

    /// Looks again at what the targets have loaded: NIF libraries (fallback mode), and
    /// libraries processes not held by the dynamic-linker probe have mapped since.
    pub fn rescan(&mut self) -> anyhow::Result<()> {
        if let Some(nif) = self.crossings.nif.as_mut() {
            nif.rescan(&mut self.loaded.ebpf, &mut self.crossings.table)
                .context("probing newly loaded NIF libraries")?;
        }
        let waiting: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, p)| p.waits())
            .map(|(&pid, _)| pid)
            .collect();
        for pid in waiting {
            if let Err(e) = self.attach_pending(pid) {
                log::warn!("pid {pid}: attaching to what it mapped: {e:#}");
            }
        }
        Ok(())
    }

    fn attach_pending(&mut self, pid: u32) -> anyhow::Result<()> {
        let Some(process) = self.processes.get_mut(&pid) else {
            return Ok(());
        };
        let Some(waiting) = process.pending.as_mut() else {
            return Ok(());
        };
        let costs = self.loaded.calibration.costs;
        let before = process.links.len();
        let (resolved, failed) = pending::attach_mapped(
            &mut self.loaded.ebpf,
            &costs,
            &mut self.crossings.table,
            waiting,
            &mut process.links,
            self.wants.probes.max_functions,
        )?;
        self.probes += process.links.len() - before;
        for (spec, error) in failed {
            eprintln!("xlperf: --ffi {}: {error}", spec.library.display());
        }
        for found in resolved {
            eprintln!(
                "xlperf: {} is {} (mapped by pid {pid}): {} function(s) traced from now on",
                found.spec.library.display(),
                found.path.display(),
                found.ids.len()
            );
        }
        Ok(())
    }

    /// Notes processes gone, and forgets those gone for `grace`: their probes go, and
    /// their pids are returned (their series go with them).
    pub fn retire(&mut self, grace: Duration) -> Vec<u32> {
        let now = Instant::now();
        let mut forget = Vec::new();
        for (&pid, process) in &mut self.processes {
            match process.exited {
                None if proc::process::is_gone(pid) => process.exited = Some(now),
                Some(at) if now.duration_since(at) >= grace => forget.push(pid),
                _ => {}
            }
        }
        for pid in &forget {
            self.processes.remove(pid);
        }
        forget
    }
}
