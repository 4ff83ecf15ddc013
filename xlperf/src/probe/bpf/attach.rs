//! Attaching the FFI probe pair to every boundary, in every target scope.

use std::num::NonZeroU32;

use aya::{
    Ebpf,
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
};

use super::{
    ProbeError,
    links::Links,
    loader::{FFI_ENTRY, FFI_EXIT},
};
use crate::{model::ProbeCosts, probe::boundary::BoundaryTable};

/// Which processes a set of boundaries is traced in.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub scope: UProbeScope,
    pub boundaries: Vec<u32>,
}

impl Attachment {
    pub fn pid(pid: NonZeroU32, boundaries: Vec<u32>) -> Self {
        Self {
            scope: UProbeScope::OneProcess(pid),
            boundaries,
        }
    }

    pub fn all(boundaries: Vec<u32>) -> Self {
        Self {
            scope: UProbeScope::AllProcesses,
            boundaries,
        }
    }
}

/// Attaches entry and return probes; returns the number of probes attached.
///
/// Return probes go first: a call already in flight when its entry probe appears would
/// otherwise leave a frame that is never popped, and corrupt the parent of later calls.
/// A return without its entry is only counted (`unmatched_return`).
pub fn attach_ffi(
    ebpf: &mut Ebpf,
    costs: &ProbeCosts,
    table: &BoundaryTable,
    attachments: &[Attachment],
    links: &mut Links,
) -> Result<usize, ProbeError> {
    let before = links.len();
    for program in [FFI_EXIT, FFI_ENTRY] {
        for attachment in attachments {
            for &id in &attachment.boundaries {
                let Some(boundary) = table.get(id) else {
                    continue;
                };
                let point = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(boundary.attach_offset()),
                    cookie: Some(costs.pair_cookie(id, boundary.site)),
                };
                links.attach(
                    ebpf,
                    program,
                    point,
                    &boundary.library,
                    attachment.scope,
                    || {
                        format!(
                            "{}:{} (offset {:#x})",
                            boundary.library.display(),
                            boundary.function,
                            boundary.attach_offset()
                        )
                    },
                )?;
            }
        }
    }
    Ok(links.len() - before)
}
