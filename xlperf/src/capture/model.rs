//! A recording as data: what `record -o` writes and `report` reads back, and what every
//! export format (Perfetto, Chrome trace, folded stacks, SVG) is made from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xlperf_common::{CallRecord, Cost, OffCpuRecord};

use crate::{
    probe::{boundary::Boundary, calibrate::ProbeCosts, prologue::ProbeSite},
    report::summary::{AllocRecording, NifRecording},
};

/// One recording, complete or cut short.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub meta: Meta,
    /// Process names by pid.
    pub processes: BTreeMap<u32, String>,
    /// Thread names by tid (with their process).
    pub threads: BTreeMap<u32, ThreadInfo>,
    /// What each boundary id in the records stands for.
    pub boundaries: BTreeMap<u32, BoundaryInfo>,
    /// Completed calls in the order they returned, NIF calls already named (their
    /// `boundary` is the NIF's own id, not the dispatch probe's).
    pub calls: Vec<CallEvent>,
    /// Off-CPU periods of target threads (`--sched`), in the order they ended.
    pub off_cpu: Vec<OffCpuRecord>,
    /// What only the end of a recording knows; None when the file was cut short.
    pub end: Option<End>,
    /// The file ended before its last complete chunk or before its end chunk.
    pub truncated: bool,
}

/// A completed call and what was charged to it (None: nothing, or not traced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEvent {
    pub record: CallRecord,
    pub cost: Option<Cost>,
}

/// How the recording was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// xlperf's version (Cargo package version).
    pub xlperf_version: String,
    /// Wall-clock time of the start, ns since the Unix epoch.
    pub started_unix_ns: u64,
    /// `CLOCK_MONOTONIC` at the start, ns: the clock of every record's timestamps.
    pub started_monotonic_ns: u64,
    /// The command line xlperf was run with.
    pub argv: Vec<String>,
    pub alloc: bool,
    pub sched: bool,
    pub kmem: bool,
    /// Measured cost of one probe pair on the recording host, ns (at an emulated site).
    pub probe_cost_ns: u64,
    /// What each kind of probe costs on the recording host, measured at its start.
    pub probe_costs: ProbeCosts,
    /// `--long-nif`, ns.
    pub long_call_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub pid: u32,
    pub comm: String,
}

/// A traced function (or NIF), as the summary names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundaryInfo {
    /// File name of the library or executable (`libz.so.1`, `crypto.so`, `beam.smp`).
    pub library: String,
    pub library_path: String,
    /// Function name, or the Erlang/Elixir name of a NIF (`crypto:hash_nif/2`).
    pub function: String,
    /// `ffi` or `beam`.
    pub runtime: String,
    pub probe_offset: u64,
    pub probe_emulated: bool,
    /// For a NIF: its module, arity and dirty kind.
    pub nif: Option<NifInfo>,
}

impl BoundaryInfo {
    /// What the summary and capture files say about `boundary`. `nif_site`: where the NIF
    /// dispatch probes sit, when they (not a probe on each NIF) caught the NIF calls.
    pub fn of(boundary: &Boundary, nif_site: Option<ProbeSite>) -> Self {
        let site = match (&boundary.nif, nif_site) {
            (Some(_), Some(dispatch)) => dispatch,
            _ => boundary.site,
        };
        Self {
            library: boundary.library_name(),
            library_path: boundary.library.display().to_string(),
            function: boundary.function.clone(),
            runtime: if boundary.nif.is_some() {
                "beam"
            } else {
                "ffi"
            }
            .into(),
            probe_offset: site.offset,
            probe_emulated: site.emulated,
            nif: boundary.nif.as_ref().map(|nif| NifInfo {
                module: nif.module.clone(),
                arity: nif.arity,
                dirty: nif.dirty().map(str::to_owned),
            }),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NifInfo {
    /// The module atom (`crypto`, `Elixir.MyApp.Native`).
    pub module: String,
    pub arity: u32,
    /// `cpu` or `io` for a NIF declared dirty.
    pub dirty: Option<String>,
}

/// The end of a recording: what the kernel and xlperf knew when it stopped, beyond the
/// records themselves. A report rebuilds every per-function figure from the records and
/// takes these as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub duration_ns: u64,
    pub target_exit_status: Option<i32>,
    pub dropped: u64,
    pub depth_overflow: u64,
    pub unmatched_returns: u64,
    pub abandoned: u64,
    pub malformed: u64,
    pub stack_map_full: u64,
    /// The summary's `nif` and `alloc` objects, as recorded.
    pub nif: Option<NifRecording>,
    pub alloc: Option<AllocRecording>,
    /// Each target thread's figures outside any crossing (`--alloc`, `--sched`).
    pub threads_outside: Vec<ThreadOutside>,
    /// Blocks still live at the end (`--alloc`), weighted when sampled.
    pub live: Vec<LiveEntry>,
    /// Time the uprobes added to the targets' threads: every hit the kernel counted, at
    /// the start-up cost of its kind of site, ns (emulated and single-stepped sites).
    pub probe_emulated_ns: u64,
    pub probe_stepped_ns: u64,
    /// Time the tracepoint programs (`--sched`, `--alloc`) ran, as the kernel's BPF
    /// statistics measured it, ns; None when those statistics were not available.
    pub tracepoint_ns: Option<u64>,
    /// `--ffi` libraries the targets never mapped: nothing could be traced in them.
    pub never_mapped: Vec<String>,
}

impl End {
    pub fn probe_time(&self) -> xlperf_common::ProbeTime {
        xlperf_common::ProbeTime {
            emulated_ns: self.probe_emulated_ns,
            stepped_ns: self.probe_stepped_ns,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadOutside {
    pub tid: u32,
    pub pid: u32,
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    pub free_count: u64,
    pub free_bytes: u64,
    pub offcpu_ns: u64,
    pub runq_ns: u64,
    pub switches: u64,
    pub kmem_count: u64,
    pub kmem_bytes: u64,
    pub mmap_count: u64,
    pub mmap_bytes: u64,
    pub munmap_bytes: u64,
    pub frees_untracked: u64,
}

/// A live block: its process, the crossing that allocated it, its (weighted) size and
/// when it was allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEntry {
    pub pid: u32,
    pub boundary: u32,
    pub bytes: u64,
    pub ns: u64,
}
