//! The versioned summary of a recording; `--json` prints it as is.
//!
//! Schema version 1. Field names never change within a version; new fields may appear.

use serde::Serialize;

use crate::{metrics::calls::CallAggregator, probe::boundary::BoundaryTable};

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
}

/// Builds the per-boundary rows; `comm` names each pid.
pub fn boundaries(
    aggregator: &CallAggregator,
    table: &BoundaryTable,
    comm: impl Fn(u32) -> String,
) -> Vec<BoundarySummary> {
    aggregator
        .by_total_time()
        .into_iter()
        .filter_map(|(pid, id, stats)| {
            let boundary = table.get(id)?;
            Some(BoundarySummary {
                pid,
                comm: comm(pid),
                library: boundary.library_name(),
                library_path: boundary.library.display().to_string(),
                function: boundary.function.clone(),
                calls: stats.calls,
                total_ns: stats.total_ns,
                p50_ns: stats.quantile(0.50),
                p90_ns: stats.quantile(0.90),
                p99_ns: stats.quantile(0.99),
                max_ns: stats.max(),
                depth_max: stats.depth_max,
                probe_offset: boundary.site.offset,
                probe_emulated: boundary.site.emulated,
            })
        })
        .collect()
}
