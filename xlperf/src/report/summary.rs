//! The versioned summary of a recording; `--json` prints it as is.
//!
//! Schema version 2. Field names and meanings never change within a version; new fields
//! may appear. Version 2: durations exclude the probes' own time (`raw` has them as
//! measured), and `overhead_ns`, `probe_costs`, per-row `probe_site`/`probe_cost_ns`.

use std::collections::BTreeMap;

use serde::Serialize;

use xlperf_common::thread_kind;

pub use crate::model::{AllocRecording, NifRecording};
use crate::{
    aggregate::{
        calls::{CallAggregator, CallStats},
        cost::{BoundaryCost, CostAggregator},
    },
    model::BoundaryInfo,
    model::{ProbeCosts, SiteKind},
};

pub const SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub schema_version: u32,
    /// Wall time from the probes being attached to the end of the recording.
    pub duration_ns: u64,
    /// Call records lost because the ring buffer was full.
    pub dropped: u64,
    /// Measured cost added to one traced call by its probe pair on this host, at a site
    /// the kernel emulates (rows give their own: `boundaries[].probe_cost_ns`).
    pub probe_cost_ns: u64,
    /// Estimated time the probes added to the targets in all: every uprobe hit at the
    /// measured cost of its kind of site, plus the tracepoint programs' run time.
    pub overhead_ns: u64,
    /// What each kind of probe costs here, as measured at start.
    pub probe_costs: ProbeCosts,
    /// Run time of the tracepoint programs included in `overhead_ns`; null when the
    /// kernel's BPF statistics were not available (then they are not included). With
    /// `--kfunc` it includes the kprobe programs' run time: on other processes' calls
    /// (without the kprobe machinery's own cost) and on the targets' (counted in the
    /// per-call cost too, so `overhead_ns` overstates by that part).
    pub overhead_tracepoints_ns: Option<u64>,
    /// `--ffi` libraries the targets never mapped: nothing was traced in them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub never_mapped: Vec<String>,
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
    /// How allocations were traced (`--alloc`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alloc: Option<AllocRecording>,
    /// Per thread of the targets, with `--alloc` or `--sched`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<Vec<ThreadSummary>>,
    /// Per target process: every crossing's own figures plus every thread's outside.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<ProcessSummary>>,
    /// What the detectors found, most important first.
    pub insights: Vec<Insight>,
    /// Only in `report` of a capture file cut short (the recording was killed): the
    /// figures cover the calls up to its last complete chunk, and the kernel's counters
    /// (drops, live blocks, threads' outside buckets) are missing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Per process, with `--syscalls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<Vec<ProcessSyscalls>>,
    /// System calls not counted because xlperf's syscall map was full.
    #[serde(skip_serializing_if = "is_zero")]
    pub syscall_map_full: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Allocation figures of a crossing (its own, not those of calls nested in it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AllocFields {
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    pub free_count: u64,
    pub free_bytes: u64,
    pub mmap_count: u64,
    pub mmap_bytes: u64,
    pub munmap_bytes: u64,
    /// Kernel allocations made on the thread (`--kmem`; absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmem_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmem_bytes: Option<u64>,
}

/// Scheduler figures of a crossing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SchedFields {
    /// Wall time minus off-CPU and run-queue time.
    pub oncpu_ns: u64,
    /// Asleep or waiting (not runnable).
    pub offcpu_ns: u64,
    /// Runnable, waiting for a CPU.
    pub runq_ns: u64,
    pub switches: u64,
}

/// What a row adds with `--alloc`.
#[derive(Debug, Clone, Serialize)]
pub struct AllocRow {
    #[serde(flatten)]
    pub fields: AllocFields,
    /// Bytes allocated inside this crossing that nobody had freed by the end.
    pub live_bytes: u64,
    /// Live bytes come from every quarter of the recording: still growing.
    #[serde(skip)]
    pub growing: bool,
}

/// What a row adds with `--sched`.
#[derive(Debug, Clone, Serialize)]
pub struct SchedRow {
    #[serde(flatten)]
    pub fields: SchedFields,
    /// Who woke this crossing when it blocked, most blocked time first.
    pub wakers: Vec<WakerSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WakerSummary {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// Blocked periods it ended, and their total length.
    pub count: u64,
    pub blocked_ns: u64,
}

/// A crossing's figures including the traced calls nested in it.
#[derive(Debug, Clone, Serialize)]
pub struct Inclusive {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub alloc: Option<AllocFields>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub sched: Option<SchedFields>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadSummary {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub switches: u64,
    pub offcpu_ns: u64,
    pub runq: RunQueue,
    /// Figures while no traced call was active on the thread.
    pub outside: OutsideFields,
}

/// Run-queue waits of a thread (after each wakeup or preemption).
#[derive(Debug, Clone, Serialize)]
pub struct RunQueue {
    pub count: u64,
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct OutsideFields {
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    pub free_count: u64,
    pub free_bytes: u64,
    pub offcpu_ns: u64,
    pub runq_ns: u64,
    pub switches: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessSummary {
    pub pid: u32,
    pub comm: String,
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    pub free_count: u64,
    pub free_bytes: u64,
    pub live_bytes: u64,
    /// Frees of blocks allocated before the recording began (or evicted from the map).
    pub frees_untracked: u64,
    pub offcpu_ns: u64,
    pub runq_ns: u64,
    pub switches: u64,
}

/// One finding of the detectors.
#[derive(Debug, Clone, Serialize)]
pub struct Insight {
    /// `long_nif`, `blocking`, `leak` or `runqueue`.
    pub kind: &'static str,
    pub pid: u32,
    pub tid: Option<u32>,
    pub function: Option<String>,
    pub message: String,
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
    /// `emulated` or `single_stepped`: the same, by name.
    pub probe_site: &'static str,
    /// Wall time the probe pair adds to each call of this function (measured at start for
    /// this kind of site); `calls` × this is the row's share of `overhead_ns`.
    pub probe_cost_ns: u64,
    /// The figures as the probes measured them, before the probe time inside each call
    /// (its own pair's in-call cost, and any probes nested in it) was removed.
    pub raw: RawDurations,
    /// `ffi` for functions named with --ffi, `beam` for Erlang/Elixir NIFs.
    pub runtime: &'static str,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub nif: Option<NifSummary>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub alloc: Option<AllocRow>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub sched: Option<SchedRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inclusive: Option<Inclusive>,
    /// For a kernel function (`--kfunc`): the crossing (`library:function`) it ran
    /// inside; absent for its calls outside any crossing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For a crossing: time in the traced kernel functions it called (outermost ones,
    /// without probe time), part of its own `total_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_ns: Option<u64>,
    /// The parent's id (not in the JSON).
    #[serde(skip)]
    pub parent_id: Option<u32>,
    /// System calls made inside this crossing, by name (`--syscalls`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscalls: Option<BTreeMap<String, SyscallFigures>>,
    /// The boundary's id in the recording (not in the JSON: names identify rows).
    #[serde(skip)]
    pub id: u32,
}

/// Calls of one system call and their time in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyscallFigures {
    pub count: u64,
    pub total_ns: u64,
}

/// A process's system calls (`--syscalls`): all of them, and those made outside any
/// traced crossing.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessSyscalls {
    pub pid: u32,
    pub comm: String,
    pub syscalls: BTreeMap<String, SyscallFigures>,
    pub outside: BTreeMap<String, SyscallFigures>,
}

/// A row's durations with the probe time still inside them.
#[derive(Debug, Clone, Serialize)]
pub struct RawDurations {
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    /// Probe time removed from this row's calls, in all.
    pub probe_ns: u64,
}

/// What a NIF row adds; `function` is then the Erlang or Elixir name.
#[derive(Debug, Clone, Serialize)]
pub struct NifSummary {
    /// The module atom (`crypto`, `Elixir.MyApp.Native`).
    pub module: String,
    pub arity: u32,
    /// `cpu` or `io` for a NIF declared dirty, else null.
    pub dirty: Option<String>,
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
pub fn boundaries(
    aggregator: &CallAggregator,
    probe_costs: &ProbeCosts,
    costs: Option<&Costs<'_>>,
    infos: &BTreeMap<u32, BoundaryInfo>,
    comm: impl Fn(u32) -> String,
) -> Vec<BoundarySummary> {
    let rows = aggregator
        .by_total_time()
        .into_iter()
        .filter_map(|(pid, id, stats)| {
            let boundary = infos.get(&id)?;
            let site = if boundary.probe_emulated {
                SiteKind::Emulated
            } else {
                SiteKind::SingleStepped
            };
            let kernel = boundary.runtime == "kernel";
            let (probe_site, probe_cost_ns) = if kernel {
                ("kprobe", probe_costs.kernel_pair.total_ns)
            } else {
                (site.name(), probe_costs.pair.get(site).total_ns)
            };
            let raw = &stats.raw;
            let raw_q = |q: f64| raw.histogram.value_at_quantile(q).min(raw.max_ns);
            Some(BoundarySummary {
                pid,
                comm: comm(pid),
                library: boundary.library.clone(),
                library_path: boundary.library_path.clone(),
                function: boundary.function.clone(),
                calls: stats.calls,
                total_ns: stats.total_ns,
                // The histogram reports a bucket's upper edge; never above the exact max.
                p50_ns: stats.quantile(0.50).min(stats.max()),
                p90_ns: stats.quantile(0.90).min(stats.max()),
                p99_ns: stats.quantile(0.99).min(stats.max()),
                max_ns: stats.max(),
                depth_max: stats.depth_max,
                probe_offset: boundary.probe_offset,
                probe_emulated: boundary.probe_emulated,
                probe_site,
                probe_cost_ns,
                raw: RawDurations {
                    total_ns: raw.total_ns,
                    p50_ns: raw_q(0.50),
                    p90_ns: raw_q(0.90),
                    p99_ns: raw_q(0.99),
                    max_ns: raw.max_ns,
                    probe_ns: raw.probe_ns,
                },
                runtime: if boundary.nif.is_some() {
                    "beam"
                } else if kernel {
                    "kernel"
                } else {
                    "ffi"
                },
                nif: boundary
                    .nif
                    .as_ref()
                    .map(|nif| nif_summary(nif, stats, aggregator.long_call_ns)),
                alloc: costs.and_then(|c| c.alloc_row(pid, id)),
                sched: costs.and_then(|c| c.sched_row(pid, id)),
                inclusive: costs.map(|c| c.inclusive(pid, id, stats.total_ns)),
                syscalls: None,
                parent: boundary
                    .parent
                    .and_then(|p| infos.get(&p))
                    .map(|p| format!("{}:{}", p.library, p.function)),
                kernel_ns: None,
                parent_id: boundary.parent,
                id,
            })
        })
        .collect::<Vec<_>>();
    with_kernel_time(rows, infos)
}

/// Gives each crossing the time of the kernel functions it called directly (those
/// called by another traced kernel function are inside that one's time).
fn with_kernel_time(
    mut rows: Vec<BoundarySummary>,
    infos: &BTreeMap<u32, BoundaryInfo>,
) -> Vec<BoundarySummary> {
    {
        let is_kernel = |id: u32| infos.get(&id).is_some_and(|b| b.runtime == "kernel");
        let mut by_row: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for row in &rows {
            if let Some(parent) = row.parent_id
                && row.runtime == "kernel"
                && !is_kernel(parent)
            {
                let sum = by_row.entry((row.pid, parent)).or_default();
                *sum = sum.saturating_add(row.total_ns);
            }
        }
        for row in &mut rows {
            if let Some(&ns) = by_row.get(&(row.pid, row.id)) {
                row.kernel_ns = Some(ns);
            }
        }
        rows
    }
}

fn nif_summary(nif: &crate::model::NifInfo, stats: &CallStats, threshold_ns: u64) -> NifSummary {
    let count = |kind: u32| stats.by_thread.get(kind as usize).copied().unwrap_or(0);
    let normal = stats.normal.as_deref();
    NifSummary {
        module: nif.module.clone(),
        arity: nif.arity,
        dirty: nif.dirty.clone(),
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

/// The allocation and scheduler figures of a recording, and which were captured.
pub struct Costs<'a> {
    pub aggregator: &'a CostAggregator,
    pub alloc: bool,
    pub kmem: bool,
    pub sched: bool,
}

fn alloc_fields(cost: &xlperf_common::Cost, kmem: bool) -> AllocFields {
    AllocFields {
        kmem_count: kmem.then_some(cost.kmem_count),
        kmem_bytes: kmem.then_some(cost.kmem_bytes),
        alloc_count: cost.alloc_count,
        alloc_bytes: cost.alloc_bytes,
        free_count: cost.free_count,
        free_bytes: cost.free_bytes,
        mmap_count: cost.mmap_count,
        mmap_bytes: cost.mmap_bytes,
        munmap_bytes: cost.munmap_bytes,
    }
}

fn sched_fields(cost: &xlperf_common::Cost, wall_ns: u64) -> SchedFields {
    SchedFields {
        oncpu_ns: wall_ns.saturating_sub(cost.offcpu_ns.saturating_add(cost.runq_ns)),
        offcpu_ns: cost.offcpu_ns,
        runq_ns: cost.runq_ns,
        switches: cost.switches,
    }
}

impl Costs<'_> {
    fn of(&self, pid: u32, id: u32) -> Option<&BoundaryCost> {
        self.aggregator.boundaries.get(&(pid, id))
    }

    fn alloc_row(&self, pid: u32, id: u32) -> Option<AllocRow> {
        if !self.alloc {
            return None;
        }
        let cost = self.of(pid, id).cloned().unwrap_or_default();
        Some(AllocRow {
            fields: alloc_fields(&cost.own, self.kmem),
            live_bytes: cost.live_bytes,
            growing: cost.live_by_quarter.iter().all(|&q| q > 0),
        })
    }

    fn sched_row(&self, pid: u32, id: u32) -> Option<SchedRow> {
        if !self.sched {
            return None;
        }
        let cost = self.of(pid, id).cloned().unwrap_or_default();
        let mut wakers: Vec<WakerSummary> = cost
            .wakers
            .iter()
            .map(|(&(pid, tid), w)| WakerSummary {
                pid,
                tid,
                comm: w.comm.clone(),
                count: w.count,
                blocked_ns: w.blocked_ns,
            })
            .collect();
        wakers.sort_by(|a, b| b.blocked_ns.cmp(&a.blocked_ns).then(a.tid.cmp(&b.tid)));
        wakers.truncate(MAX_WAKERS);
        Some(SchedRow {
            fields: sched_fields(&cost.own, cost.self_ns),
            wakers,
        })
    }

    fn inclusive(&self, pid: u32, id: u32, total_ns: u64) -> Inclusive {
        let cost = self.of(pid, id).cloned().unwrap_or_default();
        Inclusive {
            alloc: self.alloc.then(|| alloc_fields(&cost.inclusive, self.kmem)),
            sched: self.sched.then(|| sched_fields(&cost.inclusive, total_ns)),
        }
    }

    /// Per-thread rows, by run-queue time, largest first.
    pub fn threads(&self, comm: impl Fn(u32) -> String) -> Vec<ThreadSummary> {
        let mut rows: Vec<ThreadSummary> = self
            .aggregator
            .threads
            .iter()
            .map(|(&tid, t)| ThreadSummary {
                pid: t.pid,
                tid,
                comm: comm(tid),
                switches: t.switches,
                offcpu_ns: t.offcpu_ns,
                runq: RunQueue {
                    count: t.runq.len(),
                    total_ns: t.runq_ns,
                    p50_ns: t.runq_quantile(0.50),
                    p90_ns: t.runq_quantile(0.90),
                    p99_ns: t.runq_quantile(0.99),
                    max_ns: t.runq_max_ns,
                },
                outside: OutsideFields {
                    alloc_count: t.outside.alloc_count,
                    alloc_bytes: t.outside.alloc_bytes,
                    free_count: t.outside.free_count,
                    free_bytes: t.outside.free_bytes,
                    offcpu_ns: t.outside.offcpu_ns,
                    runq_ns: t.outside.runq_ns,
                    switches: t.outside.switches,
                },
            })
            .collect();
        rows.sort_by(|a, b| {
            b.runq
                .total_ns
                .cmp(&a.runq.total_ns)
                .then(a.tid.cmp(&b.tid))
        });
        rows
    }

    /// Per-process totals: each crossing's own figures plus each thread's outside bucket,
    /// so that nothing is counted twice and nothing is left out.
    pub fn processes(&self, comm: impl Fn(u32) -> String) -> Vec<ProcessSummary> {
        let mut by_pid: std::collections::BTreeMap<u32, ProcessSummary> = Default::default();
        let mut add = |pid: u32, cost: &xlperf_common::Cost, live: u64| {
            let p = by_pid.entry(pid).or_default();
            p.pid = pid;
            p.alloc_count += cost.alloc_count;
            p.alloc_bytes += cost.alloc_bytes;
            p.free_count += cost.free_count;
            p.free_bytes += cost.free_bytes;
            p.live_bytes += live;
        };
        for (&(pid, _), b) in &self.aggregator.boundaries {
            add(pid, &b.own, b.live_bytes);
        }
        for t in self.aggregator.threads.values() {
            add(t.pid, &t.outside, 0);
        }
        for t in self.aggregator.threads.values() {
            let p = by_pid.entry(t.pid).or_default();
            p.frees_untracked += t.frees_untracked;
            p.offcpu_ns += t.offcpu_ns;
            p.runq_ns += t.runq_ns;
            p.switches += t.switches;
        }
        by_pid
            .into_values()
            .map(|mut p| {
                p.comm = comm(p.pid);
                p
            })
            .collect()
    }
}

/// Wakers listed per crossing.
const MAX_WAKERS: usize = 5;
