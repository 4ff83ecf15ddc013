//! Loading the programs and measuring what probes cost, before anything is attached.

use anyhow::Context as _;
use xlperf_common::{Counters, is_calibration};

use crate::{
    cli::ProbeArgs,
    probe::bpf::{
        calibrate::{self, Calibration},
        loader,
        ring::CallRecords,
    },
};

/// The loaded programs, their ring, and the calibration.
pub struct Loaded {
    pub ebpf: aya::Ebpf,
    pub records: CallRecords,
    pub calibration: Calibration,
    /// The loss counters once calibrated: a run reports what happens after this point
    /// (a small --ring-size drops some of the calibration's own records).
    pub baseline: Counters,
}

/// Loads the programs (the ring sized by `--ring-size`, the live-block map by
/// `live_blocks` when allocations are traced), calibrates when asked (with `kernel`, the
/// kprobe pair too), and reads the baseline.
pub fn load(
    probes: &ProbeArgs,
    live_blocks: u32,
    sample_bytes: u64,
    calibrate: bool,
    kernel: bool,
) -> anyhow::Result<Loaded> {
    let mut ebpf = loader::load(
        probes.ring_size,
        if probes.alloc { live_blocks } else { 0 },
        sample_bytes,
    )?;
    let ring = loader::call_records(&mut ebpf)?;
    let mut records = CallRecords::new(ring).context("polling the ring buffer")?;
    let calibration = if calibrate {
        calibrate::measure(&mut ebpf, records.ring_mut(), probes.alloc, kernel)
            .context("measuring what the probes cost")?
    } else {
        Calibration::none()
    };
    records.drain(|r| debug_assert!(is_calibration(r.boundary)));
    let baseline = loader::counters(&ebpf)?;
    if calibration.seen_calls + baseline.dropped != calibration.probed_calls {
        log::warn!(
            "probe calibration traced {} of {} calls: this kernel loses uprobe hits",
            calibration.seen_calls,
            calibration.probed_calls
        );
    }
    Ok(Loaded {
        ebpf,
        records,
        calibration,
        baseline,
    })
}

impl Loaded {
    /// The loss counters since the baseline.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        Ok(loader::counters(&self.ebpf)?.zip_with(&self.baseline, u64::saturating_sub))
    }
}
