//! From records to a summary: the one path both a live recording and `report FILE` take,
//! so that a capture file reproduces the live summary exactly.

use std::collections::BTreeMap;

use xlperf_common::{NO_BOUNDARY, OffCpuRecord};

use super::{
    Summary, insights,
    summary::{self, Costs},
};
use crate::{
    aggregate::{calls::CallAggregator, cost::CostAggregator},
    model::{BoundaryInfo, CallEvent, Capture, End, Meta, ThreadInfo},
};

/// Everything the records of one recording feed.
#[derive(Debug)]
pub struct Aggregates {
    pub calls: CallAggregator,

    /// Allocation and scheduler figures (`--alloc`, `--sched`).
    pub costs: Option<CostAggregator>,
}

impl Aggregates {
    pub fn new(meta: &Meta) -> Self {
        Self {
            calls: CallAggregator::new(meta.long_call_ns),

            costs: (meta.alloc || meta.sched).then(CostAggregator::default),
        }
    }

    pub fn call(&mut self, event: &CallEvent) {
        let duration = event.record.corrected_ns();
        self.calls.record(&event.record, duration);
        if let Some(costs) = self.costs.as_mut() {
            costs.call(&event.record, event.cost.as_ref(), duration);
        }
    }

    /// An off-CPU period whose `boundary` is already the named crossing (or NO_BOUNDARY).
    pub fn off_cpu(&mut self, record: &OffCpuRecord) {
        if let Some(costs) = self.costs.as_mut() {
            let boundary = (record.boundary != NO_BOUNDARY).then_some(record.boundary);
            costs.off_cpu(record, boundary);
        }
    }

    /// What the kernel held at the end: threads' outside buckets and live blocks.
    pub fn end(&mut self, end: &End) {
        let Some(costs) = self.costs.as_mut() else {
            return;
        };
        for t in &end.threads_outside {
            costs.thread_outside(t.tid, t.pid, t.cost, t.frees_untracked);
        }
        for live in &end.live {
            costs.live(live.pid, live.boundary, live.bytes, live.ns);
        }
    }
}

/// The names and facts a summary is made of, besides the aggregates.
pub struct Recording<'a> {
    pub meta: &'a Meta,
    pub processes: &'a BTreeMap<u32, String>,
    pub threads: &'a BTreeMap<u32, ThreadInfo>,
    pub boundaries: &'a BTreeMap<u32, BoundaryInfo>,
    pub end: &'a End,
    pub truncated: bool,
}

pub fn summary(aggregates: &Aggregates, recording: &Recording<'_>) -> Summary {
    let meta = recording.meta;
    let end = recording.end;
    let comm = |pid: u32| {
        recording
            .processes
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| "?".into())
    };
    let thread_comm = |tid: u32| {
        recording
            .threads
            .get(&tid)
            .map_or_else(|| "?".into(), |t| t.comm.clone())
    };
    let costs = aggregates.costs.as_ref().map(|aggregator| Costs {
        aggregator,
        alloc: meta.alloc,
        kmem: meta.kmem,
        sched: meta.sched,
    });
    let mut summary = Summary {
        schema_version: summary::SCHEMA_VERSION,
        duration_ns: end.duration_ns,
        dropped: end.dropped,
        probe_cost_ns: meta.probe_cost_ns,
        overhead_ns: end
            .probe_time()
            .sum()
            .saturating_add(end.tracepoint_ns.unwrap_or(0)),
        probe_costs: meta.probe_costs,
        overhead_tracepoints_ns: end.tracepoint_ns,
        never_mapped: end.never_mapped.clone(),
        boundaries: summary::boundaries(
            &aggregates.calls,
            &meta.probe_costs,
            costs.as_ref(),
            recording.boundaries,
            comm,
        ),
        target_exit_status: end.target_exit_status,
        depth_overflow: end.depth_overflow,
        unmatched_returns: end.unmatched_returns,
        abandoned: end.abandoned,
        malformed: end.malformed,
        stack_map_full: end.stack_map_full,
        nif: end.nif.clone(),
        alloc: end.alloc.clone(),
        threads: costs.as_ref().map(|c| c.threads(thread_comm)),
        processes: costs.as_ref().map(|c| c.processes(comm)),
        insights: Vec::new(),
        truncated: recording.truncated,
        syscalls: None,
        syscall_map_full: end.syscall_map_full,
    };
    if meta.syscalls {
        super::syscalls::charge(&mut summary, &end.syscalls, comm);
    }
    summary.insights = insights::detect(&summary);
    summary
}

/// The summary of a capture file, rebuilt from its records. A file cut short has no end
/// chunk: its duration then runs to its last record, and its kernel counters are unknown
/// (zero), which `truncated` says.
pub fn from_capture(capture: &Capture) -> Summary {
    let mut aggregates = Aggregates::new(&capture.meta);
    // The same sink a live recording feeds; aggregating never fails.
    let _ = crate::session::sink::replay(capture, &mut [&mut aggregates]);
    let end = capture.end.clone().unwrap_or_else(|| End {
        duration_ns: capture
            .calls
            .iter()
            .map(|c| c.record.start_ns.saturating_add(c.record.duration_ns))
            .chain(capture.off_cpu.iter().map(|o| o.end_ns))
            .max()
            .unwrap_or(0)
            .saturating_sub(capture.meta.started_monotonic_ns),
        ..End::default()
    });
    aggregates.end(&end);
    summary(
        &aggregates,
        &Recording {
            meta: &capture.meta,
            processes: &capture.processes,
            threads: &capture.threads,
            boundaries: &capture.boundaries,
            end: &end,
            truncated: capture.truncated,
        },
    )
}
