//! Where a run's named events go. `record` feeds the summary's aggregates and, with
//! `-o`, the capture writer; `serve` feeds the Prometheus exposition; `report` replays a
//! capture file into the same aggregates. A capture replayed through [`replay`] is the
//! unprivileged seam the sinks are tested through.

use xlperf_common::OffCpuRecord;

use super::drain::{Batch, Names};
use crate::{
    capture::file::CaptureWriter,
    model::{CallEvent, Capture},
    prometheus::exposition::Exposition,
    report::build::Aggregates,
};

/// One consumer of a run's events, in the order the ring gave them.
pub trait Sink {
    /// Processes, threads and boundaries named for the first time in `batch` (before its
    /// calls); `names` has every name so far.
    fn names(&mut self, _batch: &Batch, _names: &Names) -> anyhow::Result<()> {
        Ok(())
    }

    /// Completed calls, NIFs already named.
    fn calls(&mut self, calls: &[CallEvent], names: &Names) -> anyhow::Result<()>;

    /// Off-CPU periods of target threads, charged to their crossing.
    fn off_cpu(&mut self, _periods: &[OffCpuRecord]) -> anyhow::Result<()> {
        Ok(())
    }

    /// The end of a batch: what should be on disk by now.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Hands `batch` to every sink: names first, then calls, then off-CPU periods.
pub fn feed(batch: &Batch, names: &Names, sinks: &mut [&mut dyn Sink]) -> anyhow::Result<()> {
    for sink in sinks.iter_mut() {
        sink.names(batch, names)?;
        sink.calls(&batch.calls, names)?;
        sink.off_cpu(&batch.off_cpu)?;
        sink.flush()?;
    }
    Ok(())
}

/// A capture file's events, as one batch, into `sinks`: what a recording fed them live.
pub fn replay(capture: &Capture, sinks: &mut [&mut dyn Sink]) -> anyhow::Result<()> {
    let names = Names {
        processes: capture.processes.clone(),
        threads: capture.threads.clone(),
        boundaries: capture.boundaries.clone(),
        nif_site: None,
    };
    let batch = Batch {
        calls: capture.calls.clone(),
        off_cpu: capture.off_cpu.clone(),
        new_processes: names.processes.clone(),
        new_threads: names.threads.clone(),
        new_boundaries: names.boundaries.clone(),
        ..Batch::default()
    };
    feed(&batch, &names, sinks)
}

impl Sink for Aggregates {
    fn calls(&mut self, calls: &[CallEvent], _names: &Names) -> anyhow::Result<()> {
        for call in calls {
            self.call(call);
        }
        Ok(())
    }

    fn off_cpu(&mut self, periods: &[OffCpuRecord]) -> anyhow::Result<()> {
        for period in periods {
            Aggregates::off_cpu(self, period);
        }
        Ok(())
    }
}

impl Sink for CaptureWriter {
    fn names(&mut self, batch: &Batch, _names: &Names) -> anyhow::Result<()> {
        CaptureWriter::names(self, &batch.new_processes, &batch.new_threads)?;
        self.boundaries(&batch.new_boundaries)?;
        Ok(())
    }

    fn calls(&mut self, calls: &[CallEvent], _names: &Names) -> anyhow::Result<()> {
        Ok(CaptureWriter::calls(self, calls)?)
    }

    fn off_cpu(&mut self, periods: &[OffCpuRecord]) -> anyhow::Result<()> {
        Ok(CaptureWriter::off_cpu(self, periods)?)
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(CaptureWriter::flush(self)?)
    }
}

impl Sink for Exposition {
    /// Each call becomes a sample of its series (pid, comm, runtime, library, function).
    fn calls(&mut self, calls: &[CallEvent], names: &Names) -> anyhow::Result<()> {
        for call in calls {
            let Some(info) = names.boundaries.get(&call.record.boundary) else {
                continue;
            };
            let comm = names
                .processes
                .get(&call.record.pid)
                .map_or("?", String::as_str);
            let duration = call.record.corrected_ns();
            self.call(&call.record, duration, call.cost.as_ref(), info, comm);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testdata;

    #[test]
    fn a_replayed_capture_feeds_the_exposition_and_the_aggregates_alike() {
        let capture = testdata::capture();
        let mut exposition = Exposition::new(100, 1_000_000, false, false);
        let mut aggregates = Aggregates::new(&capture.meta);
        replay(&capture, &mut [&mut exposition, &mut aggregates]).expect("replay");
        let text = exposition.prometheus_text();
        // Every call of the capture is counted once, in its process's series.
        let calls: u64 = capture
            .calls
            .iter()
            .filter(|c| capture.boundaries.contains_key(&c.record.boundary))
            .count() as u64;
        assert_eq!(aggregates.calls.records, calls);
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("xlperf_crossing_calls_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(total as u64, calls, "{text}");
        assert!(text.contains("comm=\"python3\""), "{text}");
    }

    /// The value of the one sample of `family` whose labels include `labels`.
    fn sample(text: &str, family: &str, labels: &str) -> f64 {
        let found: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(found.len(), 1, "{family} {labels}:\n{text}");
        found[0]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn the_exposition_gives_each_series_its_exact_calls_time_and_costs() {
        let capture = testdata::capture();
        let mut exposition = Exposition::new(100, 1_000_000, true, true);
        replay(&capture, &mut [&mut exposition]).expect("replay");
        let text = exposition.prometheus_text();
        let a = "function=\"A\"";
        let b = "function=\"B\"";
        // A: two calls, 100 µs + 10 µs, 100 B + 64 B in two allocations.
        assert_eq!(sample(&text, "xlperf_crossing_calls_total", a), 2.0);
        let a_seconds = sample(&text, "xlperf_crossing_duration_seconds_sum", a);
        assert!(close(a_seconds, 110e-6), "{a_seconds}");
        assert_eq!(sample(&text, "xlperf_crossing_allocs_total", a), 2.0);
        assert_eq!(sample(&text, "xlperf_crossing_alloc_bytes_total", a), 164.0);
        // B: 40 µs, of which 15 asleep and 5 runnable: 20 on a CPU.
        let offcpu = sample(&text, "xlperf_crossing_offcpu_seconds_total", b);
        let runq = sample(&text, "xlperf_crossing_runq_seconds_total", b);
        let oncpu = sample(&text, "xlperf_crossing_oncpu_seconds_total", b);
        assert!(close(offcpu, 15e-6) && close(runq, 5e-6), "{offcpu} {runq}");
        assert!(close(oncpu, 20e-6), "{oncpu}");
        // One record per call, two probe hits per record.
        let records: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("xlperf_records_processed_total ")?
                    .parse()
                    .ok()
            })
            .expect("records");
        assert_eq!(records, capture.calls.len() as f64);
    }

    #[test]
    fn a_forgotten_process_takes_every_series_with_it() {
        let capture = testdata::capture();
        let mut exposition = Exposition::new(100, 1_000_000, true, true);
        replay(&capture, &mut [&mut exposition]).expect("replay");
        let pid = format!("pid=\"{}\"", testdata::PID);
        assert!(exposition.prometheus_text().contains(&pid));
        exposition.forget(testdata::PID);
        let text = exposition.prometheus_text();
        assert!(!text.contains(&pid), "{text}");
    }

    #[test]
    fn series_past_the_cap_are_counted_in_the_process_other_series() {
        let capture = testdata::capture();
        // Four functions, room for two series.
        let mut exposition = Exposition::new(2, 1_000_000, false, false);
        replay(&capture, &mut [&mut exposition]).expect("replay");
        let text = exposition.prometheus_text();
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("xlperf_crossing_calls_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(total, capture.calls.len() as f64, "{text}");
        // B (1 call) and A (2) fit; C and D (1 each) share `other`.
        assert_eq!(
            sample(&text, "xlperf_crossing_calls_total", "function=\"other\""),
            2.0
        );
    }

    #[test]
    fn the_capture_writer_sink_writes_a_file_that_replays_to_the_same_summary() {
        let capture = testdata::capture();
        let path = std::env::temp_dir().join(format!("xlperf-sink-{}.xlperf", std::process::id()));
        let mut writer = CaptureWriter::create(&path, &capture.meta).expect("create");
        replay(&capture, &mut [&mut writer]).expect("replay");
        writer
            .names(&capture.processes, &capture.threads)
            .expect("names");
        let end = crate::model::End {
            duration_ns: 210_000,
            ..crate::model::End::default()
        };
        writer.finish(&end).expect("finish");
        let read = crate::capture::file::read(&path).expect("read back");
        let _ = std::fs::remove_file(&path);
        assert_eq!(read.calls.len(), capture.calls.len());
        assert_eq!(read.off_cpu.len(), capture.off_cpu.len());
        assert_eq!(read.boundaries, capture.boundaries);
        let json = |c: &Capture| {
            let mut c = c.clone();
            c.end = Some(end.clone());
            serde_json::to_value(crate::report::build::from_capture(&c).boundaries).expect("json")
        };
        assert_eq!(json(&read), json(&capture));
    }

    #[test]
    fn the_aggregates_sum_each_crossing_exactly() {
        let capture = testdata::capture();
        let summary = crate::report::build::from_capture(&capture);
        let row = |f: &str| {
            summary
                .boundaries
                .iter()
                .find(|b| b.function == f)
                .unwrap_or_else(|| panic!("no row {f}"))
        };
        assert_eq!((row("A").calls, row("A").total_ns), (2, 110_000));
        assert_eq!((row("B").calls, row("B").total_ns), (1, 40_000));
        assert_eq!((row("D").calls, row("D").total_ns), (1, 300));
        let b = row("B").sched.as_ref().expect("B sched");
        assert_eq!(
            (b.fields.offcpu_ns, b.fields.runq_ns, b.fields.oncpu_ns),
            (15_000, 5_000, 20_000)
        );
        let a = row("A").alloc.as_ref().expect("A alloc");
        assert_eq!((a.fields.alloc_count, a.fields.alloc_bytes), (2, 164));
    }
}
