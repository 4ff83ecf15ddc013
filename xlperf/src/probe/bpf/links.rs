//! The probes a recording holds: attached in one place, detached when dropped.
//!
//! Detaching is slow: closing a uprobe's perf event waits in the kernel for about 110 ms
//! on our 6.18 VMs (128 probes: 14 s), and closes from several threads are serialised
//! there too (measured), so they go one by one. A uprobe_multi link (aya 0.15) would
//! detach a whole set with one wait.

use std::path::Path;

use aya::{
    Ebpf,
    programs::{
        kprobe::KProbeLink,
        trace_point::TracePointLink,
        uprobe::{UProbeAttachPoint, UProbeLink, UProbeScope},
    },
};

use super::{ProbeError, loader};

/// Attached probes, owned; dropping this detaches them all.
#[derive(Default)]
pub struct Links {
    uprobes: Vec<UProbeLink>,
    tracepoints: Vec<TracePointLink>,
    kprobes: Vec<KProbeLink>,
}

impl Links {
    /// Attaches uprobe program `program` at `point` of `target` for `scope`.
    pub fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        program: &'static str,
        point: UProbeAttachPoint<'_>,
        target: &Path,
        scope: UProbeScope,
        what: impl Fn() -> String,
    ) -> Result<(), ProbeError> {
        let probe = loader::uprobe(ebpf, program)?;
        let id = probe
            .attach(point, target, scope)
            .map_err(|source| ProbeError::Program {
                what: format!("attaching {program} to {}", what()),
                source,
            })?;
        let link = probe.take_link(id).map_err(|source| ProbeError::Program {
            what: format!("taking the {program} link of {}", what()),
            source,
        })?;
        self.uprobes.push(link);
        Ok(())
    }

    /// Attaches kprobe program `program` to kernel function `function`, system-wide.
    pub fn attach_kprobe(
        &mut self,
        ebpf: &mut Ebpf,
        program: &'static str,
        function: &str,
    ) -> Result<(), ProbeError> {
        let probe = loader::kprobe(ebpf, program)?;
        let what = || format!("attaching {program} to kernel function {function}");
        let id = probe
            .attach(function, 0)
            .map_err(|source| ProbeError::Program {
                what: what(),
                source,
            })?;
        let link = probe.take_link(id).map_err(|source| ProbeError::Program {
            what: what(),
            source,
        })?;
        self.kprobes.push(link);
        Ok(())
    }

    pub fn push_tracepoint(&mut self, link: TracePointLink) {
        self.tracepoints.push(link);
    }

    pub fn len(&self) -> usize {
        self.uprobes.len() + self.tracepoints.len() + self.kprobes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
