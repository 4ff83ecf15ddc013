//! FFI boundary tracing: one record per completed call, per-thread stacks of active calls.

/// Deepest nesting of traced calls kept per thread. Deeper calls are counted in
/// [`Counters::depth_overflow`] and not timed: a bounded stack keeps the verifier happy and
/// the per-thread state small.
pub const MAX_DEPTH: usize = 16;

/// Boundary id meaning "no boundary" (the parent of an outermost call).
pub const NO_BOUNDARY: u32 = 0;

/// Boundary id used by the probe-cost calibration on an emulated site; never shown to the
/// user.
pub const CALIBRATION_BOUNDARY: u32 = u32::MAX;

/// The same on a single-stepped site (`NIF_DISPATCH_*` take `u32::MAX - 1` and `- 2`).
pub const CALIBRATION_STEPPED: u32 = u32::MAX - 3;

/// The same for the kernel-function pair (`--kfunc`).
pub const CALIBRATION_KERNEL: u32 = u32::MAX - 4;

/// Is `boundary` one of the calibration's own?
#[must_use]
pub const fn is_calibration(boundary: u32) -> bool {
    boundary == CALIBRATION_BOUNDARY
        || boundary == CALIBRATION_STEPPED
        || boundary == CALIBRATION_KERNEL
}

/// What a probe's attach cookie carries besides its boundary: the cost of one of its
/// hits, measured by userspace at start for the kind of site it sits on. Return (and
/// entry-only) programs read it to charge probe time to the calls it lands inside, so
/// that durations can be reported without it. Time is kept in two buckets, by the kind of
/// site that cost it, so that the summary can say how much single-stepping cost.
///
/// Bits 0..32: the boundary id. Bits 32..47: ns of this probe pair's cost that fall inside
/// the call's own measured duration (between its two timestamps), saturating at 32 767.
/// Bits 47..63: ns the whole hit adds to the thread, saturating at 65 535. Bit 63: the
/// probed instruction is single-stepped.
pub mod probe_cookie {
    pub const IN_CALL_MAX: u64 = 0x7fff;
    pub const TOTAL_MAX: u64 = 0xffff;
    const STEPPED: u64 = 1 << 63;

    #[must_use]
    pub const fn pack(boundary: u32, in_call_ns: u64, total_ns: u64, stepped: bool) -> u64 {
        let in_call = if in_call_ns > IN_CALL_MAX {
            IN_CALL_MAX
        } else {
            in_call_ns
        };
        let total = if total_ns > TOTAL_MAX {
            TOTAL_MAX
        } else {
            total_ns
        };
        let kind = if stepped { STEPPED } else { 0 };
        boundary as u64 | in_call << 32 | total << 47 | kind
    }

    #[must_use]
    pub const fn boundary(cookie: u64) -> u32 {
        cookie as u32
    }

    #[must_use]
    pub const fn in_call_ns(cookie: u64) -> u64 {
        (cookie >> 32) & IN_CALL_MAX
    }

    #[must_use]
    pub const fn total_ns(cookie: u64) -> u64 {
        (cookie >> 47) & TOTAL_MAX
    }

    #[must_use]
    pub const fn stepped(cookie: u64) -> bool {
        cookie & STEPPED != 0
    }
}

/// Probe time in two buckets: hits at emulated sites, hits at single-stepped ones (ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeTime {
    pub emulated_ns: u64,
    pub stepped_ns: u64,
}

impl ProbeTime {
    /// Adds `ns` to the bucket of the kind of site `cookie` names.
    #[inline(always)]
    pub fn add(&mut self, cookie: u64, ns: u64) {
        if probe_cookie::stepped(cookie) {
            self.stepped_ns += ns;
        } else {
            self.emulated_ns += ns;
        }
    }

    #[inline(always)]
    pub fn add_all(&mut self, other: &Self) {
        self.emulated_ns += other.emulated_ns;
        self.stepped_ns += other.stepped_ns;
    }

    #[must_use]
    pub const fn sum(&self) -> u64 {
        self.emulated_ns.saturating_add(self.stepped_ns)
    }
}

/// One completed call of a traced function, emitted by the return probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRecord {
    /// `CLOCK_MONOTONIC` time of the entry probe, ns.
    pub start_ns: u64,
    /// Inclusive wall time of the call, ns.
    pub duration_ns: u64,
    /// The function called, for probes that learn it at run time (the NIF dispatch
    /// probes: the NIF's address); 0 when `boundary` alone names it.
    pub target: u64,
    /// Boundary id (the uprobe's attach cookie), assigned by userspace.
    pub boundary: u32,
    /// Boundary of the enclosing traced call on the same thread, or [`NO_BOUNDARY`].
    pub parent: u32,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Nesting level of this call among traced calls on its thread; 1 = outermost.
    pub depth: u32,
    /// What kind of thread made the call (`crate::thread_kind`); only NIF probes classify.
    pub thread: u32,
    /// Probe time inside `duration_ns`, as calibrated at attach time: this call's own
    /// in-call probe cost plus the whole cost of every probe hit nested in it (traced
    /// calls, allocator probes).
    pub probe: ProbeTime,
}

impl CallRecord {
    /// The call's duration without the probe time inside it, at the costs calibrated at
    /// start.
    #[must_use]
    pub const fn corrected_ns(&self) -> u64 {
        self.duration_ns.saturating_sub(self.probe.sum())
    }
}

/// One active call on a thread's stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame {
    pub start_ns: u64,
    pub target: u64,
    pub boundary: u32,
    pub thread: u32,
    /// Whether `cost` holds figures; it is garbage until then, so that entering a call
    /// does not pay for zeroing it.
    pub costed: u32,
    /// Non-zero for a kernel function's frame (`--kfunc`): its return probe knows no
    /// boundary and pops the innermost such frame, and allocations and scheduling are
    /// charged to the crossing below it.
    pub kernel: u32,
    /// Whole cost of the probe hits nested in this call so far (see `probe_cookie`).
    pub nested: ProbeTime,
    pub cost: crate::Cost,
}

/// Per-thread stack of active traced calls, kept in a BPF hash map keyed by tid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallStack {
    /// Number of valid entries in `frames`.
    pub depth: u32,
    /// Calls entered while the stack was full and not yet returned; their returns must
    /// not pop real frames.
    pub overflow: u32,
    pub frames: [Frame; MAX_DEPTH],
    pub thread: crate::ThreadState,
}

/// Loss and consistency counters, one slot per CPU, summed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records that could not be reserved in the ring buffer (consumer too slow).
    pub dropped: u64,
    /// Calls not timed because the thread's stack already held [`MAX_DEPTH`] calls.
    pub depth_overflow: u64,
    /// Returns with no matching entry (the call began before the probes were attached).
    pub unmatched_return: u64,
    /// Entries abandoned without a return (longjmp, exceptions unwinding through C).
    pub abandoned: u64,
    /// Threads whose stack could not be stored (stack map full).
    pub stack_map_full: u64,
    /// System calls not counted because the syscall map was full.
    pub syscall_map_full: u64,
}

impl Counters {
    /// Applies `f` field by field: summing CPUs, or subtracting an earlier snapshot.
    #[must_use]
    pub fn zip_with(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            dropped: f(self.dropped, other.dropped),
            depth_overflow: f(self.depth_overflow, other.depth_overflow),
            unmatched_return: f(self.unmatched_return, other.unmatched_return),
            abandoned: f(self.abandoned, other.abandoned),
            stack_map_full: f(self.stack_map_full, other.stack_map_full),
            syscall_map_full: f(self.syscall_map_full, other.syscall_map_full),
        }
    }
}

/// Index of the single slot of the per-CPU counters array.
pub const COUNTERS_SLOT: u32 = 0;

#[cfg(feature = "user")]
mod user {
    use super::{CallRecord, Counters};

    // SAFETY: CallRecord is #[repr(C)], Copy, made only of integers, with explicit padding
    // fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for CallRecord {}
    // SAFETY: as above, Counters is #[repr(C)] with only u64 fields.
    unsafe impl aya::Pod for Counters {}
    // SAFETY: CallStack is #[repr(C)], Copy, made of integers only with explicit padding
    // (see the size assertions below).
    unsafe impl aya::Pod for super::CallStack {}
}

const _: () = assert!(core::mem::size_of::<CallRecord>() == 64);
const _: () = assert!(core::mem::size_of::<Frame>() == 48 + 96);
const _: () = assert!(
    core::mem::size_of::<CallStack>()
        == 8 + 144 * MAX_DEPTH + core::mem::size_of::<crate::ThreadState>()
);
const _: () = assert!(core::mem::size_of::<Counters>() == 48);
