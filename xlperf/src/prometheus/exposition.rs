//! What `/metrics` shows: per-crossing families and xlperf's own figures, kept in a
//! prometheus-client registry, with a cap on label sets and the removal of processes
//! gone for longer than the grace period.

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use xlperf_common::{CallRecord, Cost, thread_kind};

use super::syscalls::SyscallSeries;
use crate::model::{BoundaryInfo, SyscallEntry};

/// The labels of every per-crossing series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Crossing {
    pub pid: String,
    pub comm: String,
    pub runtime: String,
    pub library: String,
    pub function: String,
}

/// Latency buckets: 1 µs to about 16.8 s, ×4 each (13 buckets plus +Inf).
#[derive(Clone, Copy)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(1e-6, 4.0, 13))
    }
}

type Counters = Family<Crossing, Counter<u64>>;
type Seconds = Family<Crossing, Counter<f64>>;

pub struct Exposition {
    registry: Registry,
    duration: Family<Crossing, Histogram, Buckets>,
    calls: Counters,
    long_nif: Counters,
    allocs: Counters,
    alloc_bytes: Counters,
    frees: Counters,
    free_bytes: Counters,
    oncpu: Seconds,
    offcpu: Seconds,
    runq: Seconds,
    /// xlperf's own figures.
    pub own: Own,
    /// Label sets in use, per pid: the cap counts them, and a pid's go when it is dropped.
    series: HashMap<u32, Vec<Crossing>>,
    max_series: usize,
    long_call_ns: u64,
    /// `--syscalls`' series, once enabled.
    syscalls: Option<SyscallSeries>,
}

impl Exposition {
    pub fn new(max_series: usize, long_call_ns: u64, alloc: bool, sched: bool) -> Self {
        let mut r = Registry::default();
        Self {
            duration: register(
                &mut r,
                "xlperf_crossing_duration_seconds",
                "Wall time of each call that crossed a language boundary",
                Family::new_with_constructor(Buckets),
                true,
            ),
            calls: register(
                &mut r,
                "xlperf_crossing_calls",
                "Calls that crossed a language boundary",
                Counters::default(),
                true,
            ),
            long_nif: register(
                &mut r,
                "xlperf_nif_long_calls",
                "NIF calls on a normal BEAM scheduler longer than --long-nif (each holds up every process queued there)",
                Counters::default(),
                true,
            ),
            allocs: register(
                &mut r,
                "xlperf_crossing_allocs",
                "Allocations made inside the crossing",
                Counters::default(),
                alloc,
            ),
            alloc_bytes: register(
                &mut r,
                "xlperf_crossing_alloc_bytes",
                "Bytes allocated inside the crossing",
                Counters::default(),
                alloc,
            ),
            frees: register(
                &mut r,
                "xlperf_crossing_frees",
                "Frees made inside the crossing",
                Counters::default(),
                alloc,
            ),
            free_bytes: register(
                &mut r,
                "xlperf_crossing_free_bytes",
                "Bytes freed inside the crossing",
                Counters::default(),
                alloc,
            ),
            oncpu: register(
                &mut r,
                "xlperf_crossing_oncpu_seconds",
                "Time the crossing ran on a CPU",
                Seconds::default(),
                sched,
            ),
            offcpu: register(
                &mut r,
                "xlperf_crossing_offcpu_seconds",
                "Time the crossing was blocked off CPU (asleep or waiting)",
                Seconds::default(),
                sched,
            ),
            runq: register(
                &mut r,
                "xlperf_crossing_runq_seconds",
                "Time the crossing was runnable, waiting for a CPU",
                Seconds::default(),
                sched,
            ),
            own: Own::register(&mut r),
            registry: r,
            series: HashMap::new(),
            max_series,
            long_call_ns,
            syscalls: None,
        }
    }

    /// Registers the `--syscalls` families.
    pub fn enable_syscalls(&mut self) {
        if self.syscalls.is_none() {
            self.syscalls = Some(SyscallSeries::register(&mut self.registry));
        }
    }

    /// Takes in the kernel's system-call totals (`--syscalls`), named by `boundaries`
    /// and `comm`. Crossings count towards the label-set cap as their calls do.
    pub fn syscalls(
        &mut self,
        entries: &[SyscallEntry],
        boundaries: &BTreeMap<u32, BoundaryInfo>,
        comm: impl Fn(u32) -> String,
    ) {
        let Some(mut series) = self.syscalls.take() else {
            return;
        };
        series.add(entries, boundaries, |pid, info| {
            Some(match info {
                Some(info) => self.labels(pid, &comm(pid), info),
                None => Crossing {
                    pid: pid.to_string(),
                    comm: comm(pid),
                    runtime: String::new(),
                    library: String::new(),
                    function: String::new(),
                },
            })
        });
        self.syscalls = Some(series);
    }

    /// Takes in one call of `boundary` in process `pid` named `comm`.
    /// A call whose duration without probe time is `duration`.
    pub fn call(
        &mut self,
        record: &CallRecord,
        duration: u64,
        cost: Option<&Cost>,
        boundary: &BoundaryInfo,
        comm: &str,
    ) {
        let labels = self.labels(record.pid, comm, boundary);
        self.own.records.inc();
        self.own.probe_hits.inc_by(2);
        self.calls.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(duration as f64 / 1e9);
        if record.thread == thread_kind::BEAM_NORMAL {
            // Created at 0 with the NIF's first call, so that increase() sees the first
            // long call too.
            let long = self.long_nif.get_or_create(&labels);
            if duration > self.long_call_ns {
                long.inc();
            }
        }
        if let Some(cost) = cost {
            if cost.alloc_count + cost.free_count > 0 {
                self.allocs.get_or_create(&labels).inc_by(cost.alloc_count);
                self.alloc_bytes
                    .get_or_create(&labels)
                    .inc_by(cost.alloc_bytes);
                self.frees.get_or_create(&labels).inc_by(cost.free_count);
                self.free_bytes
                    .get_or_create(&labels)
                    .inc_by(cost.free_bytes);
            }
            self.offcpu
                .get_or_create(&labels)
                .inc_by(cost.offcpu_ns as f64 / 1e9);
            self.runq
                .get_or_create(&labels)
                .inc_by(cost.runq_ns as f64 / 1e9);
        }
        let busy = duration.saturating_sub(cost.map_or(0, |c| c.offcpu_ns + c.runq_ns));
        self.oncpu.get_or_create(&labels).inc_by(busy as f64 / 1e9);
    }

    /// The series of this call, or the pid's `other` series past the cap.
    fn labels(&mut self, pid: u32, comm: &str, boundary: &BoundaryInfo) -> Crossing {
        let labels = Crossing {
            pid: pid.to_string(),
            comm: comm.to_owned(),
            runtime: boundary.runtime.clone(),
            library: boundary.library.clone(),
            function: boundary.function.clone(),
        };
        let in_use: usize = self.series.values().map(Vec::len).sum();
        let known = self.series.entry(pid).or_default();
        if known.contains(&labels) {
            return labels;
        }
        if in_use >= self.max_series {
            self.own.overflow.inc();
            let other = Crossing {
                library: "other".into(),
                function: "other".into(),
                ..labels
            };
            if !known.contains(&other) {
                known.push(other.clone());
            }
            return other;
        }
        known.push(labels.clone());
        labels
    }

    /// Drops every series of `pid` (it exited longer than the grace period ago).
    pub fn forget(&mut self, pid: u32) {
        if let Some(series) = self.syscalls.as_mut() {
            series.forget(pid);
        }
        for labels in self.series.remove(&pid).unwrap_or_default() {
            self.duration.remove(&labels);
            for family in [
                &self.calls,
                &self.long_nif,
                &self.allocs,
                &self.alloc_bytes,
                &self.frees,
                &self.free_bytes,
            ] {
                family.remove(&labels);
            }
            for family in [&self.oncpu, &self.offcpu, &self.runq] {
                family.remove(&labels);
            }
        }
    }

    /// The exposition in OpenMetrics text, as prometheus-client writes it.
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The exposition in Prometheus' text format 0.0.4.
    pub fn prometheus_text(&self) -> String {
        to_prometheus_text(&self.openmetrics())
    }
}

/// Turns OpenMetrics text into Prometheus text 0.0.4: counter families are named with
/// their `_total` suffix, `# UNIT` lines, `_created` samples and `# EOF` go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        let is_created = line.split(['{', ' ']).next().is_some_and(|name| {
            name.ends_with("_created") && counters.iter().any(|c| name == format!("{c}_created"))
        });
        if is_created {
            continue;
        }
        let _ = writeln!(out, "{}", rewritten.as_deref().unwrap_or(line));
    }
    out
}

/// xlperf's own figures: what it read, lost and cost, and how big it is.
pub struct Own {
    pub records: Counter<u64>,
    pub dropped: Counter<u64>,
    pub probe_hits: Counter<u64>,
    pub probe_cost: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub overhead: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub rss: Gauge<i64>,
    pub overflow: Counter<u64>,
    pub targets: Gauge<i64>,
}

impl Own {
    fn register(r: &mut Registry) -> Self {
        Self {
            records: register(
                r,
                "xlperf_records_processed",
                "Call records read from the kernel",
                Counter::default(),
                true,
            ),
            dropped: register(
                r,
                "xlperf_records_dropped",
                "Records lost because the ring buffer was full (raise --ring-size)",
                Counter::default(),
                true,
            ),
            probe_hits: register(
                r,
                "xlperf_probe_hits",
                "Probe hits (an entry and a return per traced call)",
                Counter::default(),
                true,
            ),
            probe_cost: register(
                r,
                "xlperf_probe_cost_seconds",
                "Measured wall time one probe pair adds to a call on this host",
                Gauge::default(),
                true,
            ),
            overhead: register(
                r,
                "xlperf_overhead_ratio",
                "Estimated share of one CPU spent in xlperf's probes over the last second",
                Gauge::default(),
                true,
            ),
            rss: register(
                r,
                "xlperf_resident_memory_bytes",
                "xlperf's own resident memory",
                Gauge::default(),
                true,
            ),
            overflow: register(
                r,
                "xlperf_series_overflow",
                "Calls folded into function=\"other\" because --max-series label sets were in use",
                Counter::default(),
                true,
            ),
            targets: register(
                r,
                "xlperf_targets",
                "Processes traced now",
                Gauge::default(),
                true,
            ),
        }
    }
}

/// `metric`, registered under `name` when `on` (a family for a probe flag not given is
/// kept unregistered: no empty series of it appear).
fn register<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
    on: bool,
) -> M {
    if on {
        registry.register(name, help, metric.clone());
    }
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boundary(function: &str) -> BoundaryInfo {
        BoundaryInfo {
            library: "libz.so.1".into(),
            function: function.into(),
            runtime: "ffi".into(),
            ..BoundaryInfo::default()
        }
    }

    fn call(pid: u32, duration_ns: u64) -> CallRecord {
        CallRecord {
            pid,
            tid: pid,
            duration_ns,
            depth: 1,
            ..CallRecord::default()
        }
    }

    #[test]
    fn counts_calls_and_converts_to_prometheus_text() {
        let mut e = Exposition::new(100, 1_000_000, true, true);
        for _ in 0..3 {
            e.call(&call(7, 2_000), 2_000, None, &boundary("deflate"), "app");
        }
        let om = e.openmetrics();
        assert!(om.contains("# TYPE xlperf_crossing_calls counter"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = e.prometheus_text();
        assert!(
            text.contains("# TYPE xlperf_crossing_calls_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                "xlperf_crossing_calls_total{pid=\"7\",comm=\"app\",runtime=\"ffi\",library=\"libz.so.1\",function=\"deflate\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains("xlperf_crossing_duration_seconds_count{"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn label_sets_beyond_the_cap_fold_into_other_and_are_counted() {
        let mut e = Exposition::new(2, 1_000_000, false, false);
        for f in ["a", "b", "c", "d"] {
            e.call(&call(7, 10), 10, None, &boundary(f), "app");
        }
        let text = e.prometheus_text();
        assert!(text.contains("function=\"a\""), "{text}");
        assert!(text.contains("function=\"b\""), "{text}");
        assert!(!text.contains("function=\"c\""), "{text}");
        assert!(
            text.contains("library=\"other\",function=\"other\"} 2"),
            "{text}"
        );
        assert!(text.contains("xlperf_series_overflow_total 2"), "{text}");
    }

    #[test]
    fn a_forgotten_process_leaves_the_exposition() {
        let mut e = Exposition::new(100, 1_000_000, false, false);
        e.call(&call(7, 10), 10, None, &boundary("a"), "app");
        e.call(&call(8, 10), 10, None, &boundary("a"), "other");
        e.forget(7);
        let text = e.prometheus_text();
        assert!(!text.contains("pid=\"7\""), "{text}");
        assert!(text.contains("pid=\"8\""), "{text}");
    }
}
