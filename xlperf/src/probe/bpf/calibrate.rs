//! Measures what probes cost on this host, per kind of site, before anything is attached
//! to a target: xlperf's own programs on functions of its own, timed with and without
//! them.
//!
//! Two figures matter for a probe pair. The whole cost is what one traced call adds to
//! the target (the overhead figure). The in-call cost is the part that falls between the
//! entry and return timestamps, inside the measured duration; it is removed from every
//! reported duration. A probe the kernel must single-step costs 3.5-15 µs on our VMs against
//! ~1 µs for an emulated one, and most of that lands inside the call, so each kind of
//! site is measured on its own. Allocator probes run inside the calls they are charged
//! to: their whole cost is removed from the enclosing call's duration.

use std::{
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeScope},
};
use xlperf_common::{CALIBRATION_BOUNDARY, CALIBRATION_KERNEL, CALIBRATION_STEPPED, probe_cookie};

pub use crate::model::{PairCost, PerKind, ProbeCosts, SiteKind};

use super::{
    ProbeError,
    links::Links,
    loader::{self, ALLOC_EXIT, FFI_ENTRY, FFI_EXIT, FREE_ENTRY, MALLOC_ENTRY},
    tracepoints,
};
use crate::probe::kernel;
use aya::maps::{MapData, RingBuf};

use crate::probe::bpf::ring::{self, Item};

// Functions with fixed first instructions, so the measurement does not depend on what the
// compiler emits: `push rbp` is emulated by the kernel, `xor eax,eax` and `mov rax,rdi`
// are single-stepped. The alloc ones return their argument, as a fake block address.
// Each has an identical `_twin` that is never probed: timing the two in alternation, in
// the same rounds, cancels what the rest of the machine does meanwhile.
macro_rules! calibration_functions {
    ($($name:literal: $($instr:literal),+;)+) => {
        core::arch::global_asm!(
            $(
                concat!(".globl ", $name),
                concat!(".type ", $name, ",@function"),
                concat!($name, ":"),
                $($instr,)+
                concat!(".size ", $name, ", .-", $name),
                concat!(".globl ", $name, "_twin"),
                concat!(".type ", $name, "_twin,@function"),
                concat!($name, "_twin:"),
                $($instr,)+
                concat!(".size ", $name, "_twin, .-", $name, "_twin"),
            )+
        );
    };
}

calibration_functions! {
    "xlperf_cal_pair_emulated": "push rbp", "mov rbp, rsp", "pop rbp", "ret";
    "xlperf_cal_pair_stepped": "xor eax, eax", "ret";
    "xlperf_cal_alloc_emulated": "push rbp", "mov rax, rdi", "pop rbp", "ret";
    "xlperf_cal_alloc_stepped": "mov rax, rdi", "ret";
    "xlperf_cal_free_emulated": "push rbp", "pop rbp", "ret";
    "xlperf_cal_free_stepped": "xor eax, eax", "ret";
}

// SAFETY (of the declarations): each matches the assembly above: no arguments or one
// u64 in rdi, a u64 in rax for the alloc ones, nothing else read or written.
unsafe extern "C" {
    fn xlperf_cal_pair_emulated();
    fn xlperf_cal_pair_emulated_twin();
    fn xlperf_cal_pair_stepped();
    fn xlperf_cal_pair_stepped_twin();
    fn xlperf_cal_alloc_emulated(block: u64) -> u64;
    fn xlperf_cal_alloc_emulated_twin(block: u64) -> u64;
    fn xlperf_cal_alloc_stepped(block: u64) -> u64;
    fn xlperf_cal_alloc_stepped_twin(block: u64) -> u64;
    fn xlperf_cal_free_emulated(block: u64);
    fn xlperf_cal_free_emulated_twin(block: u64);
    fn xlperf_cal_free_stepped(block: u64);
    fn xlperf_cal_free_stepped_twin(block: u64);
}

type PairFn = unsafe extern "C" fn();
type AllocFn = unsafe extern "C" fn(u64) -> u64;
type FreeFn = unsafe extern "C" fn(u64);

/// Calls per round at an emulated site, and at a single-stepped one (4-15x dearer).
const CALLS_EMULATED: u32 = 1000;
const CALLS_STEPPED: u32 = 250;
const ROUNDS: usize = 9;

/// A calibration's costs, how many of its probed calls came back as records, and its
/// probes, still attached (to xlperf's own functions, which nothing else calls).
pub struct Calibration {
    pub costs: ProbeCosts,
    /// Calls made while the FFI pair was attached: each must produce one record.
    pub probed_calls: u64,
    /// Records of them read back (the others were dropped or lost).
    pub seen_calls: u64,
    /// Dropping them detaches them. Each detach makes the kernel wait ~110 ms for grace
    /// periods, and while it waits, other processes' probe hits and program starts slow
    /// down (measured: a traced command started next to a detaching xlperf ran 0.5 s
    /// late): so they are kept until the recording ends, and go with its own probes.
    pub probes: Vec<UProbeLink>,
    /// The kprobe pair's, likewise (`--kfunc`).
    pub kernel_probes: Links,
    /// System calls made while the kprobe pair was attached, and records of them read.
    pub kernel_calls: (u64, u64),
}

impl Calibration {
    /// No calibration: the probes cost nothing as far as the figures know (only for
    /// counting calls, never for timing them).
    pub fn none() -> Self {
        Self {
            costs: ProbeCosts::default(),
            probed_calls: 0,
            seen_calls: 0,
            probes: Vec::new(),
            kernel_probes: Links::default(),
            kernel_calls: (0, 0),
        }
    }
}

/// Measures the probe pair at both kinds of site, with `alloc` the allocator probes and
/// with `kernel` the kprobe pair. Calibration records are drained from the call-record
/// ring `records` as they come; the calibration probes come back attached
/// ([`Calibration::probes`]).
pub fn measure(
    ebpf: &mut Ebpf,
    records: &mut RingBuf<MapData>,
    alloc: bool,
    kernel: bool,
) -> Result<Calibration, ProbeError> {
    let mut links = Vec::new();
    let mut seen = 0;
    let mut costs = measure_all(ebpf, records, alloc, &mut links, &mut seen)?;
    let mut kernel_probes = Links::default();
    let mut kernel_calls = (0, 0);
    if kernel {
        let (pair, seen) = kernel_pair(ebpf, records, &mut kernel_probes)?;
        costs.kernel_pair = pair;
        kernel_calls = (u64::from(CALLS_KERNEL) * ROUNDS as u64, seen);
    }
    Ok(Calibration {
        costs,
        probed_calls: u64::from(CALLS_EMULATED + CALLS_STEPPED) * ROUNDS as u64,
        seen_calls: seen,
        probes: links,
        kernel_probes,
        kernel_calls,
    })
}

/// Kernel functions the kprobe pair can be measured on, with a system call that reaches
/// each. First choice: what an unused system call number reaches (335-423 are kept free
/// on x86-64), which returns -ENOSYS at once, so the durations the pair measures on it are
/// the pair's own in-call cost; kernels that do not let it be probed (6.1) get getppid,
/// whose few instructions (tens of ns) then count as probe time.
const KERNEL_CALIBRATION: [(&str, libc::c_long); 2] = [
    ("__do_sys_ni_syscall", 400),
    ("__do_sys_getppid", libc::SYS_getppid),
];

/// Calls per round: a system call costs more than a function call.
const CALLS_KERNEL: u32 = 250;

/// The kprobe pair on one of [`KERNEL_CALIBRATION`], called by system calls of our own
/// (this process is a target for the measurement). System call -1 returns -ENOSYS without
/// calling anything and is the twin: the whole cost is how much the probes add to the gap
/// between the two, in-call cost the median of the durations the probes measured.
fn kernel_pair(
    ebpf: &mut Ebpf,
    records: &mut RingBuf<MapData>,
    links: &mut Links,
) -> Result<(PairCost, u64), ProbeError> {
    let run = |nr: libc::c_long| {
        time(CALLS_KERNEL, || {
            // SAFETY: an unused system call number, getppid, or -1: the kernel returns
            // -ENOSYS or the parent's pid and touches nothing of ours.
            black_box(unsafe { libc::syscall(nr) });
        })
    };
    let names = KERNEL_CALIBRATION.map(|(name, _)| name);
    let function = kernel::first_probeable(&names)?;
    let nr = KERNEL_CALIBRATION
        .iter()
        .find(|(name, _)| *name == function.name)
        .map_or(-1, |&(_, nr)| nr);
    let gap = || run(nr).saturating_sub(run(-1));
    let bare: Vec<Duration> = (0..ROUNDS).map(|_| gap()).collect();
    let named = [(CALIBRATION_KERNEL, &function)];
    let own = std::process::id();
    tracepoints::add_target(ebpf, own)?;
    // No cost in the cookie: these calls charge nothing to anything.
    kernel::attach::attach(ebpf, &named, probe_cookie::pack(0, 0, 0, false), links)?;
    let mut durations = Vec::new();
    let mut probed = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        probed.push(gap());
        ring::drain(records, |item| {
            if let Item::Call(r, _) = item
                && r.boundary == CALIBRATION_KERNEL
            {
                durations.push(r.duration_ns);
            }
        });
    }
    tracepoints::remove_target(ebpf, own)?;
    durations.sort_unstable();
    let cost = PairCost {
        total_ns: per_call(median(probed).saturating_sub(median(bare)), CALLS_KERNEL),
        in_call_ns: durations.get(durations.len() / 2).copied().unwrap_or(0),
    };
    Ok((cost, durations.len() as u64))
}

fn measure_all(
    ebpf: &mut Ebpf,
    records: &mut RingBuf<MapData>,
    alloc: bool,
    links: &mut Vec<UProbeLink>,
    seen: &mut u64,
) -> Result<ProbeCosts, ProbeError> {
    let (emulated, n) = pair(
        ebpf,
        records,
        links,
        [xlperf_cal_pair_emulated, xlperf_cal_pair_emulated_twin],
        CALLS_EMULATED,
        CALIBRATION_BOUNDARY,
    )?;
    *seen += n;
    let (single_stepped, n) = pair(
        ebpf,
        records,
        links,
        [xlperf_cal_pair_stepped, xlperf_cal_pair_stepped_twin],
        CALLS_STEPPED,
        CALIBRATION_STEPPED,
    )?;
    *seen += n;
    let mut costs = ProbeCosts {
        pair: PerKind {
            emulated,
            single_stepped,
        },
        ..ProbeCosts::default()
    };
    if alloc {
        let emulated = allocator(
            ebpf,
            links,
            [xlperf_cal_alloc_emulated, xlperf_cal_alloc_emulated_twin],
            [xlperf_cal_free_emulated, xlperf_cal_free_emulated_twin],
            CALLS_EMULATED,
        )?;
        let stepped = allocator(
            ebpf,
            links,
            [xlperf_cal_alloc_stepped, xlperf_cal_alloc_stepped_twin],
            [xlperf_cal_free_stepped, xlperf_cal_free_stepped_twin],
            CALLS_STEPPED,
        )?;
        costs.alloc_pair_ns = PerKind {
            emulated: emulated.0,
            single_stepped: stepped.0,
        };
        costs.free_ns = PerKind {
            emulated: emulated.1,
            single_stepped: stepped.1,
        };
    }
    Ok(costs)
}

/// The FFI pair on `probed`: whole cost from timing it against its twin (the median of
/// the rounds' differences), in-call cost as
/// the median of the durations the probes themselves measured (the function's own body
/// is a few ns).
fn pair(
    ebpf: &mut Ebpf,
    records: &mut RingBuf<MapData>,
    links: &mut Vec<UProbeLink>,
    [probed, twin]: [PairFn; 2],
    calls: u32,
    boundary: u32,
) -> Result<(PairCost, u64), ProbeError> {
    let run = |function: PairFn| {
        time(calls, || {
            // SAFETY: the function only pushes/pops rbp or clears eax, and returns.
            unsafe { function() }
        })
    };
    let offset = own_file_offset(probed as *const () as usize as u64)?;
    // No cost in the cookie: these calls charge nothing to anything.
    let cookie = probe_cookie::pack(boundary, 0, 0, false);
    attach(ebpf, links, FFI_EXIT, &offset, cookie)?;
    attach(ebpf, links, FFI_ENTRY, &offset, cookie)?;
    let mut durations = Vec::new();
    let mut added = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let bare = run(twin);
        added.push(run(probed).saturating_sub(bare));
        ring::drain(records, |item| {
            if let Item::Call(r, _) = item
                && r.boundary == boundary
            {
                durations.push(r.duration_ns);
            }
        });
    }
    durations.sort_unstable();
    let in_call_ns = durations.get(durations.len() / 2).copied().unwrap_or(0);
    let cost = PairCost {
        total_ns: per_call(median(added), calls),
        in_call_ns,
    };
    Ok((cost, durations.len() as u64))
}

/// The allocator programs on a fake allocator and free: (pair, free) whole costs. All
/// four combinations of probed and twin functions are timed in each round.
fn allocator(
    ebpf: &mut Ebpf,
    links: &mut Vec<UProbeLink>,
    [alloc, alloc_twin]: [AllocFn; 2],
    [free, free_twin]: [FreeFn; 2],
    calls: u32,
) -> Result<(u64, u64), ProbeError> {
    // Distinct fake addresses, so the live map sees inserts and removals as for real
    // blocks; each is freed right after, leaving the map as it was.
    let run = |alloc: AllocFn, free: FreeFn| {
        time(calls, || {
            for block in [0x7e57_0000_0000u64, 0x7e57_0000_1000] {
                // SAFETY: both functions only move a register and return.
                unsafe { free(alloc(block)) };
            }
        })
    };
    let alloc_at = own_file_offset(alloc as *const () as usize as u64)?;
    let free_at = own_file_offset(free as *const () as usize as u64)?;
    let none = probe_cookie::pack(0, 0, 0, false);
    attach(ebpf, links, ALLOC_EXIT, &alloc_at, none)?;
    attach(ebpf, links, MALLOC_ENTRY, &alloc_at, none)?;
    attach(ebpf, links, FREE_ENTRY, &free_at, none)?;
    let (mut alloc_added, mut free_added) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let bare = run(alloc_twin, free_twin);
        let with_alloc = run(alloc, free_twin);
        let with_both = run(alloc, free);
        alloc_added.push(with_alloc.saturating_sub(bare));
        free_added.push(with_both.saturating_sub(with_alloc));
    }
    // Each run makes two calls of each function per iteration.
    Ok((
        per_call(median(alloc_added), 2 * calls),
        per_call(median(free_added), 2 * calls),
    ))
}

fn attach(
    ebpf: &mut Ebpf,
    links: &mut Vec<UProbeLink>,
    program: &'static str,
    (exe, offset): &(PathBuf, u64),
    cookie: u64,
) -> Result<(), ProbeError> {
    let probe = loader::uprobe(ebpf, program)?;
    let point = UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(*offset),
        cookie: Some(cookie),
    };
    let what = || format!("attaching {program} for calibration to {}", exe.display());
    let id = probe
        .attach(point, exe, UProbeScope::CallingProcess)
        .map_err(|source| ProbeError::Program {
            what: what(),
            source,
        })?;
    links.push(probe.take_link(id).map_err(|source| ProbeError::Program {
        what: what(),
        source,
    })?);
    Ok(())
}

fn time(n: u32, mut call: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        call();
        black_box(());
    }
    start.elapsed()
}

/// The middle of the rounds' figures: a typical round, neither the luckiest (the minimum
/// would understate what probes cost among a real program's cache misses) nor one that
/// another process interrupted.
fn median(mut rounds: Vec<Duration>) -> Duration {
    rounds.sort_unstable();
    rounds.get(rounds.len() / 2).copied().unwrap_or_default()
}

fn per_call(added: Duration, calls: u32) -> u64 {
    u64::try_from(added.as_nanos() / u128::from(calls.max(1))).unwrap_or(u64::MAX)
}

/// The executable file and file offset of one of our own functions, from our maps.
fn own_file_offset(addr: u64) -> Result<(PathBuf, u64), ProbeError> {
    let maps = crate::probe::proc::maps::read(std::process::id())?;
    maps.iter()
        .find(|m| m.contains(addr))
        .and_then(|m| Some((PathBuf::from(m.path.as_ref()?), addr - m.start + m.offset)))
        .ok_or_else(|| ProbeError::Read {
            path: "/proc/self/maps".into(),
            source: std::io::Error::other("the calibration function is not in a file mapping"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProbeSite;

    #[test]
    fn cookies_carry_the_cost_of_their_site() {
        let costs = ProbeCosts {
            pair: PerKind {
                emulated: PairCost {
                    total_ns: 700,
                    in_call_ns: 300,
                },
                single_stepped: PairCost {
                    total_ns: 15_000,
                    in_call_ns: 14_000,
                },
            },
            alloc_pair_ns: PerKind {
                emulated: 900,
                single_stepped: 16_000,
            },
            free_ns: PerKind {
                emulated: 400,
                single_stepped: 9000,
            },
            kernel_pair: PairCost::default(),
        };
        let stepped = ProbeSite {
            offset: 0,
            emulated: false,
        };
        let cookie = costs.pair_cookie(7, stepped);
        assert_eq!(probe_cookie::boundary(cookie), 7);
        assert_eq!(probe_cookie::in_call_ns(cookie), 14_000);
        assert_eq!(probe_cookie::total_ns(cookie), 15_000);
        let emulated = ProbeSite {
            offset: 4,
            emulated: true,
        };
        assert_eq!(
            probe_cookie::total_ns(costs.alloc_cookie(emulated, false)),
            900
        );
        assert_eq!(
            probe_cookie::total_ns(costs.alloc_cookie(stepped, true)),
            9000
        );
        // Saturates rather than wrapping into the boundary bits.
        let huge = probe_cookie::pack(3, 1 << 40, 1 << 40, false);
        assert_eq!(probe_cookie::boundary(huge), 3);
        assert_eq!(probe_cookie::total_ns(huge), 0xffff);
        assert_eq!(probe_cookie::in_call_ns(huge), 0x7fff);
        assert!(!probe_cookie::stepped(huge));
        assert!(probe_cookie::stepped(cookie));
    }
}
