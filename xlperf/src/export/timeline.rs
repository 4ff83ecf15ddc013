//! The timeline both trace formats draw: per process, per thread, the thread's calls as
//! nested slices, its off-CPU periods as slices of their own, and a running total of
//! the bytes its calls allocated.
//!
//! Off-CPU periods happen inside calls, and a viewer nests slices on one track by time,
//! so they get a track (Perfetto) or a row (Chrome) of their own beside the thread's.
//!
//! GPU work has no place in the capture model yet; when it does, its queue and execution
//! periods become one more list of slices per process here (one track per GPU queue).

use std::collections::BTreeMap;

use xlperf_common::{Cost, NO_BOUNDARY, OffCpuRecord};

use super::stacks::{self, NestedCall};
use crate::model::Capture;

/// Category of call slices whose boundary the file does not describe.
const DEFAULT_CATEGORY: &str = "crossing";
/// Category of off-CPU slices.
pub const OFF_CPU_CATEGORY: &str = "sched";

/// Everything to draw, processes by pid.
#[derive(Debug, Default)]
pub struct Timeline {
    pub processes: Vec<Process>,
}

#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    /// By tid.
    pub threads: Vec<Thread>,
}

#[derive(Debug)]
pub struct Thread {
    pub pid: u32,
    pub tid: u32,
    /// The thread's `comm`.
    pub name: String,
    /// Properly nested, in the order they begin ([`Slice::parent`] gives the nesting).
    pub calls: Vec<Slice>,
    /// One after another, never overlapping, in time order.
    pub off_cpu: Vec<Slice>,
    /// Bytes allocated by the thread's calls so far, at each call's end; empty when its
    /// calls allocated nothing (or allocations were not traced).
    pub allocated: Vec<CounterPoint>,
    /// Time off CPU so far (blocked and waiting for a CPU), ns: zero where the first
    /// period begins, then up by each period where it ends; empty without `--sched`.
    pub off_cpu_total: Vec<CounterPoint>,
}

/// A named interval on a thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub name: String,
    pub category: String,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Index of the enclosing slice in the same list.
    pub parent: Option<usize>,
    pub args: Vec<Arg>,
}

impl Slice {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// A named value shown with a slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub key: &'static str,
    pub value: ArgValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ArgValue {
    Text(String),
    Count(u64),
}

/// A counter's value from `ts_ns` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterPoint {
    pub ts_ns: u64,
    pub value: u64,
}

/// Builds the timeline of `capture`.
pub fn build(capture: &Capture) -> Timeline {
    let mut threads: BTreeMap<(u32, u32), Thread> = BTreeMap::new();
    for thread_calls in stacks::by_thread(capture) {
        let thread = thread_entry(&mut threads, capture, thread_calls.pid, thread_calls.tid);
        thread.calls = thread_calls
            .calls
            .iter()
            .map(|call| call_slice(capture, call))
            .collect();
        thread.allocated = allocated(&thread_calls.calls);
    }
    for (&(pid, tid), records) in &off_cpu_by_thread(capture) {
        let thread = thread_entry(&mut threads, capture, pid, tid);
        thread.off_cpu = off_cpu_slices(capture, records);
        thread.off_cpu_total = off_cpu_total(records);
    }
    let mut processes: BTreeMap<u32, Process> = BTreeMap::new();
    for ((pid, _), thread) in threads {
        processes
            .entry(pid)
            .or_insert_with(|| Process {
                pid,
                name: stacks::process_name(capture, pid),
                threads: Vec::new(),
            })
            .threads
            .push(thread);
    }
    Timeline {
        processes: processes.into_values().collect(),
    }
}

fn thread_entry<'t>(
    threads: &'t mut BTreeMap<(u32, u32), Thread>,
    capture: &Capture,
    pid: u32,
    tid: u32,
) -> &'t mut Thread {
    threads.entry((pid, tid)).or_insert_with(|| Thread {
        pid,
        tid,
        name: stacks::thread_name(capture, pid, tid),
        calls: Vec::new(),
        off_cpu: Vec::new(),
        allocated: Vec::new(),
        off_cpu_total: Vec::new(),
    })
}

/// A call as a slice: named by its function, with its library, runtime and whatever was
/// charged to it.
fn call_slice(capture: &Capture, call: &NestedCall<'_>) -> Slice {
    let boundary = capture.boundaries.get(&call.boundary());
    let mut args = Vec::new();
    if let Some(info) = boundary {
        args.push(text_arg("library", &info.library));
        args.push(text_arg("runtime", &info.runtime));
    }
    if let Some(cost) = &call.event.cost {
        args.extend(cost_args(cost));
    }
    Slice {
        name: stacks::function_name(capture, call.boundary()).into_owned(),
        category: boundary
            .map(|info| info.runtime.as_str())
            .filter(|runtime| !runtime.is_empty())
            .unwrap_or(DEFAULT_CATEGORY)
            .to_owned(),
        start_ns: call.start_ns,
        end_ns: call.end_ns,
        parent: call.parent,
        args,
    }
}

fn text_arg(key: &'static str, value: &str) -> Arg {
    Arg {
        key,
        value: ArgValue::Text(value.to_owned()),
    }
}

fn count_arg(key: &'static str, value: u64) -> Arg {
    Arg {
        key,
        value: ArgValue::Count(value),
    }
}

/// The nonzero figures of a call's cost, named as in the JSON summary.
pub fn cost_args(cost: &Cost) -> impl Iterator<Item = Arg> {
    let figures = [
        ("alloc_count", cost.alloc_count),
        ("alloc_bytes", cost.alloc_bytes),
        ("free_count", cost.free_count),
        ("free_bytes", cost.free_bytes),
        ("mmap_count", cost.mmap_count),
        ("mmap_bytes", cost.mmap_bytes),
        ("munmap_bytes", cost.munmap_bytes),
        ("offcpu_ns", cost.offcpu_ns),
        ("runq_ns", cost.runq_ns),
        ("switches", cost.switches),
        ("kmem_count", cost.kmem_count),
        ("kmem_bytes", cost.kmem_bytes),
    ];
    figures
        .into_iter()
        .filter(|&(_, value)| value != 0)
        .map(|(key, value)| count_arg(key, value))
}

/// The running total of bytes allocated by a thread's calls: zero where its first call
/// begins, then up by each call's `alloc_bytes` where that call ends.
fn allocated(calls: &[NestedCall<'_>]) -> Vec<CounterPoint> {
    let mut steps: Vec<(u64, u64)> = calls
        .iter()
        .filter_map(|call| {
            let bytes = call.event.cost.map_or(0, |cost| cost.alloc_bytes);
            (bytes != 0).then_some((call.end_ns, bytes))
        })
        .collect();
    let Some(first) = calls.first() else {
        return Vec::new();
    };
    if steps.is_empty() {
        return Vec::new();
    }
    steps.sort_unstable();
    let mut points = vec![CounterPoint {
        ts_ns: first.start_ns,
        value: 0,
    }];
    let mut total = 0u64;
    for (ts_ns, bytes) in steps {
        total = total.saturating_add(bytes);
        match points.last_mut() {
            Some(last) if last.ts_ns == ts_ns => last.value = total,
            _ => points.push(CounterPoint {
                ts_ns,
                value: total,
            }),
        }
    }
    points
}

/// The running total of a thread's off-CPU time, one point per period's end.
fn off_cpu_total(records: &[&OffCpuRecord]) -> Vec<CounterPoint> {
    let mut periods: Vec<(u64, u64)> = records
        .iter()
        .map(|r| (r.end_ns, r.blocked_ns.saturating_add(r.runq_ns)))
        .filter(|&(_, ns)| ns > 0)
        .collect();
    periods.sort_unstable();
    let Some(&(first_end, first_ns)) = periods.first() else {
        return Vec::new();
    };
    let mut points = vec![CounterPoint {
        ts_ns: first_end.saturating_sub(first_ns),
        value: 0,
    }];
    let mut total = 0u64;
    for (ts_ns, ns) in periods {
        total = total.saturating_add(ns);
        points.push(CounterPoint {
            ts_ns,
            value: total,
        });
    }
    points
}

fn off_cpu_by_thread(capture: &Capture) -> BTreeMap<(u32, u32), Vec<&OffCpuRecord>> {
    let mut groups: BTreeMap<(u32, u32), Vec<&OffCpuRecord>> = BTreeMap::new();
    for record in &capture.off_cpu {
        groups
            .entry((record.pid, record.tid))
            .or_default()
            .push(record);
    }
    groups
}

/// A thread's off-CPU periods as slices: `blocked` (asleep or waiting) then `runnable`
/// (woken, waiting for a CPU), each only when it lasted. They are sequential by nature;
/// a period that claims to start before the previous one ended is moved after it, so the
/// track stays flat.
fn off_cpu_slices(capture: &Capture, records: &[&OffCpuRecord]) -> Vec<Slice> {
    let mut slices: Vec<Slice> = records
        .iter()
        .flat_map(|record| off_cpu_record_slices(capture, record))
        .collect();
    slices.sort_by_key(|slice| (slice.start_ns, slice.end_ns));
    let mut floor = 0;
    for slice in &mut slices {
        slice.start_ns = slice.start_ns.max(floor);
        slice.end_ns = slice.end_ns.max(slice.start_ns);
        floor = slice.end_ns;
    }
    slices
}

fn off_cpu_record_slices(capture: &Capture, record: &OffCpuRecord) -> Vec<Slice> {
    let runnable_start = record.end_ns.saturating_sub(record.runq_ns);
    let blocked_start = runnable_start.saturating_sub(record.blocked_ns);
    let mut common = Vec::new();
    if record.boundary != NO_BOUNDARY {
        let crossing = stacks::function_name(capture, record.boundary);
        common.push(text_arg("crossing", &crossing));
    }
    let mut slices = Vec::new();
    if record.blocked_ns != 0 {
        let mut args = common.clone();
        args.extend(waker_args(record));
        slices.push(off_cpu_slice(
            "blocked",
            blocked_start,
            runnable_start,
            args,
        ));
    }
    if record.runq_ns != 0 {
        slices.push(off_cpu_slice(
            "runnable",
            runnable_start,
            record.end_ns,
            common,
        ));
    }
    slices
}

/// Who woke a blocked thread (nothing when it was preempted rather than woken).
fn waker_args(record: &OffCpuRecord) -> Vec<Arg> {
    if record.waker_tid == 0 && record.waker_pid == 0 {
        return Vec::new();
    }
    let mut args = vec![
        count_arg("waker_pid", u64::from(record.waker_pid)),
        count_arg("waker_tid", u64::from(record.waker_tid)),
    ];
    let comm = comm_str(&record.waker_comm);
    if !comm.is_empty() {
        args.push(text_arg("waker_comm", &comm));
    }
    args
}

/// A kernel `comm`: NUL-padded bytes, not necessarily UTF-8.
fn comm_str(comm: &[u8]) -> String {
    crate::bytes::c_string(comm)
}

fn off_cpu_slice(name: &str, start_ns: u64, end_ns: u64, args: Vec<Arg>) -> Slice {
    Slice {
        name: name.to_owned(),
        category: OFF_CPU_CATEGORY.to_owned(),
        start_ns,
        end_ns,
        parent: None,
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testdata;

    #[test]
    fn threads_calls_off_cpu_and_allocations() {
        let capture = testdata::capture();
        let timeline = build(&capture);
        assert_eq!(timeline.processes.len(), 1);
        let process = &timeline.processes[0];
        assert_eq!((process.pid, process.name.as_str()), (100, "python3"));
        let threads: Vec<(u32, &str)> = process
            .threads
            .iter()
            .map(|t| (t.tid, t.name.as_str()))
            .collect();
        assert_eq!(threads, vec![(100, "python3"), (101, "worker")]);

        let main = &process.threads[0];
        let names: Vec<&str> = main.calls.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["A", "B", "A"]);
        assert_eq!(main.calls[1].parent, Some(0));
        let b_args = &main.calls[1].args;
        assert!(b_args.contains(&text_arg("library", "libfoo.so")));
        assert!(b_args.contains(&count_arg("alloc_bytes", 300)));
        assert!(b_args.contains(&count_arg("offcpu_ns", 15_000)));
        assert!(!b_args.iter().any(|arg| arg.key == "free_count"));

        let off: Vec<(&str, u64, u64)> = main
            .off_cpu
            .iter()
            .map(|s| (s.name.as_str(), s.start_ns, s.end_ns))
            .collect();
        let base = testdata::BASE_NS;
        assert_eq!(
            off,
            vec![
                ("blocked", base + 40_000, base + 55_000),
                ("runnable", base + 55_000, base + 60_000),
            ]
        );
        assert!(
            main.off_cpu[0]
                .args
                .contains(&text_arg("waker_comm", "kworker/0:1"))
        );
        assert!(main.off_cpu[0].args.contains(&text_arg("crossing", "B")));

        let allocated: Vec<(u64, u64)> = main
            .allocated
            .iter()
            .map(|p| (p.ts_ns - base, p.value))
            .collect();
        assert_eq!(
            allocated,
            vec![(10_000, 0), (70_000, 300), (110_000, 400), (210_000, 464)]
        );
        // The worker allocated nothing: no counter; its one off-CPU period had no
        // run-queue wait: one slice.
        let worker = &process.threads[1];
        assert!(worker.allocated.is_empty());
        assert_eq!(worker.off_cpu.len(), 1);
    }

    #[test]
    fn empty_capture_has_an_empty_timeline() {
        assert!(build(&Capture::default()).processes.is_empty());
    }
}
