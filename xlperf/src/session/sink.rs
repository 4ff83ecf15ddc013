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
}
