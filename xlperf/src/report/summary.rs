//! The versioned summary of a recording; `--json` prints it as is.
//!
//! Schema version 1. Field names never change within a version; new fields may appear.

use serde::Serialize;

use xlperf_common::thread_kind;

use crate::{
    metrics::calls::{CallAggregator, CallStats},
    probe::{boundary::BoundaryTable, prologue::ProbeSite},
};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema_version: u32,
    /// Wall time from the probes being attached to the end of the recording.
    pub duration_ns: u64,
    /// Call records lost because the ring buffer was full.
    pub dropped: u64,
    /// Measured cost added to one traced call by its probe pair on this host.
    pub probe_cost_ns: u64,
    /// One entry per (process, function), by total time, largest first.
    pub boundaries: Vec<BoundarySummary>,
    /// Exit status of the command xlperf started (128 + N if killed by signal N).
    pub target_exit_status: Option<i32>,
    /// Calls not timed because 16 traced calls were already active on the thread.
    pub depth_overflow: u64,
    /// Returns seen without their entry (calls in flight when probes were attached).
    pub unmatched_returns: u64,
    /// Calls entered but left without passing their return probe (longjmp, unwinding).
    pub abandoned: u64,
    /// Ring buffer items of an unexpected size (kernel/userspace mismatch).
    pub malformed: u64,
    /// Threads whose call stack could not be stored; their calls were not timed.
    pub stack_map_full: u64,
    /// How NIF calls were traced; absent when they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nif: Option<NifRecording>,
}

/// How NIF calls were caught, and what was seen but not reported.
#[derive(Debug, Clone, Serialize)]
pub struct NifRecording {
    /// `dispatch` (probes on the VM's NIF call functions) or `fptr` (a probe pair on
    /// each NIF function).
    pub mode: &'static str,
    /// Why dispatch mode was not used, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The VM executable.
    pub vm: String,
    /// Calls on normal schedulers longer than this are `long_calls`.
    pub long_call_threshold_ns: u64,
    /// Calls of VM-internal functions through the dispatch probes (dirty-NIF trampolines
    /// and finalizers, NIFs built into the VM), not reported as NIFs.
    pub vm_internal_calls: u64,
    /// NIF calls whose process exited before they could be named.
    pub unresolved_calls: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BoundarySummary {
    pub pid: u32,
    pub comm: String,
    /// File name of the library or executable.
    pub library: String,
    pub library_path: String,
    pub function: String,
    pub calls: u64,
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Deepest nesting seen among traced calls on the thread; 1 = outermost.
    pub depth_max: u32,
    /// Bytes into the function where the probes sit (past e.g. `endbr64`).
    pub probe_offset: u64,
    /// Whether the kernel emulates the probed instruction (cheap) or single-steps it.
    pub probe_emulated: bool,
    /// `ffi` for functions named with --ffi, `beam` for Erlang/Elixir NIFs.
    pub runtime: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub nif: Option<NifSummary>,
}

/// What a NIF row adds; `function` is then the Erlang or Elixir name.
#[derive(Debug, Clone, Serialize)]
pub struct NifSummary {
    /// The module atom (`crypto`, `Elixir.MyApp.Native`).
    pub module: String,
    pub arity: u32,
    /// `cpu` or `io` for a NIF declared dirty, else null.
    pub dirty: Option<&'static str>,
    /// Calls per kind of thread they ran on.
    pub scheduler: SchedulerCounts,
    pub long_calls: LongCalls,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchedulerCounts {
    pub normal: u64,
    pub dirty_cpu: u64,
    pub dirty_io: u64,
    pub other: u64,
}

/// Calls on normal schedulers longer than the threshold, and how long calls there took.
#[derive(Debug, Clone, Serialize)]
pub struct LongCalls {
    pub threshold_ns: u64,
    pub count: u64,
    /// p99 and max of this NIF's calls on normal schedulers (0 when there were none).
    pub normal_p99_ns: u64,
    pub normal_max_ns: u64,
}

/// Builds the per-boundary rows; `comm` names each pid.
/// `nif_site`: where the NIF dispatch probes sit, when they (not a probe on each NIF)
/// caught the NIF calls.
pub fn boundaries(
    aggregator: &CallAggregator,
    table: &BoundaryTable,
    comm: impl Fn(u32) -> String,
    nif_site: Option<ProbeSite>,
) -> Vec<BoundarySummary> {
    aggregator
        .by_total_time()
        .into_iter()
        .filter_map(|(pid, id, stats)| {
            let boundary = table.get(id)?;
            let site = match (&boundary.nif, nif_site) {
                (Some(_), Some(dispatch)) => dispatch,
                _ => boundary.site,
            };
            Some(BoundarySummary {
                pid,
                comm: comm(pid),
                library: boundary.library_name(),
                library_path: boundary.library.display().to_string(),
                function: boundary.function.clone(),
                calls: stats.calls,
                total_ns: stats.total_ns,
                // The histogram reports a bucket's upper edge; never above the exact max.
                p50_ns: stats.quantile(0.50).min(stats.max()),
                p90_ns: stats.quantile(0.90).min(stats.max()),
                p99_ns: stats.quantile(0.99).min(stats.max()),
                max_ns: stats.max(),
                depth_max: stats.depth_max,
                probe_offset: site.offset,
                probe_emulated: site.emulated,
                runtime: if boundary.nif.is_some() {
                    "beam"
                } else {
                    "ffi"
                },
                nif: boundary
                    .nif
                    .as_ref()
                    .map(|nif| nif_summary(nif, stats, aggregator.long_call_ns)),
            })
        })
        .collect()
}

fn nif_summary(
    nif: &crate::probe::beam::entry::NifFunction,
    stats: &CallStats,
    threshold_ns: u64,
) -> NifSummary {
    let count = |kind: u32| stats.by_thread.get(kind as usize).copied().unwrap_or(0);
    let normal = stats.normal.as_deref();
    NifSummary {
        module: nif.module.clone(),
        arity: nif.arity,
        dirty: nif.dirty(),
        scheduler: SchedulerCounts {
            normal: count(thread_kind::BEAM_NORMAL),
            dirty_cpu: count(thread_kind::BEAM_DIRTY_CPU),
            dirty_io: count(thread_kind::BEAM_DIRTY_IO),
            other: count(thread_kind::OTHER) + count(thread_kind::UNCLASSIFIED),
        },
        long_calls: LongCalls {
            threshold_ns,
            count: normal.map_or(0, |n| n.long_calls),
            normal_p99_ns: normal.map_or(0, |n| n.histogram.value_at_quantile(0.99).min(n.max_ns)),
            normal_max_ns: normal.map_or(0, |n| n.max_ns),
        },
    }
}
