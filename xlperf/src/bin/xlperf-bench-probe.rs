//! Benchmark helper for `cargo xtask bench`: attaches xlperf's *empty* uprobe (and
//! optionally uretprobe) to one function of one process, prints `attached`, and waits
//! for that process to exit. It measures the floor xlperf's real probes are compared to.
//!
//! usage: xlperf-bench-probe PID BINARY SYMBOL OFFSET entry|pair

use std::{num::NonZeroU32, path::Path, process::ExitCode};

use anyhow::{Context as _, anyhow, bail};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeScope};
use xlperf::probe::{
    bpf::loader::{self, EMPTY_ENTRY, EMPTY_EXIT},
    elf::ElfImage,
    proc::target,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xlperf-bench-probe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pid, binary, symbol, offset, mode] = args.as_slice() else {
        bail!("usage: xlperf-bench-probe PID BINARY SYMBOL OFFSET entry|pair");
    };
    let pid: u32 = pid.parse().context("PID")?;
    let offset: u64 = offset.parse().context("OFFSET")?;
    let image = ElfImage::read(Path::new(binary))?;
    let function = image
        .functions
        .iter()
        .find(|f| f.names.iter().any(|n| n == symbol))
        .ok_or_else(|| anyhow!("{symbol} not found in {binary}"))?;
    let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
    let file_offset = function.file_offset + offset;

    let mut ebpf = loader::load(loader::DEFAULT_RING_BYTES, 0, 0)?;
    let programs: &[&'static str] = match mode.as_str() {
        "entry" => &[EMPTY_ENTRY],
        "pair" => &[EMPTY_EXIT, EMPTY_ENTRY],
        other => bail!("mode must be entry or pair, not {other}"),
    };
    for &name in programs {
        loader::uprobe(&mut ebpf, name)?
            .attach(
                UProbeAttachLocation::AbsoluteOffset(file_offset),
                binary,
                scope,
            )
            .with_context(|| format!("attaching {name}"))?;
    }
    println!("attached");
    let pidfd = target::pidfd(pid).context("pidfd_open")?;
    let mut poll = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&pidfd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one valid pollfd we own; blocks until the target exits.
    unsafe { libc::poll(&mut poll, 1, -1) };
    Ok(())
}
