//! The event model every layer shares: a recording as data (what `record -o` writes and
//! `report` reads back, and what every export is made from), the boundaries and NIFs it
//! names, how it was made (probe sites and their costs) and what only its end knows.
//! It depends on nothing of xlperf's but the kernel-side types: the probe layer fills it,
//! the file format, the summary, the exporters and the Prometheus exposition read it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xlperf_common::{CallRecord, Cost, OffCpuRecord};

use xlperf_common::probe_cookie;

/// One recording, complete or cut short.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub meta: Meta,
    /// Process names by pid.
    pub processes: BTreeMap<u32, String>,
    /// Thread names by tid (with their process).
    pub threads: BTreeMap<u32, ThreadInfo>,
    /// What each boundary id in the records stands for.
    pub boundaries: BTreeMap<u32, BoundaryInfo>,
    /// Completed calls in the order they returned, NIF calls already named (their
    /// `boundary` is the NIF's own id, not the dispatch probe's).
    pub calls: Vec<CallEvent>,
    /// Off-CPU periods of target threads (`--sched`), in the order they ended.
    pub off_cpu: Vec<OffCpuRecord>,
    /// What only the end of a recording knows; None when the file was cut short.
    pub end: Option<End>,
    /// The file ended before its last complete chunk or before its end chunk.
    pub truncated: bool,
}

/// A completed call and what was charged to it (None: nothing, or not traced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallEvent {
    pub record: CallRecord,
    pub cost: Option<Cost>,
}

/// How the recording was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// xlperf's version (Cargo package version).
    pub xlperf_version: String,
    /// Wall-clock time of the start, ns since the Unix epoch.
    pub started_unix_ns: u64,
    /// `CLOCK_MONOTONIC` at the start, ns: the clock of every record's timestamps.
    pub started_monotonic_ns: u64,
    /// The command line xlperf was run with.
    pub argv: Vec<String>,
    pub alloc: bool,
    pub sched: bool,
    pub kmem: bool,
    /// `--syscalls`.
    #[serde(default)]
    pub syscalls: bool,
    /// Measured cost of one probe pair on the recording host, ns (at an emulated site).
    pub probe_cost_ns: u64,
    /// What each kind of probe costs on the recording host, measured at its start.
    pub probe_costs: ProbeCosts,
    /// `--long-nif`, ns.
    pub long_call_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadInfo {
    pub pid: u32,
    pub comm: String,
}

/// A traced function (or NIF), as the summary names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundaryInfo {
    /// File name of the library or executable (`libz.so.1`, `crypto.so`, `beam.smp`).
    pub library: String,
    pub library_path: String,
    /// Function name, or the Erlang/Elixir name of a NIF (`crypto:hash_nif/2`).
    pub function: String,
    /// `ffi`, `beam` or `kernel`.
    pub runtime: String,
    pub probe_offset: u64,
    pub probe_emulated: bool,
    /// For a NIF: its module, arity and dirty kind.
    pub nif: Option<NifInfo>,
    /// For a kernel function (`--kfunc`) called inside a crossing: that crossing's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NifInfo {
    /// The module atom (`crypto`, `Elixir.MyApp.Native`).
    pub module: String,
    pub arity: u32,
    /// `cpu` or `io` for a NIF declared dirty.
    pub dirty: Option<String>,
}

/// The end of a recording: what the kernel and xlperf knew when it stopped, beyond the
/// records themselves. A report rebuilds every per-function figure from the records and
/// takes these as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub duration_ns: u64,
    pub target_exit_status: Option<i32>,
    pub dropped: u64,
    pub depth_overflow: u64,
    pub unmatched_returns: u64,
    pub abandoned: u64,
    pub malformed: u64,
    pub stack_map_full: u64,
    /// The summary's `nif` and `alloc` objects, as recorded.
    pub nif: Option<NifRecording>,
    pub alloc: Option<AllocRecording>,
    /// Each target thread's figures outside any crossing (`--alloc`, `--sched`).
    pub threads_outside: Vec<ThreadOutside>,
    /// Blocks still live at the end (`--alloc`), weighted when sampled.
    pub live: Vec<LiveEntry>,
    /// Time the uprobes added to the targets' threads: every hit the kernel counted, at
    /// the start-up cost of its kind of site, ns (emulated and single-stepped sites).
    pub probe_emulated_ns: u64,
    pub probe_stepped_ns: u64,
    /// Time the tracepoint programs (`--sched`, `--alloc`) ran, as the kernel's BPF
    /// statistics measured it, ns; None when those statistics were not available.
    pub tracepoint_ns: Option<u64>,
    /// `--ffi` libraries the targets never mapped: nothing could be traced in them.
    pub never_mapped: Vec<String>,
    /// System calls per process and crossing (`--syscalls`).
    #[serde(default)]
    pub syscalls: Vec<SyscallEntry>,
    /// System calls not counted because the syscall map was full.
    #[serde(default)]
    pub syscall_map_full: u64,
}

/// The calls of one system call that one process made inside one crossing
/// (`NO_BOUNDARY`: outside any), and their time in the kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyscallEntry {
    pub pid: u32,
    pub boundary: u32,
    /// The system call's number on x86-64.
    pub nr: u32,
    pub count: u64,
    pub total_ns: u64,
}

impl SyscallEntry {
    /// The system call's name (`write`), or `syscall_N` for a number this build does not
    /// know.
    pub fn name(&self) -> String {
        syscalls::Sysno::new(self.nr as usize)
            .map_or_else(|| format!("syscall_{}", self.nr), |s| s.name().to_owned())
    }
}

impl End {
    pub fn probe_time(&self) -> xlperf_common::ProbeTime {
        xlperf_common::ProbeTime {
            emulated_ns: self.probe_emulated_ns,
            stepped_ns: self.probe_stepped_ns,
        }
    }
}

/// A thread's figures while no traced crossing was active on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadOutside {
    pub tid: u32,
    pub pid: u32,
    #[serde(flatten)]
    pub cost: Cost,
    /// Frees of blocks allocated before the recording (or evicted from the live map).
    pub frees_untracked: u64,
}

/// A live block: its process, the crossing that allocated it, its (weighted) size and
/// when it was allocated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveEntry {
    pub pid: u32,
    pub boundary: u32,
    pub bytes: u64,
    pub ns: u64,
}

/// How allocations were traced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllocRecording {
    /// Most blocks tracked as live at once (`--alloc-live-max`).
    pub live_capacity: u32,
    /// `--alloc-sample`: one block tracked per this many bytes; `free_count`, `free_bytes`
    /// and `live_bytes` are then estimates (allocation counts and bytes stay exact).
    pub sample_bytes: Option<u64>,
    /// Blocks forgotten because the live map was full: their frees count as untracked and
    /// their bytes are missing from `live_bytes`.
    pub live_evicted: u64,
    /// Each allocator function probed and where.
    pub probes: Vec<AllocProbe>,
}

/// How NIF calls were caught, and what was seen but not reported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NifRecording {
    /// `dispatch` (probes on the VM's NIF call functions) or `fptr` (a probe pair on
    /// each NIF function).
    pub mode: String,
    /// Why dispatch mode was not used, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// The VM executable.
    pub vm: String,
    /// Calls on normal schedulers longer than this are `long_calls`.
    pub long_call_threshold_ns: u64,
    /// Calls of VM-internal functions through the dispatch probes (dirty-NIF trampolines
    /// and finalizers, NIFs built into the VM), not reported as NIFs.
    pub vm_internal_calls: u64,
    /// NIF calls whose process exited before they could be named.
    pub unresolved_calls: u64,
}

/// One allocator function probed, as reported in the summary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AllocProbe {
    pub library: String,
    pub function: String,
    /// Bytes into the function where the probe sits.
    pub offset: u64,
    /// Whether the kernel emulates the probed instruction (cheap) or single-steps it.
    pub emulated: bool,
}

/// Where a function's probes go, as an offset from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSite {
    pub offset: u64,
    /// The kernel emulates the probed instruction (cheap) rather than single-stepping it.
    pub emulated: bool,
}

/// What the kernel does at a probed instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    /// Emulated in the trap handler (push, jmp, call, jcc, nop): cheap.
    Emulated,
    /// Copied out of line and single-stepped: a second trap per hit.
    SingleStepped,
}

impl SiteKind {
    pub fn of(site: ProbeSite) -> Self {
        if site.emulated {
            Self::Emulated
        } else {
            Self::SingleStepped
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Emulated => "emulated",
            Self::SingleStepped => "single_stepped",
        }
    }
}

/// One figure per kind of site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerKind<T> {
    pub emulated: T,
    pub single_stepped: T,
}

impl<T: Copy> PerKind<T> {
    pub fn get(&self, kind: SiteKind) -> T {
        match kind {
            SiteKind::Emulated => self.emulated,
            SiteKind::SingleStepped => self.single_stepped,
        }
    }
}

/// The cost of an entry + return probe pair around a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCost {
    /// Wall time one traced call adds to the target, ns.
    pub total_ns: u64,
    /// The part of it inside the call's measured duration, ns.
    pub in_call_ns: u64,
}

/// What probes cost on this host, measured at start. Recorded in capture files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCosts {
    /// The FFI and NIF probe pair.
    pub pair: PerKind<PairCost>,
    /// An allocator's entry + return probes (malloc family), whole cost per call; zero
    /// when allocations were not traced.
    pub alloc_pair_ns: PerKind<u64>,
    /// The entry-only probe on free, whole cost per call.
    pub free_ns: PerKind<u64>,
    /// The kprobe pair on a kernel function (`--kfunc`); zero when none was traced.
    #[serde(default)]
    pub kernel_pair: PairCost,
}

impl ProbeCosts {
    /// The cookie of a boundary's probe pair at `site`.
    pub fn pair_cookie(&self, boundary: u32, site: ProbeSite) -> u64 {
        let kind = SiteKind::of(site);
        let cost = self.pair.get(kind);
        warn_if_clipped(cost.total_ns, cost.in_call_ns);
        probe_cookie::pack(
            boundary,
            cost.in_call_ns,
            cost.total_ns,
            kind == SiteKind::SingleStepped,
        )
    }

    /// The kprobe pair's cookie, without a boundary (the return program adds it).
    pub fn kernel_cookie(&self) -> u64 {
        let cost = self.kernel_pair;
        warn_if_clipped(cost.total_ns, cost.in_call_ns);
        probe_cookie::pack(0, cost.in_call_ns, cost.total_ns, false)
    }

    /// The cookie of an allocator probe: `entry_only` for free, else an exit probe of the
    /// malloc family (entry probes of the family carry no cost: the exit charges the pair).
    pub fn alloc_cookie(&self, site: ProbeSite, entry_only: bool) -> u64 {
        let kind = SiteKind::of(site);
        let total = if entry_only {
            self.free_ns.get(kind)
        } else {
            self.alloc_pair_ns.get(kind)
        };
        probe_cookie::pack(0, 0, total, kind == SiteKind::SingleStepped)
    }
}

/// Costs above what a cookie holds are clipped: say so once, as the figures that use
/// them are then low.
fn warn_if_clipped(total_ns: u64, in_call_ns: u64) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    if total_ns > probe_cookie::TOTAL_MAX || in_call_ns > probe_cookie::IN_CALL_MAX {
        WARNED.call_once(|| {
            log::warn!(
                "a probe costs {total_ns} ns here ({in_call_ns} ns inside the call), more than xlperf can carry per probe ({} and {} ns): durations and overhead will understate it",
                probe_cookie::TOTAL_MAX,
                probe_cookie::IN_CALL_MAX
            );
        });
    }
}
