//! Measures what one traced call costs on this host: xlperf's own probe pair on a
//! function of its own, timed with and without the probes.

use std::{
    fs,
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
};
use xlperf_common::CALIBRATION_BOUNDARY;

use super::{
    ProbeError,
    loader::{self, FFI_ENTRY, FFI_EXIT},
};

// A function with a fixed `push` prologue (a site the kernel emulates, like the sites
// xlperf picks), so the measurement does not depend on what the compiler emits.
core::arch::global_asm!(
    ".globl xlperf_calibration_target",
    ".type xlperf_calibration_target,@function",
    "xlperf_calibration_target:",
    "push rbp",
    "mov rbp, rsp",
    "pop rbp",
    "ret",
    ".size xlperf_calibration_target, .-xlperf_calibration_target",
);

unsafe extern "C" {
    fn xlperf_calibration_target();
}

const CALLS: u32 = 4000;
const ROUNDS: usize = 3;

/// Result of a calibration run.
#[derive(Debug, Clone, Copy)]
pub struct ProbeCost {
    /// Added wall time per traced call (entry + return probe), ns.
    pub per_call_ns: u64,
    /// Calls made while the probes were attached; each must produce one record.
    pub probed_calls: u64,
}

/// Attaches the FFI probes to our own calibration function, times it, and detaches.
pub fn measure(ebpf: &mut Ebpf) -> Result<ProbeCost, ProbeError> {
    let (exe, offset) = own_file_offset()?;
    let bare = fastest(|| time_calls(CALLS));

    let mut links = Vec::new();
    for program in [FFI_EXIT, FFI_ENTRY] {
        let probe = loader::uprobe(ebpf, program)?;
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(offset),
            cookie: Some(u64::from(CALIBRATION_BOUNDARY)),
        };
        let link = probe
            .attach(point, &exe, UProbeScope::CallingProcess)
            .map_err(|source| ProbeError::Program {
                what: format!("attaching {program} for calibration to {}", exe.display()),
                source,
            })?;
        links.push((program, link));
    }
    let probed = fastest(|| time_calls(CALLS));
    for (program, link) in links {
        loader::uprobe(ebpf, program)?
            .detach(link)
            .map_err(|source| ProbeError::Program {
                what: format!("detaching calibration probe {program}"),
                source,
            })?;
    }
    let added = probed.saturating_sub(bare).as_nanos() / u128::from(CALLS);
    Ok(ProbeCost {
        per_call_ns: u64::try_from(added).unwrap_or(u64::MAX),
        probed_calls: u64::from(CALLS) * ROUNDS as u64,
    })
}

fn time_calls(n: u32) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: the function only pushes and pops rbp and returns; it has no arguments.
        unsafe { xlperf_calibration_target() };
        black_box(());
    }
    start.elapsed()
}

fn fastest(mut f: impl FnMut() -> Duration) -> Duration {
    (0..ROUNDS).map(|_| f()).min().unwrap_or_default()
}

/// The executable file and file offset of the calibration function, from our own maps.
fn own_file_offset() -> Result<(PathBuf, u64), ProbeError> {
    let addr = xlperf_calibration_target as *const () as usize as u64;
    let maps = fs::read_to_string("/proc/self/maps").map_err(|source| ProbeError::Read {
        path: "/proc/self/maps".into(),
        source,
    })?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_perms), Some(offset)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = fields.nth(2);
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        if (start..end).contains(&addr)
            && let Some(path) = path
        {
            return Ok((PathBuf::from(path), addr - start + offset));
        }
    }
    Err(ProbeError::Read {
        path: "/proc/self/maps".into(),
        source: std::io::Error::other("the calibration function is not in a file mapping"),
    })
}
