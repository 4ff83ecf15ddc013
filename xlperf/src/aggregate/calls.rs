//! HDR histograms of call durations per (process, boundary).

use std::collections::HashMap;

use hdrhistogram::Histogram;
use xlperf_common::{CallRecord, is_calibration, thread_kind};

/// Durations from 1 ns to 1 hour at 3 significant digits (0.1 % error).
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;
const SIGFIGS: u8 = 3;

/// Statistics of one boundary in one process. Durations are corrected: the probe time
/// measured inside each call (its own pair's in-call cost, and every probe hit nested in
/// it) is removed; `raw` keeps them as measured.
#[derive(Debug, Clone)]
pub struct CallStats {
    pub calls: u64,
    pub total_ns: u64,
    pub depth_max: u32,
    max_ns: u64,
    pub histogram: Histogram<u64>,
    /// The durations as the probes measured them.
    pub raw: RawStats,
    /// Calls per thread kind (`xlperf_common::thread_kind`), indexed by kind.
    pub by_thread: [u64; 5],
    /// Calls on BEAM normal schedulers, where a long call blocks other processes.
    pub normal: Option<Box<NormalSchedulerStats>>,
}

/// Durations with the probe time inside them.
#[derive(Debug, Clone)]
pub struct RawStats {
    pub total_ns: u64,
    pub max_ns: u64,
    /// Probe time removed from the calls, in all.
    pub probe_ns: u64,
    pub histogram: Histogram<u64>,
}

/// Durations of the calls that ran on BEAM normal schedulers.
#[derive(Debug, Clone)]
pub struct NormalSchedulerStats {
    /// Calls longer than the long-call threshold.
    pub long_calls: u64,
    pub max_ns: u64,
    pub histogram: Histogram<u64>,
}

impl CallStats {
    fn new() -> Self {
        Self {
            calls: 0,
            total_ns: 0,
            depth_max: 0,
            max_ns: 0,
            histogram: histogram(),
            raw: RawStats {
                total_ns: 0,
                max_ns: 0,
                probe_ns: 0,
                histogram: histogram(),
            },
            by_thread: [0; 5],
            normal: None,
        }
    }

    pub fn quantile(&self, q: f64) -> u64 {
        self.histogram.value_at_quantile(q)
    }

    /// The exact maximum (the histogram's would be rounded to its precision).
    pub fn max(&self) -> u64 {
        self.max_ns
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGFIGS)
        .unwrap_or_else(|_| Histogram::new(SIGFIGS).unwrap_or_else(|_| unreachable!()))
}

/// All call statistics of a recording.
#[derive(Debug)]
pub struct CallAggregator {
    stats: HashMap<(u32, u32), CallStats>,
    pub records: u64,
    /// A call on a normal scheduler longer than this is a long call.
    pub long_call_ns: u64,
}

impl Default for CallAggregator {
    fn default() -> Self {
        Self::new(DEFAULT_LONG_CALL_NS)
    }
}

/// The erl_nif documentation's limit: a NIF should return within 1 ms.
pub const DEFAULT_LONG_CALL_NS: u64 = 1_000_000;

impl CallAggregator {
    pub fn new(long_call_ns: u64) -> Self {
        Self {
            stats: HashMap::new(),
            records: 0,
            long_call_ns,
        }
    }

    /// Takes in a call whose duration without probe time is `duration`
    /// (`CallRecord::corrected_ns`).
    pub fn record(&mut self, record: &CallRecord, duration: u64) {
        if is_calibration(record.boundary) {
            return;
        }
        self.records += 1;
        let stats = self
            .stats
            .entry((record.pid, record.boundary))
            .or_insert_with(CallStats::new);
        stats.calls += 1;
        stats.total_ns = stats.total_ns.saturating_add(duration);
        stats.depth_max = stats.depth_max.max(record.depth);
        stats.max_ns = stats.max_ns.max(duration);
        stats.histogram.saturating_record(duration.max(1));
        let raw = &mut stats.raw;
        raw.total_ns = raw.total_ns.saturating_add(record.duration_ns);
        raw.max_ns = raw.max_ns.max(record.duration_ns);
        raw.probe_ns = raw
            .probe_ns
            .saturating_add(duration.abs_diff(record.duration_ns));
        raw.histogram.saturating_record(record.duration_ns.max(1));
        if let Some(count) = stats.by_thread.get_mut(record.thread as usize) {
            *count += 1;
        }
        if record.thread == thread_kind::BEAM_NORMAL {
            let normal = stats.normal.get_or_insert_with(|| {
                Box::new(NormalSchedulerStats {
                    long_calls: 0,
                    max_ns: 0,
                    histogram: histogram(),
                })
            });
            // Judged without the probes' own time: xlperf never calls a NIF long
            // because it traced it.
            normal.long_calls += u64::from(duration > self.long_call_ns);
            normal.max_ns = normal.max_ns.max(duration);
            normal.histogram.saturating_record(duration.max(1));
        }
    }

    /// (pid, boundary, stats), sorted by total time, largest first.
    pub fn by_total_time(&self) -> Vec<(u32, u32, &CallStats)> {
        let mut rows: Vec<_> = self
            .stats
            .iter()
            .map(|(&(pid, boundary), stats)| (pid, boundary, stats))
            .collect();
        rows.sort_by(|a, b| {
            b.2.total_ns
                .cmp(&a.2.total_ns)
                .then(a.0.cmp(&b.0))
                .then(a.1.cmp(&b.1))
        });
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xlperf_common::CALIBRATION_BOUNDARY;

    #[test]
    fn long_calls_only_on_normal_schedulers() {
        let mut agg = CallAggregator::new(1_000_000);
        let mut r = call(10, 1, 2_000_000, 1);
        r.thread = thread_kind::BEAM_NORMAL;
        agg.record(&r, r.corrected_ns());
        r.duration_ns = 500_000;
        agg.record(&r, r.corrected_ns());
        r.duration_ns = 3_000_000;
        r.thread = thread_kind::BEAM_DIRTY_CPU;
        agg.record(&r, r.corrected_ns());
        let rows = agg.by_total_time();
        let stats = rows[0].2;
        assert_eq!(stats.by_thread[thread_kind::BEAM_NORMAL as usize], 2);
        assert_eq!(stats.by_thread[thread_kind::BEAM_DIRTY_CPU as usize], 1);
        let normal = stats.normal.as_ref().expect("normal-scheduler calls");
        assert_eq!((normal.long_calls, normal.max_ns), (1, 2_000_000));
    }

    fn call(pid: u32, boundary: u32, duration_ns: u64, depth: u32) -> CallRecord {
        CallRecord {
            start_ns: 0,
            duration_ns,
            boundary,
            parent: 0,
            pid,
            tid: pid,
            depth,
            target: 0,
            thread: 0,
            probe: xlperf_common::ProbeTime::default(),
        }
    }

    #[test]
    fn probe_time_inside_calls_is_removed_and_raw_kept() {
        let mut agg = CallAggregator::new(1_000_000);
        let mut r = call(10, 1, 1_200_000, 1);
        r.thread = thread_kind::BEAM_NORMAL;
        // 1.2 ms measured, 0.5 ms of it allocator probes: a 0.7 ms NIF, not a long one.
        r.probe.emulated_ns = 500_000;
        agg.record(&r, r.corrected_ns());
        let rows = agg.by_total_time();
        let stats = rows[0].2;
        assert_eq!((stats.total_ns, stats.max()), (700_000, 700_000));
        assert_eq!(
            (stats.raw.total_ns, stats.raw.max_ns),
            (1_200_000, 1_200_000)
        );
        assert_eq!(stats.raw.probe_ns, 500_000);
        let normal = stats.normal.as_ref().expect("normal-scheduler calls");
        assert_eq!(normal.long_calls, 0);
        // More probe time than duration (calibration noise) gives 0, not a wrap.
        r.probe.emulated_ns = 2_000_000;
        agg.record(&r, r.corrected_ns());
        assert_eq!(agg.by_total_time()[0].2.total_ns, 700_000);
    }

    #[test]
    fn aggregates_per_pid_and_boundary_sorted_by_total() {
        let mut agg = CallAggregator::default();
        for d in [100, 200, 300] {
            {
                let c = call(10, 1, d, 1);
                agg.record(&c, c.corrected_ns());
            }
        }
        {
            let c = call(10, 2, 10_000, 2);
            agg.record(&c, c.corrected_ns());
        }
        {
            let c = call(11, 1, 5, 1);
            agg.record(&c, c.corrected_ns());
        }
        {
            let c = call(11, CALIBRATION_BOUNDARY, 5, 1);
            agg.record(&c, c.corrected_ns());
        }
        assert_eq!(agg.records, 5);
        let rows = agg.by_total_time();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].0, rows[0].1), (10, 2));
        assert_eq!(rows[0].2.depth_max, 2);
        let (_, _, stats) = rows[1];
        assert_eq!((stats.calls, stats.total_ns, stats.max()), (3, 600, 300));
        assert_eq!(stats.quantile(0.5), 200);
    }
}
