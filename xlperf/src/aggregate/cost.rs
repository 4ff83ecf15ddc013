//! Allocation and scheduler figures per (process, boundary) and per thread.
//!
//! The kernel charges each event to the innermost active crossing only ("self"). A
//! crossing's inclusive figures add those of the traced calls nested in it, and are
//! computed here: a thread's records arrive in the order its calls returned, children
//! before their parent, so each depth collects its children's totals until the parent's
//! record takes them.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use xlperf_common::{CallRecord, Cost, MAX_DEPTH, OffCpuRecord};

/// Run-queue waits from 1 ns to 1 hour at 3 significant digits.
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;

/// What nested calls at one depth have added up, waiting for their parent's record.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    cost: Cost,
    ns: u64,
    /// Earliest start among them: children start after their parent, so figures older
    /// than a record's own start belong to a call whose record never came (dropped).
    first_start_ns: u64,
}

/// Figures of one boundary in one process.
#[derive(Debug, Clone, Default)]
pub struct BoundaryCost {
    /// Charged to this crossing itself.
    pub own: Cost,
    /// Own plus everything in traced calls nested inside.
    pub inclusive: Cost,
    /// Wall time not spent in nested traced calls.
    pub self_ns: u64,
    /// Bytes allocated inside this crossing still live at the end.
    pub live_bytes: u64,
    /// Live bytes by when they were allocated: quarter of the span of this crossing's
    /// calls, oldest first.
    pub live_by_quarter: [u64; 4],
    /// Start of the first call and end of the last one seen, ns (0: none yet).
    pub first_call_ns: u64,
    pub last_return_ns: u64,
    /// Who woke this crossing's blocked periods, by (pid, tid).
    pub wakers: HashMap<(u32, u32), Waker>,
}

#[derive(Debug, Clone, Default)]
pub struct Waker {
    pub comm: String,
    pub count: u64,
    pub blocked_ns: u64,
}

/// One thread's scheduling, and what it did outside any crossing.
#[derive(Debug, Clone)]
pub struct ThreadStats {
    pub pid: u32,
    pub switches: u64,
    pub offcpu_ns: u64,
    pub runq_ns: u64,
    pub runq_max_ns: u64,
    /// Every run-queue wait (after a wakeup or a preemption).
    pub runq: Histogram<u64>,
    /// Figures while no traced call was active, read from the kernel at the end.
    pub outside: Cost,
    pub frees_untracked: u64,
}

impl ThreadStats {
    fn new(pid: u32) -> Self {
        Self {
            pid,
            switches: 0,
            offcpu_ns: 0,
            runq_ns: 0,
            runq_max_ns: 0,
            runq: Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
            outside: Cost::default(),
            frees_untracked: 0,
        }
    }

    pub fn runq_quantile(&self, q: f64) -> u64 {
        self.runq.value_at_quantile(q).min(self.runq_max_ns)
    }
}

#[derive(Debug, Default)]
pub struct CostAggregator {
    pub boundaries: HashMap<(u32, u32), BoundaryCost>,
    pub threads: HashMap<u32, ThreadStats>,
    pending: HashMap<u32, Vec<Pending>>,
}

impl CostAggregator {
    /// Takes in a completed call and what was charged to it.
    /// Takes in a call whose duration without probe time is `duration`.
    pub fn call(&mut self, record: &CallRecord, own: Option<&Cost>, duration: u64) {
        let own = own.copied().unwrap_or_default();
        let levels = self
            .pending
            .entry(record.tid)
            .or_insert_with(|| vec![Pending::default(); MAX_DEPTH + 1]);
        let depth = (record.depth as usize).clamp(1, MAX_DEPTH);
        let mut children = std::mem::take(&mut levels[depth]);
        if children.ns > 0 && children.first_start_ns < record.start_ns {
            children = Pending::default();
        }
        // Anything deeper belongs to calls that never returned through their probe.
        for level in levels.iter_mut().skip(depth + 1) {
            *level = Pending::default();
        }
        let inclusive = own.plus(&children.cost);
        let parent = &mut levels[depth - 1];
        parent.first_start_ns = if parent.ns == 0 {
            record.start_ns
        } else {
            parent.first_start_ns.min(record.start_ns)
        };
        parent.cost = parent.cost.plus(&inclusive);
        parent.ns = parent.ns.saturating_add(duration.max(1));

        let stats = self
            .boundaries
            .entry((record.pid, record.boundary))
            .or_default();
        stats.own = stats.own.plus(&own);
        stats.inclusive = stats.inclusive.plus(&inclusive);
        stats.self_ns = stats
            .self_ns
            .saturating_add(duration.saturating_sub(children.ns));
        if stats.first_call_ns == 0 {
            stats.first_call_ns = record.start_ns;
        }
        stats.last_return_ns = stats
            .last_return_ns
            .max(record.start_ns.saturating_add(record.duration_ns));
    }

    /// Takes in an off-CPU period; `boundary` is its crossing (None outside any, or when
    /// the crossing could not be named).
    pub fn off_cpu(&mut self, record: &OffCpuRecord, boundary: Option<u32>) {
        let thread = self
            .threads
            .entry(record.tid)
            .or_insert_with(|| ThreadStats::new(record.pid));
        thread.switches += 1;
        thread.offcpu_ns += record.blocked_ns;
        thread.runq_ns += record.runq_ns;
        if record.runq_ns > 0 {
            thread.runq.saturating_record(record.runq_ns);
            thread.runq_max_ns = thread.runq_max_ns.max(record.runq_ns);
        }
        let Some(boundary) = boundary else {
            return;
        };
        // No name: the wakeup was not seen.
        if record.blocked_ns == 0 || record.waker_comm[0] == 0 {
            return;
        }
        let waker = self
            .boundaries
            .entry((record.pid, boundary))
            .or_default()
            .wakers
            .entry((record.waker_pid, record.waker_tid))
            .or_default();
        if waker.comm.is_empty() {
            waker.comm = comm_of(&record.waker_comm);
        }
        waker.count += 1;
        waker.blocked_ns += record.blocked_ns;
    }

    /// A block still live at the end, allocated inside `boundary` (`NO_BOUNDARY`: outside
    /// any crossing) at `ns`. Call it after every call record is in: the block is placed
    /// in a quarter of the span of the crossing's calls. A crossing that leaks keeps
    /// blocks from all four; a cache that filled up and stopped, only from the first.
    pub fn live(&mut self, pid: u32, boundary: u32, size: u64, ns: u64) {
        let stats = self.boundaries.entry((pid, boundary)).or_default();
        stats.live_bytes += size;
        let span = stats
            .last_return_ns
            .saturating_sub(stats.first_call_ns)
            .max(1);
        let quarter = ns.saturating_sub(stats.first_call_ns).saturating_mul(4) / span;
        if let Some(q) = stats.live_by_quarter.get_mut(quarter.min(3) as usize) {
            *q += size;
        }
    }

    /// A thread's outside-any-crossing figures, read from its kernel state at the end.
    pub fn thread_outside(&mut self, tid: u32, pid: u32, outside: Cost, frees_untracked: u64) {
        let thread = self
            .threads
            .entry(tid)
            .or_insert_with(|| ThreadStats::new(pid));
        thread.outside = outside;
        thread.frees_untracked = frees_untracked;
    }
}

fn comm_of(bytes: &[u8; 16]) -> String {
    crate::bytes::c_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call with no probe time inside it.
    fn feed(agg: &mut CostAggregator, record: CallRecord, cost: Option<&Cost>) {
        agg.call(&record, cost, record.duration_ns);
    }

    fn call(boundary: u32, depth: u32, start_ns: u64, duration_ns: u64) -> CallRecord {
        CallRecord {
            start_ns,
            duration_ns,
            target: 0,
            boundary,
            parent: 0,
            pid: 7,
            tid: 8,
            depth,
            thread: 0,
            probe: xlperf_common::ProbeTime::default(),
        }
    }

    fn allocs(n: u64, bytes: u64) -> Cost {
        Cost {
            alloc_count: n,
            alloc_bytes: bytes,
            ..Cost::default()
        }
    }

    #[test]
    fn nested_figures_add_to_the_parent_only_inclusively() {
        let mut agg = CostAggregator::default();
        // A (boundary 1) runs 100..200 and allocates once; B (2) runs twice inside it.
        feed(&mut agg, call(2, 2, 110, 10), Some(&allocs(5, 500)));
        feed(&mut agg, call(2, 2, 130, 10), Some(&allocs(5, 500)));
        feed(&mut agg, call(1, 1, 100, 100), Some(&allocs(1, 7)));
        let a = &agg.boundaries[&(7, 1)];
        let b = &agg.boundaries[&(7, 2)];
        assert_eq!((b.own.alloc_count, b.inclusive.alloc_count), (10, 10));
        assert_eq!((a.own.alloc_count, a.inclusive.alloc_count), (1, 11));
        assert_eq!(a.inclusive.alloc_bytes, 1007);
        assert_eq!(a.self_ns, 80);
        // A second A with no nested calls starts clean.
        feed(&mut agg, call(1, 1, 300, 50), None);
        assert_eq!(agg.boundaries[&(7, 1)].inclusive.alloc_count, 11);
        assert_eq!(agg.boundaries[&(7, 1)].self_ns, 130);
    }

    #[test]
    fn children_of_a_lost_parent_are_not_inherited() {
        let mut agg = CostAggregator::default();
        // B's parent record was lost; the next outermost call started after B.
        feed(&mut agg, call(2, 2, 110, 10), Some(&allocs(5, 500)));
        feed(&mut agg, call(1, 1, 300, 50), None);
        assert_eq!(agg.boundaries[&(7, 1)].inclusive.alloc_count, 0);
    }

    #[test]
    fn live_blocks_fall_in_quarters_of_the_crossings_own_calls() {
        let mut agg = CostAggregator::default();
        feed(&mut agg, call(1, 1, 1_000, 100), None);
        feed(&mut agg, call(1, 1, 4_900, 100), None);
        // Calls span 1000..5000: a leak keeps blocks from all of it...
        for ns in [1_050, 2_100, 3_100, 4_950] {
            agg.live(7, 1, 10, ns);
        }
        // ...a cache that filled up at the start does not.
        feed(&mut agg, call(2, 1, 1_000, 100), None);
        feed(&mut agg, call(2, 1, 9_000, 100), None);
        agg.live(7, 2, 10, 1_050);
        assert_eq!(agg.boundaries[&(7, 1)].live_by_quarter, [10, 10, 10, 10]);
        assert_eq!(agg.boundaries[&(7, 2)].live_by_quarter, [10, 0, 0, 0]);
        assert_eq!(agg.boundaries[&(7, 1)].live_bytes, 40);
    }

    #[test]
    fn wakers_are_counted_per_crossing() {
        let mut agg = CostAggregator::default();
        let mut off = OffCpuRecord {
            pid: 7,
            tid: 8,
            boundary: 1,
            blocked_ns: 1000,
            runq_ns: 50,
            waker_pid: 99,
            waker_tid: 100,
            ..OffCpuRecord::default()
        };
        off.waker_comm[..4].copy_from_slice(b"wake");
        agg.off_cpu(&off, Some(1));
        agg.off_cpu(&off, Some(1));
        let waker = &agg.boundaries[&(7, 1)].wakers[&(99, 100)];
        assert_eq!(
            (waker.comm.as_str(), waker.count, waker.blocked_ns),
            ("wake", 2, 2000)
        );
        let thread = &agg.threads[&8];
        assert_eq!((thread.switches, thread.runq_ns), (2, 100));
        assert_eq!(thread.runq_quantile(0.5), 50);
    }
}
