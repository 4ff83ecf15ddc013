//! `serve --syscalls`: each crossing's system calls as counters, by name. The kernel map
//! holds running totals per (process, crossing, system call); each scan adds what they
//! grew by since the last.

use std::collections::{BTreeMap, HashMap};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use xlperf_common::NO_BOUNDARY;

use super::exposition::Crossing;
use crate::model::{BoundaryInfo, SyscallEntry};

/// A crossing's labels and the system call's name. Calls outside any crossing have
/// empty `runtime`, `library` and `function`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CrossingSyscall {
    pub pid: String,
    pub comm: String,
    pub runtime: String,
    pub library: String,
    pub function: String,
    pub syscall: String,
}

impl CrossingSyscall {
    fn new(crossing: Crossing, syscall: String) -> Self {
        let Crossing {
            pid,
            comm,
            runtime,
            library,
            function,
        } = crossing;
        Self {
            pid,
            comm,
            runtime,
            library,
            function,
            syscall,
        }
    }
}

pub struct SyscallSeries {
    calls: Family<CrossingSyscall, Counter<u64>>,
    seconds: Family<CrossingSyscall, Counter<f64>>,
    /// The kernel's totals when last added, by (pid, crossing, number): kept for exited
    /// processes too, whose totals stay in the kernel map and must not count again.
    seen: HashMap<(u32, u32, u32), (u64, u64)>,
    /// Series in use, per pid, for [`SyscallSeries::forget`].
    series: HashMap<u32, Vec<CrossingSyscall>>,
}

impl SyscallSeries {
    pub fn register(registry: &mut Registry) -> Self {
        let calls = Family::default();
        let seconds = Family::default();
        registry.register(
            "xlperf_crossing_syscalls",
            "System calls made while the crossing was the innermost traced call (--syscalls)",
            calls.clone(),
        );
        registry.register(
            "xlperf_crossing_syscall_seconds",
            "Time in the kernel of those system calls",
            seconds.clone(),
        );
        Self {
            calls,
            seconds,
            seen: HashMap::new(),
            series: HashMap::new(),
        }
    }

    /// Adds what each entry's totals grew by; `labels` gives a crossing's series (None:
    /// its boundary is not known yet, left for the next scan).
    pub fn add(
        &mut self,
        entries: &[SyscallEntry],
        boundaries: &BTreeMap<u32, BoundaryInfo>,
        mut labels: impl FnMut(u32, Option<&BoundaryInfo>) -> Option<Crossing>,
    ) {
        for e in entries {
            let info = boundaries.get(&e.boundary);
            if e.boundary != NO_BOUNDARY && info.is_none() {
                continue;
            }
            let seen = self.seen.entry((e.pid, e.boundary, e.nr)).or_default();
            let (calls, ns) = (
                e.count.saturating_sub(seen.0),
                e.total_ns.saturating_sub(seen.1),
            );
            if calls == 0 && ns == 0 {
                continue;
            }
            let Some(crossing) = labels(e.pid, info) else {
                continue;
            };
            *seen = (e.count, e.total_ns);
            let series = CrossingSyscall::new(crossing, e.name());
            let known = self.series.entry(e.pid).or_default();
            if !known.contains(&series) {
                known.push(series.clone());
            }
            self.calls.get_or_create(&series).inc_by(calls);
            self.seconds.get_or_create(&series).inc_by(ns as f64 / 1e9);
        }
    }

    /// Drops `pid`'s series (it exited longer than the grace period ago).
    pub fn forget(&mut self, pid: u32) {
        for series in self.series.remove(&pid).unwrap_or_default() {
            self.calls.remove(&series);
            self.seconds.remove(&series);
        }
    }
}
